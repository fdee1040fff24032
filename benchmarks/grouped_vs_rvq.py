"""Why vqimage-v3 quantizes in groups: rate-distortion of quantizers on a plain block PCA,
with static rates (each code's training frequency; no context prior), so that only the
quantizer differs.

    python benchmarks/grouped_vs_rvq.py --train ../shared/data/images/bsds500/train \
        --eval ../shared/data/images/kodak

Fits a 16x16 block PCA (128 components) on the training images, then compares on the eval
images: uniform scalar quantization (per-component 0th-order entropy, measured on the eval set
itself, i.e. optimistic), whole-vector residual VQ (k-means codebooks, 256 codes per stage),
and the grouped entropy-constrained quantizer of `vqcodec.nn.grouped_rvq`.
PSNR on 8-bit RGB over all eval pixels; bpp = bits / pixels.
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from vqcodec.nn.grouped_rvq import GroupedResidualQuantizer, train_codebooks
from vqcodec.nn.rvq import kmeans
from vqcodec.io.media import list_media
from vqcodec.train.data import load_rgb

BLOCK, KEEP = 16, 128


def blocks(paths) -> tuple[torch.Tensor, int]:
    """All whole 16x16 blocks of the images as rows [N, 768] (0..255), and their pixel count."""
    rows, pixels = [], 0
    for p in paths:
        x = load_rgb(p).float()
        h, w = x.shape[1] // BLOCK * BLOCK, x.shape[2] // BLOCK * BLOCK
        rows.append(F.unfold(x[None, :, :h, :w], BLOCK, stride=BLOCK)[0].T)
        pixels += h * w
    return torch.cat(rows), pixels


def entropy_bits(symbols: torch.Tensor) -> float:
    counts = torch.bincount(symbols - symbols.min()).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(counts[counts > 0] * p.log2()).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--max-train-images", type=int, default=200)
    args = ap.parse_args()
    torch.manual_seed(0)
    train, _ = blocks(list_media(args.train, "image", recursive=True)[: args.max_train_images])
    test, pixels = blocks(list_media(args.eval, "image", recursive=True))
    mean = train.mean(0)
    centred = (train - mean).double()
    _, vectors = torch.linalg.eigh(centred.T @ centred / len(centred))
    basis = vectors.flip(1)[:, :KEEP].float()
    z_train, z_test = (train - mean) @ basis, (test - mean) @ basis

    def psnr(z_hat: torch.Tensor) -> float:
        rec = (z_hat @ basis.T + mean).clamp(0, 255).round()
        return 10 * math.log10(255 ** 2 / (rec - test).pow(2).mean().item())

    print(f"{len(z_train)} training blocks, {len(z_test)} eval blocks; "
          f"PCA-{KEEP} unquantized: {psnr(z_test):.2f} dB")
    for step in (120, 100, 85, 70):
        q = torch.round(z_test / step)
        bits = sum(entropy_bits(q[:, d].long()) for d in range(KEEP))
        print(f"scalar      step {step:4d}        {bits / pixels:.3f} bpp  {psnr(q * step):.2f} dB")

    residual_train, residual_test, bits = z_train.clone(), z_test.clone(), 0.0
    for stage in range(24):
        book = kmeans(residual_train, 256)
        a_train = torch.cdist(residual_train, book).argmin(1)
        a_test = torch.cdist(residual_test, book).argmin(1)
        freq = torch.bincount(a_train, minlength=256).double() + 0.5
        bits -= float(torch.log2(freq / freq.sum())[a_test].sum())
        residual_train -= book[a_train]
        residual_test -= book[a_test]
        if stage + 1 in (12, 16, 20, 24):
            print(f"whole RVQ   {stage + 1:2d} stages       {bits / pixels:.3f} bpp  "
                  f"{psnr(z_test - residual_test):.2f} dB")

    scale = 127.5 ** 2  # the quantizer works on [-1, 1]-scaled components, as in the codec
    quantizer = GroupedResidualQuantizer(dim=KEEP, num_stages=4, num_groups=16, num_codes=256)
    train_codebooks(quantizer, z_train / 127.5, rd_lambda=800 / scale)
    for lam in (1600, 800, 400):
        z = (z_test / 127.5).T.reshape(1, KEEP, 1, -1)
        idx = quantizer.encode(z, rd_lambda=lam / scale)
        bits = sum(float(quantizer.code_bits[s, g][idx[0, s, g, 0]].sum())
                   for s in range(quantizer.num_stages) for g in range(quantizer.num_groups))
        z_hat = quantizer.decode(idx)[0, :, 0].T * 127.5
        print(f"grouped     lambda {lam:5d}      {bits / pixels:.3f} bpp  {psnr(z_hat):.2f} dB")


if __name__ == "__main__":
    main()
