"""Time and peak memory of the CLI on large photos: `vqcodec compress` and `vqcodec decompress`
of one photo per size (start-up included), each in its own process (its peak resident set
from os.wait4), and the time per Mpixel.

    python benchmarks/large_image.py [--sides 640,2048,4096,8192] [--out /tmp/vqcodec-large]
        [--rate-cost] [--seams]

The photos are mosaics of the validation photos ../shared/data/images/wikipedia/04*.jpg at
their own scale (real photographic detail, not an upscale), written to --out (not the repo).
--rate-cost: the photo of the first --sides size (use --sides 2048) coded in tiles of 32, of
64 (the default) and untiled (slow). --seams: that photo's banded decode against the
whole-image decode (max pixel difference), and the PSNR of the rows at band and tile borders
against the other rows.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = sorted((Path(__file__).resolve().parents[2] / "shared/data/images/wikipedia").glob("04*.jpg"))
CLI = str(Path(sys.executable).parent / "vqcodec")


def make_photo(side: int, path: Path) -> Path:
    """A side x side mosaic of the validation photos (tiled row by row), saved as PNG."""
    if path.exists():
        return path
    canvas = Image.new("RGB", (side, side))
    x = y = row_height = i = 0
    while y < side:
        with Image.open(PHOTOS[i % len(PHOTOS)]) as im:
            canvas.paste(im.convert("RGB"), (x, y))
            row_height = max(row_height, im.height)
            x += im.width
        i += 1
        if x >= side:
            x, y, row_height = 0, y + row_height, 0
    canvas.save(path)
    return path


def run(args: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds (user + system), peak RSS in GiB) of one command in its own
    process. On a shared machine CPU seconds are the steadier number."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.read().decode().strip()}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2 ** 20  # KiB on Linux


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255 ** 2 / mse) if mse else math.inf


def rate_cost(photo: Path) -> None:
    """Bits per pixel of the photo coded in tiles (the default) and untiled."""
    from vqcodec.io.image import load_image
    from vqcodec.pipelines.image import IMAGE_TILE, compress_image
    from vqcodec.zoo.registry import load_model
    loaded, image = load_model("vqimage-v3i"), load_image(photo)
    for tile in (IMAGE_TILE // 2, IMAGE_TILE, 10 ** 4):
        r = compress_image(image, model=loaded, device="cpu", tile=min(tile, 65535))
        label = f"tiles of {tile}" if tile < 10 ** 4 else "untiled"
        print(f"{photo.name} {label}: {len(r.data)} bytes, {r.bpp:.4f} bpp, {r.seconds:.1f} s",
              flush=True)


def seams(photo: Path) -> None:
    """Banded against whole-image decoding, and PSNR at band/tile borders against elsewhere."""
    import torch
    from vqcodec.io.image import load_image
    from vqcodec.pipelines.image import IMAGE_TILE, image_to_indices, indices_to_image
    from vqcodec.zoo.registry import load_model
    loaded, image = load_model("vqimage-v3i"), load_image(photo)
    net, cpu = loaded.model, torch.device("cpu")
    stride = net.config.stride
    stages, lam = loaded.rate_for_quality(loaded.default_quality)
    indices = image_to_indices(net, image, stages, lam, cpu)
    h, w = image.shape[:2]
    whole = indices_to_image(net, indices, 3, h, w, cpu, band_rows=indices.shape[-2])
    for band_rows in (8, 16):
        banded = indices_to_image(net, indices, 3, h, w, cpu, band_rows=band_rows)
        diff = np.abs(banded.astype(int) - whole.astype(int))
        border = np.zeros(h, bool)
        for r in range(band_rows * stride, h, band_rows * stride):
            border[r - 8:r + 8] = True  # the 8 pixel rows on each side of a band border
        print(f"bands of {band_rows} latent rows: max |banded - whole| = {diff.max()} levels "
              f"({np.count_nonzero(diff)} of {diff.size} values differ); PSNR vs the photo: "
              f"rows at band borders {psnr(banded[border], image[border]):.3f} dB, other rows "
              f"{psnr(banded[~border], image[~border]):.3f} dB; whole decode at the same rows "
              f"{psnr(whole[border], image[border]):.3f} dB", flush=True)
    border = np.zeros((h, w), bool)
    t = IMAGE_TILE * stride
    for r in range(t, h, t):
        border[r - 8:r + 8] = True
    for c in range(t, w, t):
        border[:, c - 8:c + 8] = True
    if border.any():  # (a photo of at most one tile has none)
        print(f"tile borders ({IMAGE_TILE} latent positions): PSNR "
              f"{psnr(whole[border], image[border]):.3f} dB within 8 px of them, "
              f"{psnr(whole[~border], image[~border]):.3f} dB elsewhere")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", default="640,2048,4096,8192")
    ap.add_argument("--out", default="/tmp/vqcodec-large")
    ap.add_argument("--rate-cost", action="store_true")
    ap.add_argument("--seams", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.rate_cost or args.seams:
        side = int(args.sides.split(",")[0])
        photo = make_photo(side, out / f"photo-{side}.png")
        if args.seams:
            seams(photo)
        if args.rate_cost:
            rate_cost(photo)
        return
    print("| size | Mpixel | bpp | compress s (CPU s) | peak GiB | decompress s (CPU s) | peak GiB "
          "| s/Mpixel (compress, decompress) |")
    print("|---|---|---|---|---|---|---|---|")
    for side in (int(s) for s in args.sides.split(",")):
        photo = make_photo(side, out / f"photo-{side}.png")
        vqc, png = out / f"photo-{side}.vqc", out / f"photo-{side}-decoded.png"
        c_s, c_cpu, c_gib = run([CLI, "compress", str(photo), str(vqc), "--device", "cpu"])
        d_s, d_cpu, d_gib = run([CLI, "decompress", str(vqc), str(png), "--device", "cpu"])
        mpix = side * side / 1e6
        bpp = 8 * vqc.stat().st_size / (side * side)
        print(f"| {side}x{side} | {mpix:.1f} | {bpp:.4f} | {c_s:.1f} ({c_cpu:.1f}) | {c_gib:.2f} "
              f"| {d_s:.1f} ({d_cpu:.1f}) | {d_gib:.2f} | {c_s / mpix:.2f}, {d_s / mpix:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
