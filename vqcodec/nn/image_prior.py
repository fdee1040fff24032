"""Learned autoregressive prior over residual-VQ indices, coded stage by stage.

Stage s is predicted from (a) the sum of the codewords of all stages < s over the whole image
and (b) the stage-s codewords already known from earlier passes of the context schedule. One
network serves all stages (it is told which stage through an embedding); its features are
scored against a learned embedding of each stage's codes, because each stage has a codebook
of its own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn



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
