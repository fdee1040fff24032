"""Grouped, entropy-constrained residual vector quantization.

The latent vector (D components, ordered by importance: the PCA order of the linear block
transform) is split into G groups of D/G components. Each round s refines every group with a
codebook of its own, whose code 0 is the zero vector. The encoder chooses, per group, the code
that minimises squared error + lambda * bits(code): a quiet group takes code 0 and costs a
fraction of a bit under the prior, a busy one spends bits where they buy the most. This is what
makes a fixed-size codebook spend its rate where the image needs it, as a transform coder's
scalar quantizer does. Measured on Kodak with 0th-order rates (PCA-16, 128 components): full-
vector RVQ gave 27.5 dB and this 29.2 dB at 0.49 bpp.

Codebooks are trained offline (`train_codebooks`: Lloyd iterations with the rate term), not by
back-propagation; `code_bits` keeps each code's rate in training so the encoder can weigh it.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class GroupedResidualQuantizer(nn.Module):
    """R rounds x G groups of K codes; indices are [B, R', G, H, W].

    Args:
        dim: latent size D (a multiple of num_groups).
        num_stages: rounds R, the most a stream can carry.
        num_groups: G.
        num_codes: K per (round, group) codebook; code 0 is always the zero vector.
    """

    def __init__(self, *, dim: int, num_stages: int, num_groups: int, num_codes: int) -> None:
        super().__init__()
        if dim % num_groups:
            raise ValueError(f"latent size {dim} is not a multiple of {num_groups} groups")
        self.dim, self.num_stages, self.num_groups = dim, num_stages, num_groups
        self.num_codes, self.group_dim = num_codes, dim // num_groups
        self.register_buffer("codebooks",
                             torch.zeros(num_stages, num_groups, num_codes, self.group_dim))
        self.register_buffer("code_bits",
                             torch.full((num_stages, num_groups, num_codes), math.log2(num_codes)))

    def _grouped(self, z: torch.Tensor) -> torch.Tensor:
        """[B, D, H, W] -> [B*H*W, G, D/G]."""
        b, d, h, w = z.shape
        return z.permute(0, 2, 3, 1).reshape(-1, self.num_groups, self.group_dim)

    def choose(self, residual: torch.Tensor, stage: int, rd_lambda: float) -> torch.Tensor:
        """Codes [N, G] minimising squared error + rd_lambda * bits for residual [N, G, D/G]."""
        book = self.codebooks[stage]  # [G, K, d]
        dist = (residual.pow(2).sum(-1, keepdim=True)
                - 2 * torch.einsum("ngd,gkd->ngk", residual, book)
                + book.pow(2).sum(-1)[None])
        return (dist + rd_lambda * self.code_bits[stage][None]).argmin(-1)

    def lookup(self, stage: int, indices: torch.Tensor) -> torch.Tensor:
        """Codewords of round `stage` for indices [..., G] -> [..., G, D/G]."""
        book = self.codebooks[stage]
        return book[torch.arange(self.num_groups, device=indices.device), indices]

    def encode(self, z: torch.Tensor, num_stages: int | None = None,
               rd_lambda: float = 0.0) -> torch.Tensor:
        """Latents z [B, D, H, W] -> indices [B, R', G, H, W] (int64)."""
        n = num_stages or self.num_stages
        b, _, h, w = z.shape
        residual = self._grouped(z)
        out = []
        for s in range(n):
            idx = self.choose(residual, s, rd_lambda)
            residual = residual - self.lookup(s, idx)
            out.append(idx.view(b, h, w, self.num_groups).permute(0, 3, 1, 2))
        return torch.stack(out, 1)

    def stage_codewords(self, stage: int, indices: torch.Tensor) -> torch.Tensor:
        """Indices [B, G, H, W] of one round -> its codewords as latents [B, D, H, W]."""
        b, g, h, w = indices.shape
        vec = self.lookup(stage, indices.permute(0, 2, 3, 1))  # [B, H, W, G, d]
        return vec.reshape(b, h, w, self.dim).permute(0, 3, 1, 2)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices [B, R', G, H, W] -> quantized latents [B, D, H, W]."""
        return sum(self.stage_codewords(s, indices[:, s]) for s in range(indices.shape[1]))

    def rate_map(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices [B, R', G, H, W] -> [B, G, H, W]: per position and group, the fraction of
        all R rounds that coded a nonzero code (code 0 is the zero vector). What a decoder
        knows of how coarsely each region was quantized: quiet groups and low rates take
        code 0."""
        return (indices != 0).sum(1).to(self.codebooks.dtype) / self.num_stages

    def cumulative(self, indices: torch.Tensor) -> torch.Tensor:
        """[B, R', D, H, W]: entry s is the sum of the codewords of rounds < s."""
        parts = torch.stack([self.stage_codewords(s, indices[:, s])
                             for s in range(indices.shape[1])], 1)
        return torch.cumsum(parts, 1) - parts


@torch.no_grad()
def train_codebooks(quantizer: GroupedResidualQuantizer, latents: torch.Tensor, *,
                    rd_lambda: float, iters: int = 12, seed: int = 0,
                    log=None) -> None:
    """Entropy-constrained Lloyd training of every codebook, round by round.

    Each (round, group) codebook starts from random residuals (code 0 fixed at zero) and
    alternates: assign by squared error + rd_lambda * bits, move codes to their cells' means,
    set bits to -log2 of the cells' frequencies.

    Args:
        quantizer: the quantizer to fill in.
        latents: training vectors [N, D].
        rd_lambda: the rate weight the codebooks are designed for (latent units).
        iters: Lloyd iterations per codebook.
    """
    g = torch.Generator().manual_seed(seed)
    k = quantizer.num_codes
    residual = latents.reshape(len(latents), quantizer.num_groups, quantizer.group_dim).clone()
    for s in range(quantizer.num_stages):
        for grp in range(quantizer.num_groups):
            x = residual[:, grp]
            book = torch.zeros(k, quantizer.group_dim)
            book[1:] = x[torch.randperm(len(x), generator=g)[: k - 1]]
            bits = torch.full((k,), math.log2(k))
            for _ in range(iters):
                dist = (x.pow(2).sum(1, keepdim=True) - 2 * x @ book.T + book.pow(2).sum(1)[None])
                assign = (dist + rd_lambda * bits[None]).argmin(1)
                counts = torch.bincount(assign, minlength=k).to(x.dtype)
                sums = torch.zeros_like(book).index_add_(0, assign, x)
                moved = counts > 0
                moved[0] = False  # code 0 stays the zero vector
                book[moved] = sums[moved] / counts[moved, None]
                # Unused codes keep a finite cost, so a later image may still pick them.
                bits = -torch.log2((counts + 0.5) / (counts.sum() + 0.5 * k))
            quantizer.codebooks[s, grp] = book
            quantizer.code_bits[s, grp] = bits
            residual[:, grp] = x - book[assign]
        if log is not None:
            print(f"codebooks: round {s} done, residual mse {residual.pow(2).mean().item():.3e}",
                  file=log, flush=True)
