"""What adapted anchors buy in real files: every n-th Kodak image compressed at each quality
with the default (the cheapest anchor weight) and with `adapt_anchors=False`; file bytes.

    python benchmarks/adapted_anchors.py EVERY QUALITIES   # e.g. 2 1,2,3,4,6,9,12
"""
import sys, numpy as np
from pathlib import Path
from vqcodec.io.image import load_image
from vqcodec.pipelines.image import compress_image
from vqcodec.zoo.registry import load_model
m = load_model('vqimage-v3i')
paths = sorted(Path('../shared/data/images/kodak').glob('*.png'))[::int(sys.argv[1])]
for q in [int(v) for v in sys.argv[2].split(',')]:
    a = b = 0; pix = 0; chosen = {}
    for p in paths:
        img = load_image(p); pix += img.shape[0] * img.shape[1]
        r1 = compress_image(img, model=m, quality=q); r0 = compress_image(img, model=m, quality=q, adapt_anchors=False)
        a += len(r1.data); b += len(r0.data); chosen[r1.header.anchor_weight] = chosen.get(r1.header.anchor_weight, 0) + 1
    print(f'q{q}: file bpp {8*b/pix:.4f} -> {8*a/pix:.4f} ({100*(a/b-1):+.2f} %), weights chosen {chosen}', flush=True)
