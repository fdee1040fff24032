"""Learned autoregressive prior over residual-VQ indices, coded stage by stage.

Stage s is predicted from (a) the sum of the codewords of all stages < s over the whole image
and (b) the stage-s codewords already known from earlier passes of the context schedule. The
network predicts, per position, a diagonal Gaussian over the latent residual that stage s
quantizes; the logit of code k is that Gaussian's log-density at codeword k plus a learned
per-stage bias. Scoring codewords this way lets one network serve every stage (whose
codebooks differ) and makes the prior's main job, predicting how large the residual is at each
position, explicit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .context import pass_masks
from .quantization import ResidualQuantizer


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
                 depth: int = 3, schedule: str = "checkerboard") -> None:
        super().__init__()
        self.dim, self.num_stages, self.num_codes = dim, num_stages, num_codes
        self.schedule = schedule
        self.stem = nn.Conv2d(2 * dim + 1, width, 3, padding=1)
        self.stage_embedding = nn.Embedding(num_stages, width)
        self.blocks = nn.Sequential(*[_Block(width) for _ in range(depth)])
        self.head = nn.Conv2d(width, 2 * dim, 1)
        self.code_bias = nn.Parameter(torch.zeros(num_stages, num_codes))
        self.stage_log_scale = nn.Parameter(torch.zeros(num_stages))

    def logits(self, coarse: torch.Tensor, current: torch.Tensor, visible: torch.Tensor,
               stages: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
        """Logits [B, H, W, K].

        Args:
            coarse: sum of codewords of stages < s, [B, D, H, W].
            current: stage-s codewords at visible positions, zero elsewhere, [B, D, H, W].
            visible: [B, 1, H, W], 1 where `current` is known.
            stages: stage number of each batch item, [B] (int64).
            codebooks: stage-s codebook of each item, [B, K, D].
        """
        scale = self.stage_log_scale[stages].exp().view(-1, 1, 1, 1)
        h = self.stem(torch.cat([coarse, current / scale, visible], 1))
        h = h + self.stage_embedding(stages)[:, :, None, None]
        out = self.head(F.leaky_relu(self.blocks(h), 0.2))
        mean, log_sigma = out.permute(0, 2, 3, 1).chunk(2, dim=-1)  # [B, H, W, D] each
        # Work in units of the stage's typical residual size, so one network serves all stages.
        mean = mean * scale
        inv_var = torch.exp(-2 * log_sigma) / scale.pow(2)
        # -0.5 * sum_d (c_kd - mean_d)^2 * inv_var_d, dropping the term constant in k.
        lin = torch.einsum("bhwd,bkd->bhwk", mean * inv_var, codebooks)
        quad = torch.einsum("bhwd,bkd->bhwk", inv_var, codebooks.pow(2))
        return lin - 0.5 * quad + self.code_bias[stages][:, None, None, :]

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
            logits = self.logits(coarse, codes * vis, vis.expand(b * n, 1, h, w), st, books[st])
            logp = torch.log_softmax(logits, -1).gather(-1, idx[..., None])[..., 0]
            out.view(b * n, h, w)[:, m] = logp[:, m] / torch.log(torch.tensor(2.0))
            seen = seen | m
        return out
