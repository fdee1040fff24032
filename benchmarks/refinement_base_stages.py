"""How many stages the refined qualities' base picture needs: every n-th photo of a folder
coded at refined qualities with the base limited to S stages (of `IMAGE_REFINEMENT_BASE`'s
setting), real files; mean file bpp, PSNR and decode seconds per quality, and the BD-rate
(PSNR-RGB) of each S against the largest.

    python benchmarks/refinement_base_stages.py ../shared/data/images/bsds500/test --every 16
        [--limit 13] [--stages 6,4,3,2,1] [--qualities 10,13,15,17,19]

Session 16 chose `IMAGE_REFINEMENT_BASE_STAGES` = 3 with this (BSDS500 test, then val with
--every 8).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from vqcodec.eval.bd_rate import bd_rate
from vqcodec.io.image import as_rgb, load_image
from vqcodec.io.media import list_media
from vqcodec.pipelines.image import compress_image, decompress_image
from vqcodec.zoo import registry
from vqcodec.zoo.registry import DEFAULT_IMAGE_MODEL, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--every", type=int, default=16, help="every n-th photo (sorted by name)")
    ap.add_argument("--limit", type=int, default=13, help="at most this many photos")
    ap.add_argument("--stages", default="6,4,3,2,1")
    ap.add_argument("--qualities", default="10,13,15,17,19")
    args = ap.parse_args()
    loaded = load_model(args.model)
    images = [as_rgb(load_image(p))
              for p in list_media(args.folder, "image")[::args.every][:args.limit]]
    qualities = [int(q) for q in args.qualities.split(",")]
    shipped = registry.IMAGE_REFINEMENT_BASE_STAGES
    curves = {}
    try:
        for stages in sorted({int(s) for s in args.stages.split(",")}, reverse=True):
            registry.IMAGE_REFINEMENT_BASE_STAGES = stages
            points = []
            for q in qualities:
                bpp, psnr, seconds = [], [], []
                for image in images:
                    data = compress_image(image, model=loaded, quality=q, device="cpu")
                    start = time.perf_counter()
                    out = decompress_image(data.data, model=loaded, device="cpu")
                    seconds.append(time.perf_counter() - start)
                    mse = ((out.astype(np.float64) - image) ** 2).mean()
                    bpp.append(data.bpp)
                    psnr.append(10 * np.log10(255 ** 2 / mse))
                points.append((float(np.mean(bpp)), float(np.mean(psnr))))
                print(f"stages {stages} quality {q}: {points[-1][0]:.4f} bpp, "
                      f"{points[-1][1]:.3f} dB, decode {np.mean(seconds):.3f} s", flush=True)
            curves[stages] = points
    finally:
        registry.IMAGE_REFINEMENT_BASE_STAGES = shipped
    most = max(curves)
    anchor = curves[most]
    for stages, points in curves.items():
        if stages != most:
            rate = bd_rate([p[0] for p in anchor], [p[1] for p in anchor],
                           [p[0] for p in points], [p[1] for p in points])
            print(f"stages {stages}: BD-rate against {most} stages {rate:+.2f} %")


if __name__ == "__main__":
    main()
