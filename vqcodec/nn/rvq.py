"""Residual vector quantization with EMA codebooks.

`VectorQuantizer` is one codebook (k-means initialised, EMA-updated, dead codes restarted from
the batch); `ResidualQuantizer` chains S of them, each quantizing what the previous ones left,
with quantizer dropout so that one model serves every rate (decode with the first n stages).

Data-parallel training (torchrun) sets `data_parallel` to the job's `vqcodec.distributed.World`
on both: each process then holds an equal shard of the batch, in rank order, and the k-means
start, the EMA sums, the restarts of dead codes and the dropout draws are those of the whole
batch, so N processes update the codebooks as one process on the whole batch would. Left at
None (a plain run), nothing changes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between rows of x [N, D] and codebook [K, D] -> [N, K]."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.t() + codebook.pow(2).sum(1)[None])


def kmeans(x: torch.Tensor, num_codes: int, *, iters: int = 10) -> torch.Tensor:
    """Plain Lloyd k-means on x [N, D]; returns [num_codes, D] centroids."""
    g = torch.Generator(device="cpu").manual_seed(0)
    pick = torch.randint(0, x.shape[0], (num_codes,), generator=g).to(x.device)
    centroids = x[pick].clone()
    for _ in range(iters):
        assign = _squared_distances(x, centroids).argmin(1)
        counts = torch.bincount(assign, minlength=num_codes).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


class VectorQuantizer(nn.Module):
    """One codebook of `num_codes` vectors of size `dim`, updated by exponential moving averages.

    Args:
        dim: vector size.
        num_codes: codebook size K (indices are 0..K-1).
        decay: EMA decay of cluster sizes and sums.
        dead_threshold: a code whose EMA cluster size falls below this is restarted from a
            random vector of the current batch.
    """

    def __init__(self, *, dim: int, num_codes: int, decay: float = 0.99,
                 dead_threshold: float = 0.02) -> None:
        super().__init__()
        self.dim, self.num_codes = dim, num_codes
        self.decay, self.dead_threshold = decay, dead_threshold
        self.register_buffer("codebook", torch.zeros(num_codes, dim))
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("ema_sum", torch.zeros(num_codes, dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.data_parallel = None  # a vqcodec.distributed.World under torchrun

    def _whole(self, x: torch.Tensor) -> torch.Tensor:
        """The rows of the whole batch (this shard's alone in a plain run)."""
        return x if self.data_parallel is None else self.data_parallel.gather_rows(x)

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of x [N, D]."""
        return _squared_distances(x, self.codebook).argmin(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.codebook)

    @torch.no_grad()
    def update(self, x: torch.Tensor, indices: torch.Tensor) -> None:
        """EMA update of the codebook from vectors x [N, D] assigned to `indices` (training)."""
        if not bool(self.initialized):
            self.codebook.copy_(kmeans(self._whole(x), self.num_codes))
            self.ema_sum.copy_(self.codebook)
            self.ema_count.fill_(1.0)
            self.initialized.fill_(True)
            return
        counts = torch.bincount(indices, minlength=self.num_codes).to(x.dtype)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, x)
        if self.data_parallel is not None:  # the whole batch's counts and sums
            self.data_parallel.sum_(counts)
            self.data_parallel.sum_(sums)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # Laplace smoothing keeps rarely used codes from dividing by ~0.
        n = self.ema_count.sum()
        smoothed = (self.ema_count + 1e-5) / (n + self.num_codes * 1e-5) * n
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
        dead = self.ema_count < self.dead_threshold
        if dead.any():  # the same on every rank: the counts are the whole batch's
            x = self._whole(x)
            pick = torch.randint(0, x.shape[0], (int(dead.sum()),), device=x.device)
            self.codebook[dead] = x[pick]
            self.ema_sum[dead] = x[pick]
            self.ema_count[dead] = 1.0


class ResidualQuantizer(nn.Module):
    """S stages of vector quantization, stage s coding the residual left by stages < s.

    Args:
        dim: latent vector size.
        num_stages: S, the most stages a stream can carry.
        num_codes: K, codes per stage.
        min_dropout_stages: in training each sample is decoded from its first n stages, n drawn
            uniformly from [min_dropout_stages, S] (quantizer dropout).
    """

    def __init__(self, *, dim: int, num_stages: int, num_codes: int,
                 min_dropout_stages: int = 1, decay: float = 0.99) -> None:
        super().__init__()
        self.dim, self.num_stages, self.num_codes = dim, num_stages, num_codes
        self.min_dropout_stages = min_dropout_stages
        self.stages = nn.ModuleList(
            VectorQuantizer(dim=dim, num_codes=num_codes, decay=decay) for _ in range(num_stages))
        self.data_parallel = None  # a vqcodec.distributed.World under torchrun

    def encode(self, z: torch.Tensor, num_stages: int | None = None) -> torch.Tensor:
        """Latents z [B, D, H, W] -> indices [B, S', H, W] (int64), S' = num_stages or S."""
        n = num_stages or self.num_stages
        b, d, h, w = z.shape
        residual = z.permute(0, 2, 3, 1).reshape(-1, d)
        out = []
        for vq in self.stages[:n]:
            idx = vq.nearest(residual)
            residual = residual - vq.lookup(idx)
            out.append(idx.view(b, h, w))
        return torch.stack(out, 1)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices [B, S', H, W] -> quantized latents [B, D, H, W] (sum of the S' codewords)."""
        zq = sum(vq.lookup(indices[:, s]) for s, vq in enumerate(self.stages[: indices.shape[1]]))
        return zq.permute(0, 3, 1, 2).contiguous()

    def cumulative(self, indices: torch.Tensor) -> torch.Tensor:
        """Partial sums: [B, S', D, H, W] where entry s is the sum of codewords of stages < s."""
        parts = [vq.lookup(indices[:, s]) for s, vq in enumerate(self.stages[: indices.shape[1]])]
        acc = torch.cumsum(torch.stack(parts, 1), 1) - torch.stack(parts, 1)
        return acc.permute(0, 1, 4, 2, 3).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass with quantizer dropout.

        Returns (zq, indices, commit_loss): zq [B, D, H, W] carries straight-through gradients to
        z and holds, per sample, the sum of its first n stages.
        """
        b, d, h, w = z.shape
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, d)
        residual = flat
        parts, idxs = [], []
        for vq in self.stages:
            initializing = self.training and not bool(vq.initialized)
            if initializing:  # the first batch sets the codebook by k-means
                vq.update(residual, torch.zeros(0, dtype=torch.long))
            idx = vq.nearest(residual)
            if self.training and not initializing:
                vq.update(residual, idx)
            q = vq.lookup(idx)
            residual = residual - q
            parts.append(q.view(b, h, w, d))
            idxs.append(idx.view(b, h, w))
        parts_t = torch.stack(parts, 1)  # [B, S, H, W, D]
        if self.training:
            # Drawn for the whole batch, this shard's taken: the draws of a plain run.
            rank, size = ((0, 1) if self.data_parallel is None
                          else (self.data_parallel.rank, self.data_parallel.size))
            n = torch.randint(self.min_dropout_stages, self.num_stages + 1, (b * size,),
                              device=z.device)[rank * b:(rank + 1) * b]
        else:
            n = torch.full((b,), self.num_stages, device=z.device)
        keep = (torch.arange(self.num_stages, device=z.device)[None] < n[:, None]).to(z.dtype)
        zq = (parts_t * keep[:, :, None, None, None]).sum(1).permute(0, 3, 1, 2)
        full = parts_t.sum(1).permute(0, 3, 1, 2)
        commit = F.mse_loss(z, full)
        zq = z + (zq - z).detach()
        return zq, torch.stack(idxs, 1), commit
