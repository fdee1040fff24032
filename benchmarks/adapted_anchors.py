"""What adapted anchors buy in real files: images compressed at each quality with the default
(the cheapest anchor weight, `pipelines.image.ANCHOR_WEIGHTS`) and with `adapt_anchors=False`;
file sizes, and how often each weight was chosen.

    python benchmarks/adapted_anchors.py ../shared/data/images/kodak [--every 2]
        [--qualities 1,2,3,4,6,9,12] [--model vqimage-v3i]
"""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from vqcodec.io.image import load_image
from vqcodec.pipelines.image import compress_image
from vqcodec.zoo.registry import DEFAULT_IMAGE_MODEL, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--every", type=int, default=2, help="every n-th image (sorted by name)")
    ap.add_argument("--qualities", default="1,2,3,4,6,9,12")
    args = ap.parse_args()
    loaded = load_model(args.model)
    images = [load_image(p) for p in sorted(Path(args.folder).glob("*.png"))[::args.every]]
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    for q in (int(v) for v in args.qualities.split(",")):
        adapted = plain = 0
        chosen: Counter = Counter()
        for image in images:
            result = compress_image(image, model=loaded, quality=q)
            adapted += len(result.data)
            plain += len(compress_image(image, model=loaded, quality=q, adapt_anchors=False).data)
            chosen[result.header.anchor_weight] += 1
        print(f"q{q}: file bpp {8 * plain / pixels:.4f} -> {8 * adapted / pixels:.4f} "
              f"({100 * (adapted / plain - 1):+.2f} %), weights chosen {dict(chosen)}", flush=True)


if __name__ == "__main__":
    main()
