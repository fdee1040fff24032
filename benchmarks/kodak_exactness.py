"""Exactness and rate honesty on a folder of images (Kodak for the README):

for every image and every quality, the decoder's indices equal the encoder's, and the payload
is within 1% of the prior's NLL. Exits non-zero when either fails.

    python benchmarks/kodak_exactness.py ../shared/data/images/kodak [--model vqimage-v1]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from vqcodec.pipelines.image import image_to_tensor
from vqcodec.io.image import load_image
from vqcodec.zoo.registry import DEFAULT_IMAGE_MODEL, load_model
from vqcodec.coding import file_codec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    args = ap.parse_args()
    loaded = load_model(args.model)
    net, codec = loaded.model, file_codec(loaded.model)
    worst_gap, failures, checked = 0.0, 0, 0
    for path in sorted(Path(args.folder).glob("*.png")):
        x = image_to_tensor(load_image(path), net.config.stride, torch.device("cpu"))
        for q in range(1, len(loaded.qualities) + 1):
            n, rd_lambda = loaded.rate_for_quality(q)
            indices = net.encode(x, n, rd_lambda)[0]  # [n, (G,) h, w]
            coded = codec.compress(indices)
            decoded = codec.decompress(coded.payload, n, *indices.shape[-2:])
            exact = torch.equal(decoded, indices)
            gap = coded.payload_bits / coded.nll_bits - 1
            worst_gap = max(worst_gap, gap)
            failures += (not exact) or gap > 0.01
            checked += 1
            if not exact or gap > 0.01:
                print(f"FAIL {path.name} q{q}: exact={exact} gap={100 * gap:.3f}%")
    print(f"{checked} (image, quality) pairs: {checked - failures} exact and within 1% of NLL; "
          f"largest payload/NLL gap {100 * worst_gap:.3f}%")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
