"""Side-by-side crops at equal file size: original, vqcodec, WebP, AVIF.

For each vqcodec quality given, the image is compressed with the model; WebP and AVIF
(through Pillow; AVIF at its default speed 6) are then run at the quality setting whose file
is closest in size. The crops are enlarged 2x with nearest-neighbour sampling, so block edges
and ringing stay visible, and labelled with bytes, bpp and PSNR.

Usage:
    python benchmarks/visual_crops.py ../shared/data/images/kodak/kodim23.png \
        --qualities 3 7 --crop 360,40,200,160 --out docs/images/crops-kodim23.png
"""
from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import vqcodec
from vqcodec.io.image import as_rgb, load_image


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255 ** 2 / mse) if mse > 0 else float("inf")


def pil_roundtrip(array: np.ndarray, fmt: str, quality: int) -> tuple[bytes, np.ndarray]:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, quality=quality)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        return data, np.array(im.convert("RGB"))


def closest_in_size(array: np.ndarray, fmt: str, target: int) -> tuple[int, bytes, np.ndarray]:
    """(quality, bytes, decoded) of the `fmt` file closest to `target` bytes (quality 0..100;
    file size grows with quality, so a bisection finds the neighbours)."""
    lo, hi = 0, 100
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if len(pil_roundtrip(array, fmt, mid)[0]) <= target:
            lo = mid
        else:
            hi = mid
    options = [(q, *pil_roundtrip(array, fmt, q)) for q in (lo, hi)]
    return min(options, key=lambda o: abs(len(o[1]) - target))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image")
    ap.add_argument("--model", default=None, help="default: the shipped default image model")
    ap.add_argument("--qualities", type=int, nargs="+", required=True)
    ap.add_argument("--crop", required=True, help="x,y,width,height of the crop")
    ap.add_argument("--zoom", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    original = as_rgb(load_image(args.image))
    h, w = original.shape[:2]
    x0, y0, cw, ch = (int(v) for v in args.crop.split(","))

    def crop(a: np.ndarray) -> Image.Image:
        im = Image.fromarray(a[y0:y0 + ch, x0:x0 + cw])
        return im.resize((cw * args.zoom, ch * args.zoom), Image.NEAREST)

    label_h = 34
    rows = []
    for quality in args.qualities:
        data = vqcodec.compress(original, quality=quality, model=args.model)
        ours = vqcodec.decompress(data)
        cells = [("original", original, None)]
        cells.append((f"vqcodec q{quality}", ours, len(data)))
        for fmt in ("WEBP", "AVIF"):
            q, fdata, decoded = closest_in_size(original, fmt, len(data))
            cells.append((f"{fmt.lower()} q{q}", decoded, len(fdata)))
        rows.append(cells)
        print(f"q{quality}: " + "; ".join(
            f"{name} {size} B {8 * size / (w * h):.3f} bpp {psnr(a, original):.2f} dB"
            for name, a, size in cells if size is not None))

    cell_w, cell_h = cw * args.zoom, ch * args.zoom + label_h
    sheet = Image.new("RGB", (cell_w * 4, cell_h * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, cells in enumerate(rows):
        for c, (name, a, size) in enumerate(cells):
            sheet.paste(crop(a), (c * cell_w, r * cell_h + label_h))
            text = name if size is None else (
                f"{name}: {size} B, {8 * size / (w * h):.3f} bpp\n{psnr(a, original):.2f} dB")
            draw.multiline_text((c * cell_w + 4, r * cell_h + 2), text, fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
