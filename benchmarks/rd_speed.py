"""How long an RD curve takes: `vqcodec rd-curve` (batched NLL), `rd-curve --actual`, and the
naive loop (compress_image + decompress_image of every image at every quality, then metrics).

    python benchmarks/rd_speed.py ../shared/data/images/kodak --model vqimage-v1 --device cuda

Each variant measures the same images and qualities, without baselines or plots (their cost
does not depend on the model). Model loading and one warm-up round trip happen before timing.
Prints seconds per variant and the speed-up of the batched path.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import torch

from vqcodec.cli.rd_curve import rd_curve
from vqcodec.eval.items import NamedImage, load_items
from vqcodec.eval.metrics import image_distortion, image_levels
from vqcodec.device import resolve_device
from vqcodec.pipelines.image import compress_image, decompress_image
from vqcodec.zoo.registry import DEFAULT_IMAGE_MODEL, load_model


def run_cli(args: list[str]) -> float:
    """Seconds for one in-process `vqcodec rd-curve` run (its output swallowed)."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            rd_curve.main(args, standalone_mode=False)
        except SystemExit as e:  # user_errors exits on a failure
            if e.code:
                raise RuntimeError(f"rd-curve {' '.join(args)} failed (exit {e.code})") from None
    return time.perf_counter() - start


def naive_loop(loaded, images: list[NamedImage], qualities: list[int], device: str) -> float:
    """Seconds to compress, decompress and score every image at every quality, one by one."""
    dev = torch.device(device)
    start = time.perf_counter()
    for q in qualities:
        for im in images:
            res = compress_image(im.array, model=loaded, quality=q, device=device)
            out = decompress_image(res.data, model=loaded, device=device)
            image_distortion(image_levels(im.array, dev)[None], image_levels(out, dev)[None])
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--qualities", default=None, help="comma list (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--skip-actual", action="store_true")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--json", default=None, help="also write the timings to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))
    loaded = load_model(args.model, device=device)
    qualities = ([int(q) for q in args.qualities.split(",")] if args.qualities
                 else list(range(1, loaded.num_qualities + 1)))
    images, _ = load_items(args.folder, "image")
    # Warm-up: cuDNN autotuning, allocator, lazy imports.
    res = compress_image(images[0].array[:64, :64], model=loaded, quality=qualities[0],
                         device=device)
    decompress_image(res.data, model=loaded, device=device)

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        common = [args.folder, "--model", args.model, "--device", args.device, "--batch-size",
                  str(args.batch_size), "--qualities", ",".join(map(str, qualities)),
                  "--baselines", "none", "--no-plots"]
        timings["rd-curve"] = run_cli(common + ["--out", str(Path(tmp) / "nll")])
        if not args.skip_actual:
            timings["rd-curve --actual"] = run_cli(common + ["--actual", "--out",
                                                            str(Path(tmp) / "actual")])
    if not args.skip_naive:
        timings["naive loop"] = naive_loop(loaded, images, qualities, device)

    n = len(images) * len(qualities)
    print(f"{loaded.name} on {args.folder}: {len(images)} images x {len(qualities)} qualities "
          f"= {n} rate points, device {device}, batch size {args.batch_size}, "
          f"{torch.get_num_threads()} CPU threads")
    for name, seconds in timings.items():
        print(f"  {name:<20} {seconds:9.2f} s  ({seconds / n:.3f} s per image and quality)")
    base = timings["rd-curve"]
    for name, seconds in timings.items():
        if name != "rd-curve":
            print(f"  {name} / rd-curve = {seconds / base:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": loaded.name, "device": device,
                                               "images": len(images), "qualities": qualities,
                                               "seconds": timings}, indent=2) + "\n")


if __name__ == "__main__":
    main()
