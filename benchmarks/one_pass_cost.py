"""What coding the later rounds in one pass costs in rate (`context_stages`, format version
4): the exact NLL of every round under the model's context schedule and in one pass, over a
folder of images, and the total for each k (rounds from k on in one pass).

    python benchmarks/one_pass_cost.py ../shared/data/images/kodak [--every 2]
        [--qualities 1,3,6,9,12] [--model vqimage-v3i]

The time saved is not measured here (`benchmarks/large_image.py` does, through the CLI): a
one-pass round costs one prior evaluation instead of one per pass.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vqcodec.coding import file_codec
from vqcodec.io.image import load_image
from vqcodec.pipelines.image import IMAGE_CONTEXT_STAGES, image_to_tensor
from vqcodec.zoo.registry import DEFAULT_IMAGE_MODEL, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--every", type=int, default=2, help="every n-th image (sorted by name)")
    ap.add_argument("--qualities", default="1,3,6,9,12")
    args = ap.parse_args()
    loaded = load_model(args.model)
    net, codec = loaded.model, file_codec(loaded.model)
    paths = sorted(Path(args.folder).glob("*.png"))[::args.every]
    cpu = torch.device("cpu")
    print(f"{args.model}, {len(paths)} images of {args.folder}; shipped: one pass from round "
          f"{IMAGE_CONTEXT_STAGES} on")
    for q in (int(v) for v in args.qualities.split(",")):
        schedule = one_pass = None
        pixels = 0
        for path in paths:
            image = load_image(path)
            pixels += image.shape[0] * image.shape[1]
            x = image_to_tensor(image, net.config.stride, cpu)
            with torch.no_grad():
                indices = net.encode(x, *loaded.rate_for_quality(q))[0][None]
            # Per round: bits with the model's schedule, and in one pass (context_stages=0).
            a = -codec.forward(indices).double().flatten(2).sum(2)[0].numpy()
            b = -codec.forward(indices, context_stages=0).double().flatten(2).sum(2)[0].numpy()
            schedule = a if schedule is None else schedule + a
            one_pass = b if one_pass is None else one_pass + b
        total = schedule.sum()
        rounds = " ".join(f"{s / pixels:.4f}/{o / pixels:.4f}" for s, o in zip(schedule, one_pass))
        print(f"q{q}: {total / pixels:.4f} bpp; per round, schedule/one pass bpp: {rounds}")
        for k in range(1, len(schedule)):
            alt = schedule[:k].sum() + one_pass[k:].sum()
            print(f"  one pass from round {k}: {alt / pixels:.4f} bpp, {100 * (alt / total - 1):+.2f} %")


if __name__ == "__main__":
    main()
