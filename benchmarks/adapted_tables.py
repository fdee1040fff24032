"""What adapted tables buy in real files: images compressed at each quality with the default
(every pass adapted with its cheapest weight, format version 5) and with `adapt=False`; the
file sizes, and each round's bits both ways (the exact teacher-forced NLL, each image one
window, as `rd-curve` scores them).

    python benchmarks/adapted_tables.py ../shared/data/images/kodak [--every 2]
        [--qualities 1,2,3,4,6,9,12] [--model vqimage-v3i]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vqcodec.coding import file_codec
from vqcodec.io.image import load_image
from vqcodec.pipelines.image import (IMAGE_CONTEXT_STAGES, compress_image, image_to_indices)
from vqcodec.zoo.registry import DEFAULT_IMAGE_MODEL, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--every", type=int, default=2, help="every n-th image (sorted by name)")
    ap.add_argument("--qualities", default="1,2,3,4,6,9,12")
    args = ap.parse_args()
    loaded = load_model(args.model)
    codec = file_codec(loaded.model)
    images = [load_image(p) for p in sorted(Path(args.folder).glob("*.png"))[::args.every]]
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    cpu = torch.device("cpu")
    for q in (int(v) for v in args.qualities.split(",")):
        adapted = plain = 0
        rounds = None
        for image in images:
            adapted += len(compress_image(image, model=loaded, quality=q).data)
            plain += len(compress_image(image, model=loaded, quality=q, adapt=False).data)
            indices = image_to_indices(loaded.model, image, *loaded.rate_for_quality(q), cpu)
            both = np.stack([-codec.forward(indices[None], context_stages=IMAGE_CONTEXT_STAGES,
                                            adapt=a)[0].double().flatten(1).sum(1).numpy()
                             for a in (False, True)])  # [2, rounds]
            rounds = both if rounds is None else rounds + both
        per_round = " ".join(f"r{s} {rounds[0, s] / pixels:.4f}->{rounds[1, s] / pixels:.4f}"
                             for s in range(rounds.shape[1]))
        print(f"q{q}: file bpp {8 * plain / pixels:.4f} -> {8 * adapted / pixels:.4f} "
              f"({100 * (adapted / plain - 1):+.2f} %); per round (bpp) {per_round}", flush=True)


if __name__ == "__main__":
    main()
