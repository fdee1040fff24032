"""Seconds to compress and decompress Kodak images (the whole pipeline: transform, prior,
range coder, container) at 1 and 2 torch threads, at a few qualities.

    python benchmarks/image_speed.py [--model runs/vqimage-v3i.safetensors] \
        [--image ../shared/data/images/kodak/kodim23.png] [--qualities 1,6,12] [--threads 1,2]

--image is one image or a folder of them; with several, a summary line per threads and
quality gives the median and the largest over the images. Each number is the best of --repeat
runs (default 2), after one warm-up.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from vqcodec.coding import file_codec
from vqcodec.io.image import load_image
from vqcodec.io.media import IMAGE_SUFFIXES
from vqcodec.pipelines.image import compress_image, decompress_image
from vqcodec.zoo.registry import DEFAULT_IMAGE_MODEL, load_model

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared/data/images/kodak/kodim23.png"


def best(fn, repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, CPU seconds of that run, result) of `repeat` runs. CPU seconds sum
    over threads; on a shared machine they are the steadier number."""
    runs, out = [], None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        runs.append((time.perf_counter() - t, time.process_time() - c))
    wall, cpu = min(runs)
    return wall, cpu, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--image", default=str(DEFAULT_IMAGE))
    ap.add_argument("--qualities", default=None, help="default: lowest, default, highest")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    loaded = load_model(args.model)
    source = Path(args.image)
    paths = (sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
             if source.is_dir() else [source])
    images = {p.name: load_image(p) for p in paths}
    qualities = ([int(q) for q in args.qualities.split(",")] if args.qualities
                 else sorted({1, loaded.default_quality, loaded.num_qualities}))
    codec = file_codec(loaded.model)
    print(f"{loaded.name} ({type(codec).__name__}, portable={getattr(codec, 'portable', False)}), "
          f"{len(images)} image(s) from {source}")
    print("image | threads | quality | bpp | compress s (CPU s) | decompress s (CPU s)")
    first = next(iter(images.values()))
    compress_image(first, model=loaded, quality=qualities[0], device="cpu")  # warm-up
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for q in qualities:
            times = []
            for name, image in images.items():
                enc, enc_cpu, result = best(lambda: compress_image(
                    image, model=loaded, quality=q, device="cpu"), args.repeat)
                dec, dec_cpu, decoded = best(lambda: decompress_image(
                    result.data, model=loaded, device="cpu"), args.repeat)
                assert decoded.shape == image.shape
                times.append((enc, dec))
                print(f"{name} | {threads:7d} | {q:7d} | {result.bpp:.3f} | {enc:6.2f} "
                      f"({enc_cpu:5.2f}) | {dec:6.2f} ({dec_cpu:5.2f})", flush=True)
            if len(times) > 1:
                enc, dec = zip(*times)
                print(f"ALL {len(times)} | {threads:7d} | {q:7d} | median / max: compress "
                      f"{statistics.median(enc):.2f} / {max(enc):.2f} s, decompress "
                      f"{statistics.median(dec):.2f} / {max(dec):.2f} s", flush=True)

if __name__ == "__main__":
    main()
