"""Learned prior over audio code indices: a causal transformer over frames, and within a frame
a small "depth" head that predicts stage s from the frame's context and stages < s.

Frame t's transformer input is the sum of the code embeddings of frame t - 1 (a start vector at
t = 0), plus a position and a rate (number of coded stages) embedding. Coding walks frame by
frame with a key/value cache, so decoding is linear in length; files are coded in chunks of
`context` frames, each starting a fresh cache, which bounds memory and matches training.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                at: int = 0) -> torch.Tensor:
        """x [B, T, W]. With `cache` (preallocated keys/values [B, heads, context, W/heads]),
        x holds frames at..at+T-1 and attends to frames 0..at+T-1 of the cache."""
        b, t, w = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            cache[0][:, :, at:at + t] = k
            cache[1][:, :, at:at + t] = v
            k, v = cache[0][:, :, :at + t], cache[1][:, :, :at + t]
        # Written out (not scaled_dot_product_attention) so the ops never depend on a
        # backend's kernel choice: encoder and decoder must agree to the last bit.
        scores = q @ k.transpose(-1, -2) * (w // self.heads) ** -0.5
        if t > 1:
            n = k.shape[2]
            mask = torch.ones(t, n, dtype=torch.bool, device=x.device).tril(n - t)
            scores = scores.masked_fill(~mask, float("-inf"))
        out = scores.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, t, w))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = _Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, cache=None, at: int = 0) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cache, at)
        return x + self.mlp(self.norm2(x))


@dataclass
class PriorStream:
    """State of frame-by-frame coding within one chunk."""

    num_stages: int
    caches: list[tuple[torch.Tensor, torch.Tensor]]
    at: int = 0
    previous: torch.Tensor | None = None  # [1, W] code embedding sum of the previous frame
    lower: torch.Tensor | None = None  # [1, W] embeddings of the current frame's coded stages
    hidden: torch.Tensor | None = None  # [1, W] transformer output of the current frame
    codes: list[int] = field(default_factory=list)


class FramePrior(nn.Module):
    """Probability tables for audio indices [S', F], frame by frame and stage by stage.

    Args:
        num_stages: S, the most stages a stream can carry.
        num_codes: K.
        width, depth, heads: the transformer.
        context: frames per coded chunk (and the longest training sequence).
    """

    def __init__(self, *, num_stages: int, num_codes: int, width: int = 192, depth: int = 4,
                 heads: int = 4, context: int = 375) -> None:
        super().__init__()
        self.num_stages, self.num_codes = num_stages, num_codes
        self.width, self.heads, self.context = width, heads, context
        self.code_embedding = nn.Parameter(torch.randn(num_stages, num_codes, width) * 0.02)
        self.start = nn.Parameter(torch.zeros(width))
        self.position = nn.Parameter(torch.zeros(context, width))
        self.rate_embedding = nn.Parameter(torch.zeros(num_stages + 1, width))
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.stage_embedding = nn.Parameter(torch.zeros(num_stages, width))
        self.depth_mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width),
                                       nn.GELU(), nn.Linear(2 * width, width))
        self.out_norm = nn.LayerNorm(width)
        self.out_embedding = nn.Parameter(torch.randn(num_stages, num_codes, width) * 0.02)
        self.out_bias = nn.Parameter(torch.zeros(num_stages, num_codes))

    def _embed(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B, S', F] -> per-stage code embeddings [B, S', F, W]."""
        s = indices.shape[1]
        table = self.code_embedding[:s]  # [S', K, W]
        return table[torch.arange(s, device=indices.device)[None, :, None], indices]

    def _head(self, context: torch.Tensor, stage: int | torch.Tensor) -> torch.Tensor:
        """context [..., W] (frame hidden + stage embedding + lower stages) -> logits [..., K]."""
        g = context + self.depth_mlp(context)
        g = self.out_norm(g)
        if isinstance(stage, int):
            return g @ self.out_embedding[stage].T + self.out_bias[stage]
        return torch.einsum("bsfw,skw->bsfk", g, self.out_embedding[stage]) + \
            self.out_bias[stage][None, :, None, :]

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Training/evaluation: log2-likelihoods [B, S', F] of indices [B, S', F] (F <= context),
        all positions in parallel (teacher forcing)."""
        b, s, f = indices.shape
        emb = self._embed(indices)  # [B, S', F, W]
        frame_sum = emb.sum(1)  # [B, F, W]
        x = torch.cat([self.start.expand(b, 1, -1), frame_sum[:, :-1]], 1)
        x = x + self.position[:f] + self.rate_embedding[s]
        for block in self.blocks:
            x = block(x)
        hidden = self.norm(x)  # [B, F, W]
        lower = torch.cumsum(emb, 1) - emb  # [B, S', F, W]: stages < s of the same frame
        context = hidden[:, None] + self.stage_embedding[:s, None, :] + lower
        logits = self._head(context, torch.arange(s, device=indices.device))
        logp = F.log_softmax(logits.float(), -1).gather(-1, indices[..., None])[..., 0]
        return logp / torch.log(torch.tensor(2.0))

    # ---- frame-by-frame coding (the same calls on the encoder and the decoder side) ----

    def new_stream(self, num_stages: int) -> PriorStream:
        head_dim = self.width // self.heads
        caches = [(torch.zeros(1, self.heads, self.context, head_dim),
                   torch.zeros(1, self.heads, self.context, head_dim)) for _ in self.blocks]
        return PriorStream(num_stages=num_stages, caches=caches)

    def begin_frame(self, stream: PriorStream) -> None:
        """Run the transformer for the next frame of the chunk."""
        if stream.at >= self.context:
            raise ValueError("chunk longer than the prior's context")
        x = self.start[None] if stream.previous is None else stream.previous
        x = (x + self.position[stream.at] + self.rate_embedding[stream.num_stages])[:, None]
        for block, cache in zip(self.blocks, stream.caches):
            x = block(x, cache, stream.at)
        stream.hidden = self.norm(x)[:, 0]
        stream.lower = torch.zeros_like(stream.hidden)
        stream.codes = []

    def stage_logits(self, stream: PriorStream) -> torch.Tensor:
        """Logits [1, K] of the next stage of the current frame."""
        s = len(stream.codes)
        return self._head(stream.hidden + self.stage_embedding[s] + stream.lower, s)

    def push(self, stream: PriorStream, code: int) -> None:
        """Record the current frame's next code (after coding it)."""
        s = len(stream.codes)
        stream.lower = stream.lower + self.code_embedding[s, code][None]
        stream.codes.append(code)
        if len(stream.codes) == stream.num_stages:
            stream.previous = stream.lower
            stream.at += 1
