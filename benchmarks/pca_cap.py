"""How far a block PCA of D components can go: the inverse transform alone on unquantized
latents (mean per-image PSNR), for several D, fitted on training crops as the codebook
builder does (1,000 random 128x128 crops, seed 12345).

Usage:
    python benchmarks/pca_cap.py ../shared/data/images/kodak --dims 64 128 192 256 384 768
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from vqcodec.io.image import load_image
from vqcodec.io.media import list_media
from vqcodec.train.data import CropSampler, default_image_split, load_training_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 128, 192, 256, 384, 768])
    ap.add_argument("--stride", type=int, default=16)
    args = ap.parse_args()
    s = args.stride
    train, _ = default_image_split()
    x = CropSampler(load_training_images(train), 128, seed=12345).batch(1000) * 2 - 1
    mean = x.mean(dim=(0, 2, 3))
    patches = F.unfold(x - mean[None, :, None, None], s, stride=s)
    patches = patches.permute(0, 2, 1).reshape(-1, 3 * s * s).double()
    eigval, eigvec = torch.linalg.eigh(patches.T @ patches / len(patches))
    eigval, eigvec = eigval.flip(0), eigvec.flip(1)
    blocks = []
    for f in list_media(Path(args.folder), "image"):
        a = torch.from_numpy(load_image(f)).permute(2, 0, 1)[None].float() / 255 * 2 - 1
        blocks.append(F.unfold(a - mean[None, :, None, None], s, stride=s)
                      .permute(0, 2, 1).reshape(-1, 3 * s * s).double())
    print("| D | training variance kept | mean PSNR of the inverse transform (dB) |")
    print("|---|---|---|")
    for d in args.dims:
        basis = eigvec[:, :d]
        psnrs = []
        for q in blocks:
            mse = ((q - (q @ basis) @ basis.T).pow(2).mean() / 4).item()  # [-1,1] -> [0,1]
            psnrs.append(10 * math.log10(1 / mse) if mse > 0 else float("inf"))
        print(f"| {d} | {eigval[:d].sum() / eigval.sum():.4%} | {sum(psnrs) / len(psnrs):.2f} |")


if __name__ == "__main__":
    main()
