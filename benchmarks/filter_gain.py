"""What a post-filter buys: two image models that share their encoder and quantizer (a model
and the same model with another post-filter, e.g. vqimage-v3i and vqimage-v3r) decode the
same indices of every photo at every quality of the ladder; mean PSNR-RGB and MS-SSIM of
each, and the difference. The files of the two models have the same payload (same indices,
same prior), so this is the whole rate-distortion change at the ladder's qualities.

    python benchmarks/filter_gain.py ../shared/data/images/kodak --base vqimage-v3i
        --model vqimage-v3r [--qualities 1,2,...,12] [--every 1]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vqcodec.eval.metrics import image_distortion, image_levels
from vqcodec.io.image import load_image
from vqcodec.pipelines.image import image_to_indices, indices_to_image
from vqcodec.zoo.registry import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--base", default="vqimage-v3i")
    ap.add_argument("--model", required=True)
    ap.add_argument("--qualities", default=None, help="comma-separated (default: the ladder)")
    ap.add_argument("--every", type=int, default=1, help="every n-th photo")
    args = ap.parse_args()
    base, model = load_model(args.base), load_model(args.model)
    if base.qualities != model.qualities:
        raise SystemExit("the two models have other rate settings")
    qualities = ([int(q) for q in args.qualities.split(",")] if args.qualities
                 else list(range(1, base.ladder_qualities + 1)))
    photos = sorted(p for p in Path(args.folder).iterdir()
                    if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[::args.every]
    cpu = torch.device("cpu")
    found = {q: {"base": [], "model": []} for q in qualities}
    for photo in photos:
        array = load_image(photo)
        original = image_levels(array)[None]
        channels = 1 if array.ndim == 2 else 3
        h, w = array.shape[:2]
        for q in qualities:
            stages, rd_lambda = base.rate_for_quality(q)
            indices = image_to_indices(base.model, array, stages, rd_lambda, cpu)
            for key, loaded in (("base", base), ("model", model)):
                picture = indices_to_image(loaded.model, indices, channels, h, w, cpu)
                d = image_distortion(original, image_levels(picture)[None])
                found[q][key].append((float(d["psnr-rgb"][0]), float(d["ms-ssim-rgb"][0])))
        print(f"{photo.name} done", flush=True)
    print(f"\n{len(photos)} photos of {args.folder}: {args.base} -> {args.model}\n")
    print("| quality | PSNR base | PSNR model | gain dB | MS-SSIM base | MS-SSIM model |")
    print("|---|---|---|---|---|---|")
    for q in qualities:
        b, m = np.array(found[q]["base"]), np.array(found[q]["model"])
        print(f"| {q} | {b[:, 0].mean():.3f} | {m[:, 0].mean():.3f} | "
              f"{m[:, 0].mean() - b[:, 0].mean():+.3f} | {np.nanmean(b[:, 1]):.4f} | "
              f"{np.nanmean(m[:, 1]):.4f} |")


if __name__ == "__main__":
    main()
