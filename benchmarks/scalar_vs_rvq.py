"""High-rate question for issue 11: a grouped model's residual VQ against uniform scalar
quantization of the same block-PCA latents, both at their 0th-order (static) rates.

Latents of random crops of the validation photos (BSDS500 test; no Kodak) are quantized (a)
by the model's grouped RVQ at each of its ladder rungs and (b) by rounding every component to
a multiple of one step size (a sweep of steps). The rate of each is the empirical entropy of
its symbols on these crops (per round and group for the RVQ, per component for the scalar
quantizer: equally optimistic for both), and the distortion is the PSNR of the inverse PCA
alone (no post-filter). A context prior would lower both rates.

    python benchmarks/scalar_vs_rvq.py --model runs/v4/vqimage-v4i.safetensors
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from vqcodec.eval.bd_rate import bd_rate
from vqcodec.eval.metrics import psnr
from vqcodec.train.data import CropSampler, image_split, load_training_images
from vqcodec.zoo.registry import load_model


def entropy_bits(symbols: torch.Tensor) -> float:
    """Total empirical entropy (bits) of the rows of `symbols` [N, C], column by column."""
    total = 0.0
    for column in symbols.T:
        _, counts = torch.unique(column, return_counts=True)
        p = counts.double() / len(column)
        total += float(-(p * torch.log2(p)).sum()) * len(column)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="vqimage-v3i")
    ap.add_argument("--crops", type=int, default=48)
    ap.add_argument("--crop", type=int, default=256)
    args = ap.parse_args()
    net = load_model(args.model, device=torch.device("cpu")).model
    _, val = image_split([], [])
    x = CropSampler(load_training_images(val), args.crop, seed=7).batch(args.crops)
    pixels = x[:, 0].numel()
    with torch.no_grad():
        z = net.encoder(x)  # [B, D, h, w]

        def decoded_psnr(zq: torch.Tensor) -> float:
            return float(psnr(x, net.decoder.linear(zq).add(1).div(2).clamp(0, 1)).mean())

        q = net.quantizer
        rvq = []
        for rd_lambda in net.config.quality_lambdas:
            idx = q.encode(z, None, rd_lambda)  # [B, R, G, h, w]
            symbols = idx.permute(0, 3, 4, 1, 2).reshape(-1, idx.shape[1] * idx.shape[2])
            rvq.append((entropy_bits(symbols) / pixels, decoded_psnr(q.decode(idx))))
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        scalar = []
        for step in np.geomspace(0.5, 0.01, 14):
            levels = torch.round(flat / step)
            zq = (levels * step).reshape(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
            scalar.append((entropy_bits(levels.long()) / pixels, decoded_psnr(zq), step))
    print("| RVQ rung | bpp | dB |\n|---|---|---|")
    for i, (bpp, db) in enumerate(rvq, 1):
        print(f"| q{i} | {bpp:.4f} | {db:.2f} |")
    print("\n| scalar step | bpp | dB |\n|---|---|---|")
    for bpp, db, step in scalar:
        print(f"| {step:.4f} | {bpp:.4f} | {db:.2f} |")
    for name, lo, hi in (("below 30 dB", 0, 30), ("30 dB and above", 30, 99)):
        a = [(b, d) for b, d in rvq if lo <= d < hi]
        s = [(b, d) for b, d, _ in scalar if lo - 1 <= d < hi + 1]
        if len(a) >= 2 and len(s) >= 2:
            found = bd_rate([b for b, _ in a], [d for _, d in a], [b for b, _ in s], [d for _, d in s])
            print(f"BD-rate of scalar against RVQ, {name}: "
                  f"{'n/a' if found is None else f'{found:+.1f} %'}")


if __name__ == "__main__":
    main()
