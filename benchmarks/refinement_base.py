"""Which base picture and dead zone the refinement (format version 6) should use: every n-th
photo of a folder coded at a base quality of the model's ladder, its residual refined at a
range of steps, against WebP (Pillow) on the same photos; mean file bpp and PSNR per step, and
the BD-rate (PSNR-RGB) against WebP over the overlapping range.

    python benchmarks/refinement_base.py ../shared/data/images/bsds500/test --every 16
        --limit 12 [--bases 3,6,12] [--dead-zones 0.25,0.35,0.45] [--steps 48,36,28,20,14]
        [--rd-weights 0,0.12]

Session 11 chose the shipped settings with this on 12 BSDS500 test photos (not Kodak).
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

from vqcodec.coding import refinement
from vqcodec.eval.bd_rate import bd_rate
from vqcodec.io.image import as_rgb, load_image
from vqcodec.pipelines.image import compress_image, decompress_image
from vqcodec.zoo.registry import DEFAULT_IMAGE_MODEL, load_model

WEBP_QUALITIES = (10, 30, 50, 70, 80, 90)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / ((a.astype(np.float64) - b) ** 2).mean()))


def _webp(image: np.ndarray, quality: int) -> tuple[int, np.ndarray]:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="WEBP", quality=quality)
    return buf.tell(), as_rgb(np.asarray(Image.open(io.BytesIO(buf.getvalue()))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--every", type=int, default=16, help="every n-th photo (sorted by name)")
    ap.add_argument("--limit", type=int, default=12, help="at most this many photos")
    ap.add_argument("--bases", default="3,6,12")
    ap.add_argument("--dead-zones", default=str(refinement.DEAD_ZONE))
    ap.add_argument("--steps", default="48,36,28,20,14")
    ap.add_argument("--rd-weights", default=str(refinement.RD_WEIGHT),
                    help="the encoder's rate weight of its magnitude choice (0: none)")
    args = ap.parse_args()
    loaded = load_model(args.model)
    paths = sorted(p for p in Path(args.folder).iterdir()
                   if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[::args.every][:args.limit]
    images = [as_rgb(load_image(p)) for p in paths]
    steps = [float(s) for s in args.steps.split(",")]
    webp = np.array([np.mean([(8 * _webp(x, q)[0] / x[..., 0].size, _psnr(_webp(x, q)[1], x))
                              for x in images], axis=0) for q in WEBP_QUALITIES])
    print(f"{len(images)} photos; WebP q{WEBP_QUALITIES}: "
          + " ".join(f"{b:.3f}/{p:.2f}" for b, p in webp))
    for base_q in (int(q) for q in args.bases.split(",")):
        bases = []
        for x in images:
            data = compress_image(x, model=loaded, quality=base_q).data
            bases.append((len(data), decompress_image(data, model=loaded)))
        for dead_zone, rd_weight in ((float(d), float(w)) for d in args.dead_zones.split(",")
                                     for w in args.rd_weights.split(",")):
            refinement.DEAD_ZONE = dead_zone  # the quantizer reads it when called
            refinement.RD_WEIGHT = rd_weight
            curve = []
            for step in steps:
                rates, psnrs = [], []
                for x, (size, base) in zip(images, bases):
                    stream, _, out = refinement.encode_refinement(x, base, step)
                    # + 8: the refinement chunk's length and CRC (its header byte is extra too)
                    rates.append(8 * (size + len(stream) + 9) / x[..., 0].size)
                    psnrs.append(_psnr(out, x))
                curve.append((np.mean(rates), np.mean(psnrs)))
            c = np.array(curve)[np.argsort([p for _, p in curve])]
            bd = bd_rate(webp[:, 0], webp[:, 1], c[:, 0], c[:, 1])
            print(f"base q{base_q} dead zone {dead_zone} rd weight {rd_weight}: BD-rate vs WebP "
                  f"{'n/a' if bd is None else f'{bd:+.2f} %'}; "
                  + " ".join(f"{b:.3f}/{p:.2f}" for b, p in c), flush=True)


if __name__ == "__main__":
    main()
