"""Exactness, rate honesty and the bit cost of exactness on a folder of images (Kodak):

1. for every image and every quality, the decoder's indices equal the encoder's and the
   payload is within 1% of the coding prior's NLL (skip with --no-coder);
2. with --float-model PATH (a model whose float prior is the reference, e.g. vqimage-v3, when
   --model is its integerized version): the integer prior's exact NLL vs the float prior's NLL
   of the same indices, per quality (batched `forward`, no range coder), against a 1% target.

Exits non-zero when any check fails.

    python benchmarks/kodak_exactness.py ../shared/data/images/kodak --model runs/vqimage-v3i.safetensors \
        --float-model vqimage-v3 [--coder-images 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from vqcodec.coding import file_codec, latent_codec
from vqcodec.io.image import load_image
from vqcodec.pipelines.image import image_to_tensor
from vqcodec.zoo.registry import DEFAULT_IMAGE_MODEL, load_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--float-model", default=None,
                    help="model whose float prior's NLL is the reference for the bit cost")
    ap.add_argument("--coder-images", type=int, default=None,
                    help="run the range coder on only the first N images (default: all)")
    ap.add_argument("--no-coder", action="store_true", help="only the NLL comparison")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--images", default=None, help="comma-separated positions (sorted by name)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    net, codec = loaded.model, file_codec(loaded.model)
    paths = sorted(Path(args.folder).glob("*.png"))
    if args.images:
        paths = [paths[int(k)] for k in args.images.split(",")]
    n_q = loaded.ladder_qualities
    images = [image_to_tensor(load_image(p), net.config.stride, torch.device("cpu")) for p in paths]
    coded_images = (0 if args.no_coder else len(images) if args.coder_images is None
                    else min(args.coder_images, len(images)))
    with torch.no_grad():
        indices = {(i, q): net.encode(x, *loaded.rate_for_quality(q))[0]
                   for i, x in enumerate(images[:coded_images]) for q in range(1, n_q + 1)}
    failures = 0
    print(f"{loaded.name}: {len(paths)} images x {n_q} qualities; coding codec "
          f"{type(codec).__name__} (portable={getattr(codec, 'portable', False)})")

    if not args.no_coder:
        worst_gap, checked, bad = 0.0, 0, 0
        t0 = time.perf_counter()
        for (i, q), idx in indices.items():
            if args.coder_images is not None and i >= args.coder_images:
                continue
            t = time.perf_counter()
            coded = codec.compress(idx)
            decoded = codec.decompress(coded.payload, idx.shape[0], *idx.shape[-2:])
            exact = torch.equal(decoded, idx)
            gap = coded.payload_bits / coded.nll_bits - 1
            worst_gap = max(worst_gap, gap)
            checked += 1
            if not exact or gap > 0.01:
                bad += 1
                print(f"FAIL {paths[i].name} q{q}: exact={exact} gap={100 * gap:.3f}%")
            print(f"  {paths[i].name} q{q}: {coded.payload_bits} payload bits, NLL "
                  f"{coded.nll_bits:.0f}, exact={exact} ({time.perf_counter() - t:.1f} s)",
                  flush=True)
        failures += bad
        print(f"{checked} (image, quality) pairs: {checked - bad} exact and within 1% of NLL; "
              f"largest payload/NLL gap {100 * worst_gap:.3f}% ({time.perf_counter() - t0:.0f} s)")

    if args.float_model:
        reference = load_model(args.float_model).model
        float_codec = latent_codec(reference)
        integer_codec = codec if getattr(codec, "portable", False) else None
        if integer_codec is None:
            raise SystemExit(f"{args.model} has no integer prior to compare")
        # Image by image (every quality of one image at once), so that a partial run
        # already covers every quality; one line per image, the per-quality table at the end.
        f_bits, i_bits = [0.0] * n_q, [0.0] * n_q
        for i, x in enumerate(images):
            t = time.perf_counter()
            cells = []
            for q in range(1, n_q + 1):
                idx = indices.get((i, q))
                if idx is None:
                    with torch.no_grad():
                        idx = net.encode(x, *loaded.rate_for_quality(q))[0]
                with torch.no_grad():
                    f = -float(float_codec.forward(idx[None]).double().sum())
                b = -float(integer_codec.forward(idx[None]).sum())
                f_bits[q - 1] += f
                i_bits[q - 1] += b
                cells.append(f"{100 * (b / f - 1):+.3f}")
            print(f"{paths[i].name}: cost per quality % {' '.join(cells)} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
        print("quality | float NLL bits | integer NLL bits | cost of exactness")
        worst = -1.0
        for q in range(1, n_q + 1):
            cost = i_bits[q - 1] / f_bits[q - 1] - 1
            worst = max(worst, cost)
            failures += cost > 0.01
            print(f"{q:7d} | {f_bits[q - 1]:14.0f} | {i_bits[q - 1]:16.0f} | {100 * cost:+.3f}%")
        print(f"largest cost of exactness {100 * worst:+.3f}% (target <= 1%)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
