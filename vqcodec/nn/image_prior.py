"""Learned autoregressive prior over residual-VQ indices, coded stage by stage.

Stage s is predicted from (a) the sum of the codewords of all stages < s over the whole image
and (b) the stage-s codewords already known from earlier passes of the context schedule. One
network serves all stages (it is told which stage through an embedding); its features are
scored against a learned embedding of each stage's codes, because each stage has a codebook
of its own.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..coding.context import pass_masks
from .grouped_rvq import GroupedResidualQuantizer
from .rvq import ResidualQuantizer


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))


class StagePrior(nn.Module):
    """Probability tables for the indices of stage s, pass p.

    Args:
        dim: latent vector size D of the quantizer.
        num_stages: S.
        num_codes: K.
        width: channels of the prior network.
        depth: residual blocks.
        schedule: context schedule name (see `context.py`).
    """

    def __init__(self, *, dim: int, num_stages: int, num_codes: int, width: int = 96,
                 depth: int = 3, schedule: str = "checkerboard", code_dim: int = 64) -> None:
        super().__init__()
        self.dim, self.num_stages, self.num_codes = dim, num_stages, num_codes
        self.schedule = schedule
        self.stem = nn.Conv2d(2 * dim + 1, width, 3, padding=1)
        self.stage_embedding = nn.Embedding(num_stages, width)
        self.blocks = nn.Sequential(*[_Block(width) for _ in range(depth)])
        self.head = nn.Conv2d(width, code_dim, 1)
        self.code_embedding = nn.Parameter(torch.randn(num_stages, num_codes, code_dim) * 0.02)
        self.code_bias = nn.Parameter(torch.zeros(num_stages, num_codes))
        self.stage_log_scale = nn.Parameter(torch.zeros(num_stages))

    def logits(self, coarse: torch.Tensor, current: torch.Tensor, visible: torch.Tensor,
               stages: torch.Tensor) -> torch.Tensor:
        """Logits [B, H, W, K].

        Args:
            coarse: sum of codewords of stages < s, [B, D, H, W].
            current: stage-s codewords at visible positions, zero elsewhere, [B, D, H, W].
            visible: [B, 1, H, W], 1 where `current` is known.
            stages: stage number of each batch item, [B] (int64).
        """
        features = self.features(coarse, current, visible, stages)
        logits = torch.einsum("bhwf,bkf->bhwk", features, self.code_embedding[stages])
        return logits + self.code_bias[stages][:, None, None, :]

    def features(self, coarse: torch.Tensor, current: torch.Tensor, visible: torch.Tensor,
                 stages: torch.Tensor) -> torch.Tensor:
        """The network's output features [B, H, W, head channels] (arguments as `logits`)."""
        # Stage-s codewords in units of that stage's typical size: later stages are tiny.
        scale = self.stage_log_scale[stages].exp().view(-1, 1, 1, 1)
        h = self.stem(torch.cat([coarse, current / scale, visible], 1))
        h = h + self.stage_embedding(stages)[:, :, None, None]
        return self.head(F.leaky_relu(self.blocks(h), 0.2)).permute(0, 2, 3, 1)

    def forward(self, indices: torch.Tensor, quantizer: ResidualQuantizer,
                stages: torch.Tensor | None = None) -> torch.Tensor:
        """Training/evaluation: log2-likelihoods (in bits, <= 0) of the given indices.

        Args:
            indices: [B, S', H, W].
            quantizer: the model's residual quantizer (provides codebooks).
            stages: optional subset of stage numbers to evaluate (default: all S').
        Returns:
            [B, len(stages), H, W] log2 p(index).
        """
        b, s_total, h, w = indices.shape
        stages = torch.arange(s_total) if stages is None else stages
        cumulative = quantizer.cumulative(indices)  # [B, S', D, H, W]
        books = torch.stack([vq.codebook for vq in quantizer.stages])  # [S, K, D]
        out = torch.zeros(b, len(stages), h, w, device=indices.device)
        masks = [m.to(indices.device) for m in pass_masks(self.schedule, h, w)]
        n = len(stages)
        st = stages.to(indices.device).repeat(b)  # item (i, j) -> stages[j]
        coarse = cumulative[:, stages].reshape(b * n, -1, h, w)
        idx = indices[:, stages].reshape(b * n, h, w)
        codes = torch.stack([F.embedding(idx[i], books[st[i]]) for i in range(b * n)])
        codes = codes.permute(0, 3, 1, 2)  # [B*n, D, H, W]
        seen = torch.zeros(h, w, dtype=torch.bool, device=indices.device)
        for m in masks:
            vis = seen.to(codes.dtype)[None, None]
            logits = self.logits(coarse, codes * vis, vis.expand(b * n, 1, h, w), st)
            logp = torch.log_softmax(logits, -1).gather(-1, idx[..., None])[..., 0]
            out.view(b * n, h, w)[:, m] = logp[:, m] / torch.log(torch.tensor(2.0))
            seen = seen | m
        return out


class GroupedStagePrior(StagePrior):
    """`StagePrior` for a `GroupedResidualQuantizer`: one network pass per round and context
    pass gives a table for every group at every position of the pass. Groups of one position
    and round are predicted independently of each other (the PCA order decorrelates them);
    earlier rounds and the pass's already-known neighbours are the context.

    Args:
        num_groups: G; the other arguments as `StagePrior`.
    """

    def __init__(self, *, dim: int, num_stages: int, num_groups: int, num_codes: int,
                 width: int = 96, depth: int = 3, schedule: str = "checkerboard",
                 code_dim: int = 32) -> None:
        super().__init__(dim=dim, num_stages=num_stages, num_codes=num_codes, width=width,
                         depth=depth, schedule=schedule, code_dim=code_dim)
        self.num_groups = num_groups
        self.head = nn.Conv2d(width, num_groups * code_dim, 1)
        self.code_embedding = nn.Parameter(
            torch.randn(num_stages, num_groups, num_codes, code_dim) * 0.02)
        self.code_bias = nn.Parameter(torch.zeros(num_stages, num_groups, num_codes))

    def logits(self, coarse: torch.Tensor, current: torch.Tensor, visible: torch.Tensor,
               stages: torch.Tensor) -> torch.Tensor:
        """Logits [B, H, W, G, K] (arguments as `StagePrior.logits`)."""
        features = self.features(coarse, current, visible, stages)
        b, h, w, _ = features.shape
        features = features.reshape(b, h, w, self.num_groups, -1)
        logits = torch.einsum("bhwgf,bgkf->bhwgk", features, self.code_embedding[stages])
        return logits + self.code_bias[stages][:, None, None]

    def forward(self, indices: torch.Tensor, quantizer: GroupedResidualQuantizer,
                stages: torch.Tensor | None = None) -> torch.Tensor:
        """Log2-likelihoods [B, len(stages), G, H, W] of indices [B, R', G, H, W]."""
        b, s_total, g, h, w = indices.shape
        stages = torch.arange(s_total) if stages is None else stages
        cumulative = quantizer.cumulative(indices)  # [B, R', D, H, W]
        out = torch.zeros(b, len(stages), g, h, w, device=indices.device)
        masks = [m.to(indices.device) for m in pass_masks(self.schedule, h, w)]
        n = len(stages)
        st = stages.to(indices.device).repeat(b)  # item (i, j) -> stages[j]
        coarse = cumulative[:, stages].reshape(b * n, -1, h, w)
        idx = indices[:, stages].reshape(b * n, g, h, w)
        codes = torch.cat([quantizer.stage_codewords(int(st[i]), idx[i:i + 1])
                           for i in range(b * n)])
        target = idx.permute(0, 2, 3, 1)  # [B*n, H, W, G]
        books, bias = self.code_embedding[st], self.code_bias[st]  # [B*n, G, K, F], [B*n, G, K]
        seen = torch.zeros(h, w, dtype=torch.bool, device=indices.device)
        for m in masks:
            vis = seen.to(codes.dtype)[None, None]
            features = self.features(coarse, codes * vis, vis.expand(b * n, 1, h, w), st)
            # Score only the pass's positions, a few items at a time: the full logits of a
            # large image (positions x groups x codes) would take gigabytes.
            features = features[:, m].reshape(b * n, -1, g, books.shape[-1])
            logp = []
            for i in range(0, b * n, 4):
                logits = (torch.einsum("bngf,bgkf->bngk", features[i:i + 4], books[i:i + 4])
                          + bias[i:i + 4, None])
                logp.append(torch.log_softmax(logits, -1)
                            .gather(-1, target[i:i + 4][:, m][..., None])[..., 0])
            out.view(b * n, g, h, w).permute(0, 2, 3, 1)[:, m] = torch.cat(logp) / math.log(2.0)
            seen = seen | m
        return out
