"""The refinement's starting counts (`coding/refinement_counts.npy`): symbol frequencies per
context, measured on training photos refined over the default model's base picture.

    python -m vqcodec.train.refinement ../shared/data/images/bsds500/train OUT.npy

Session 12's file: every 7th BSDS500 training photo (29 of them), each at the refinement steps
72, 56, 40, 28, 20 and 14 over quality 3's picture of `vqimage-v3i`. The counts are part of the
format: a new file makes new streams, so it ships with a new format version only.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..coding import refinement
from ..io.image import load_image
from ..pipelines.image import compress_image, decompress_image
from ..zoo.registry import DEFAULT_IMAGE_MODEL, IMAGE_REFINEMENT_BASE, load_model

TRAINING_STEPS = (72.0, 56.0, 40.0, 28.0, 20.0, 14.0)


def symbol_histogram(paths: list[Path], *, model: str = DEFAULT_IMAGE_MODEL,
                     base_quality: int = IMAGE_REFINEMENT_BASE,
                     steps: tuple[float, ...] = TRAINING_STEPS) -> np.ndarray:
    """How often each symbol was coded in each context, over `paths` at every step.

    Args:
        paths: training photos.
        model: the image model whose pictures are refined.
        base_quality: its quality of the base picture.
        steps: refinement steps (8-bit levels).
    """
    loaded = load_model(model)
    histogram = np.zeros((refinement.NUM_CONTEXTS, refinement.LITERALS + 1), dtype=np.int64)
    # Symbols are counted, not coded: flat starting counts, so no shipped file is needed.
    flat = np.ones_like(histogram)
    for path in paths:
        image = load_image(path)
        picture = decompress_image(compress_image(image, model=loaded,
                                                  quality=base_quality).data, model=loaded)
        for step in steps:
            refinement.encode_refinement(image, picture, step, histogram=histogram, counts=flat)
    return histogram


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="training photos (BSDS500 train)")
    ap.add_argument("out", help="where to write the counts (.npy)")
    ap.add_argument("--every", type=int, default=7)
    ap.add_argument("--limit", type=int, default=30)
    args = ap.parse_args()
    paths = sorted(p for p in Path(args.folder).iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[::args.every][:args.limit]
    counts = refinement.initial_counts_from(symbol_histogram(paths))
    np.save(args.out, counts, allow_pickle=False)
    print(f"{len(paths)} photos -> {args.out}: {counts.shape}, row sums "
          f"{counts.sum(axis=1).min()}..{counts.sum(axis=1).max()}")


if __name__ == "__main__":
    main()
