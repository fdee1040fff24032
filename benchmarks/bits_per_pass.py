"""Where an image model's bits go: per round and per pass of its context schedule (the
exact NLL of the file codec, teacher-forced), over a folder of images.

    python benchmarks/bits_per_pass.py ../shared/data/images/kodak [--every 4]
        [--qualities 1,6,12] [--model vqimage-v3i]

For each quality: each round's share of the bits, its bits per symbol in each pass, and the
share of zero codes. A first pass far above the later ones is what a stronger context for it
(a coarser level, a hyperprior, more passes) could save at most.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vqcodec.coding import file_codec
from vqcodec.coding.context import pass_masks
from vqcodec.io.image import load_image
from vqcodec.pipelines.image import image_to_tensor
from vqcodec.zoo.registry import DEFAULT_IMAGE_MODEL, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--every", type=int, default=4, help="every n-th image (sorted by name)")
    ap.add_argument("--qualities", default="1,6,12")
    args = ap.parse_args()
    loaded = load_model(args.model)
    net, codec = loaded.model, file_codec(loaded.model)
    paths = sorted(Path(args.folder).glob("*.png"))[::args.every]
    cpu = torch.device("cpu")
    for q in (int(v) for v in args.qualities.split(",")):
        bits = zeros = symbols = None
        for path in paths:
            x = image_to_tensor(load_image(path), net.config.stride, cpu)
            with torch.no_grad():
                indices = net.encode(x, *loaded.rate_for_quality(q))[0]  # [S, G, H, W]
            log2p = codec.forward(indices[None])[0]
            masks = pass_masks(net.config.schedule, *indices.shape[-2:])
            if bits is None:
                bits, zeros, symbols = (np.zeros((len(indices), len(masks))) for _ in range(3))
            for s in range(len(indices)):
                for k, mask in enumerate(masks):
                    bits[s, k] -= float(log2p[s][..., mask].sum())
                    zeros[s, k] += float((indices[s][..., mask] == 0).sum())
                    symbols[s, k] += float(indices[s][..., mask].numel())
        total = bits.sum()
        print(f"q{q}: {total / 8 / 1024:.1f} KiB over {len(paths)} images")
        for s in range(len(bits)):
            per_pass = " ".join(f"pass {k} {bits[s, k] / symbols[s, k]:.3f}"
                                for k in range(bits.shape[1]))
            print(f"  round {s}: {100 * bits[s].sum() / total:5.1f} % of the bits, bits per "
                  f"symbol {per_pass}, zero codes {100 * zeros[s].sum() / symbols[s].sum():.1f} %")


if __name__ == "__main__":
    main()
