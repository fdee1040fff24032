"""File size of one image model against another on the same photos and qualities: what a
second prior for a shipped model (for example `vqimage-v3i-fast`, its width-64 prior) costs.
The two models share the transform and quantizer, so the indices and pictures are the same
and only the bits differ.

    python benchmarks/prior_rate_cost.py PHOTOS_DIR [--every 16] [--qualities 1,3,6,9,12]
        [--model vqimage-v3i-fast] [--against vqimage-v3i]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vqcodec.io.image import load_image
from vqcodec.train.data import media_files
from vqcodec.pipelines.image import compress_image
from vqcodec.zoo.registry import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos")
    ap.add_argument("--every", type=int, default=16)
    ap.add_argument("--qualities", default="1,3,6,9,12")
    ap.add_argument("--model", default="vqimage-v3i-fast")
    ap.add_argument("--against", default="vqimage-v3i")
    args = ap.parse_args()
    photos = [Path(p) for p in media_files([args.photos], "image")][::args.every]
    model, against = load_model(args.model), load_model(args.against)
    print(f"{len(photos)} photos; bytes of {model.name} against {against.name}")
    for q in (int(q) for q in args.qualities.split(",")):
        sizes = np.array([[len(compress_image(load_image(p), model=m, quality=q,
                                              device="cpu").data) for m in (model, against)]
                          for p in photos], dtype=float)
        ratio = sizes[:, 0].sum() / sizes[:, 1].sum() - 1
        print(f"quality {q}: {100 * ratio:+.2f} % in all (per photo {100 * (sizes[:, 0] / sizes[:, 1] - 1).min():+.2f} "
              f"to {100 * (sizes[:, 0] / sizes[:, 1] - 1).max():+.2f} %)", flush=True)


if __name__ == "__main__":
    main()
