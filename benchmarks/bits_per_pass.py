"""Where an image model's bits go: per round and per pass of its context schedule (the exact
NLL of the file codec, teacher-forced), over a folder of images.

    python benchmarks/bits_per_pass.py ../shared/data/images/kodak [--every 4]
        [--qualities 1,6,12] [--model vqimage-v3i] [--one-pass]

For each quality: each round's share of the bits, its bits per symbol in each pass, and the
share of zero codes. A first pass far above the later ones is what a stronger context for it
(a coarser level, a hyperprior, more passes) could save at most.

--one-pass: also each round's bits when it is coded in one pass (`context_stages`, format
version 4), and what coding the rounds from k on in one pass costs against the schedule, for
every k. The time saved is measured by `benchmarks/large_image.py` (a one-pass round costs one
prior evaluation instead of one per pass).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vqcodec.coding import file_codec
from vqcodec.coding.context import pass_masks
from vqcodec.io.image import load_image
from vqcodec.pipelines.image import IMAGE_CONTEXT_STAGES, image_to_tensor
from vqcodec.zoo.registry import DEFAULT_IMAGE_MODEL, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--every", type=int, default=4, help="every n-th image (sorted by name)")
    ap.add_argument("--qualities", default="1,6,12")
    ap.add_argument("--one-pass", action="store_true", help="also the cost of one-pass rounds")
    args = ap.parse_args()
    loaded = load_model(args.model)
    net, codec = loaded.model, file_codec(loaded.model)
    paths = sorted(Path(args.folder).glob("*.png"))[::args.every]
    cpu = torch.device("cpu")
    for q in (int(v) for v in args.qualities.split(",")):
        bits = zeros = symbols = one_pass = None
        pixels = 0
        for path in paths:
            image = load_image(path)
            pixels += image.shape[0] * image.shape[1]
            x = image_to_tensor(image, net.config.stride, cpu)
            with torch.no_grad():
                indices = net.encode(x, *loaded.rate_for_quality(q))[0]  # [S, G, H, W]
            log2p = codec.forward(indices[None])[0]
            masks = pass_masks(net.config.schedule, *indices.shape[-2:])
            if bits is None:
                bits, zeros, symbols = (np.zeros((len(indices), len(masks))) for _ in range(3))
                one_pass = np.zeros(len(indices))
            for s in range(len(indices)):
                for k, mask in enumerate(masks):
                    bits[s, k] -= float(log2p[s][..., mask].sum())
                    zeros[s, k] += float((indices[s][..., mask] == 0).sum())
                    symbols[s, k] += float(indices[s][..., mask].numel())
            if args.one_pass:
                one_pass -= codec.forward(indices[None], context_stages=0)[0].double().flatten(
                    1).sum(1).numpy()
        total = bits.sum()
        print(f"q{q}: {total / 8 / 1024:.1f} KiB over {len(paths)} images, "
              f"{total / pixels:.4f} bpp")
        for s in range(len(bits)):
            per_pass = " ".join(f"pass {k} {bits[s, k] / symbols[s, k]:.3f}"
                                for k in range(bits.shape[1]))
            print(f"  round {s}: {100 * bits[s].sum() / total:5.1f} % of the bits, bits per "
                  f"symbol {per_pass}, zero codes {100 * zeros[s].sum() / symbols[s].sum():.1f} %"
                  + (f"; {bits[s].sum() / pixels:.4f} bpp, in one pass {one_pass[s] / pixels:.4f}"
                     if args.one_pass else ""))
        if args.one_pass:
            for k in range(1, len(bits)):
                alt = bits[:k].sum() + one_pass[k:].sum()
                shipped = " (shipped)" if k == IMAGE_CONTEXT_STAGES else ""
                print(f"  rounds {k}+ in one pass{shipped}: {alt / pixels:.4f} bpp, "
                      f"{100 * (alt / total - 1):+.2f} %")


if __name__ == "__main__":
    main()
