"""Exact integer version of the audio frame prior (`audio_prior.FramePrior`): the same causal
transformer over frames and per-stage depth head, with every value an integer held in float64
(see `fixed_point.py` for why such sums are exact in any order on any IEEE-754 machine).

What each part of the float prior becomes:

- code / position / rate / stage embeddings: integer tables at the exponent of the sum they
  enter (the residual stream, or the head's context);
- layer norm: integer mean (rounded exact division), integer sum of squared deviations, exact
  integer square root of the variance plus an integer epsilon, rounded exact division to
  NORM_EXP fraction bits;
  its gain and bias are folded into the linear layer that follows (the final norm keeps them
  as an integer elementwise affine, because its output is summed with the stage embeddings);
- linear layers: `fixed_point.IntegerLinear` (15-bit per-channel power-of-two weights);
- attention: integer q.k (1/sqrt(head_dim) folded into q's weights), requantized to SCORE_EXP
  fraction bits (nats), softmax weights from an `ExpTable` (masked positions weigh 0), the
  weighted sum of v divided exactly (rounded) by the weights' integer sum;
- GELU: a table over a clamped integer input range, stored in the model file (identity above
  the range, zero below it, where GELU equals those to the table's precision);
- logits: integer, LOGIT_EXP fraction bits; counts from an `ExpTable` (every count >= 1).

No transcendental function runs at coding time. Because every op is exact, the frame-by-frame
walk (KV cache) gives the same integers as the parallel teacher-forced forward, so an encoder
may compute a chunk's tables in one pass and the decoder walk frame by frame.

The integers are stored in torch buffers (the model file) and computed on as numpy float64
arrays (`prepare`): the decoder's walk is thousands of single-row ops per second of audio,
where numpy's per-op cost is a fraction of torch's; the exactness argument is the same
(OpenBLAS's matmul kernels are tested against each other in the cross-kernel test).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .audio_prior import FramePrior
from .fixed_point import (ACT_MAX, DTYPE, ExpTable, IntegerLinear, activation_exponent,
                          check_exact, pow2, quantize_to_exponent,
                          quantize_weight, requantize, shift_factors)

NORM_EXP = 14  # layer-norm outputs: |y| <= sqrt(width) * 2^14 < ACT_MAX for width <= 3000
SCORE_EXP = 6  # attention logits in 1/64 nats
GELU_EXP = 10  # GELU input and output: 2^-10 steps
GELU_RANGE = 8  # the GELU table covers [-8, 8]; above it GELU(x) = x, below it 0
LOGIT_EXP = 8  # output logits in 1/256 nats
ATTENTION_PRECISION = 16  # largest attention weight 2^16
COUNT_PRECISION = 20  # largest count 2^20 (as the float tables' 2^20 total)
NORM_EPS = 1e-5  # nn.LayerNorm's default, as in the float prior
NORM_ONE = pow2(NORM_EXP)  # 1.0 in layer-norm output units
HEADROOM = 4.0  # calibrated max |activation| * HEADROOM fits in ACT_MAX


def _round_div(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """round(a / b) (half up) of integers for b > 0: floor((2a + b) / 2b), exactly.

    A lean `fixed_point.floor_div` for a positive divisor (the walk runs it tens of thousands
    of times): rounding is monotonic, so the floored float quotient is the true floor or one
    above it (when the true quotient is just below an integer), and one downward correction
    makes it exact.
    """
    n, d = 2 * a + b, 2 * b
    q = np.floor(n / d)
    return q - (n - q * d < 0)


def _isqrt(n: np.ndarray) -> np.ndarray:
    """floor(sqrt(n)) of integers 0 <= n < 2^52, exactly (as `fixed_point.isqrt`, without its
    sign check): the rounded square root is monotonic, so its floor is the true one or one
    above it; one downward correction makes it exact."""
    r = np.floor(np.sqrt(n))
    return r - (r * r > n)


def integer_layer_norm(x: np.ndarray, eps: int) -> np.ndarray:
    """Layer norm (no gain/bias) of integers x [..., W] -> integers at NORM_EXP fraction bits.

    Args:
        x: float64 integers, |x| <= ACT_MAX.
        eps: the norm's epsilon in units of x's scale squared (an integer).
    """
    width = float(x.shape[-1])
    d = x - _round_div(x.sum(-1, keepdims=True), width)  # |d| < 2^21
    ss = (d * d).sum(-1, keepdims=True)  # < width * 2^42
    var = np.floor(ss / width)
    var = var - (ss - var * width < 0) + eps  # exact floor, as in _round_div
    r = np.maximum(_isqrt(var), 1.0)
    return _round_div(d * NORM_ONE, r)


def _clamp(x: np.ndarray) -> np.ndarray:
    """Clamp to +-ACT_MAX in place (two ufuncs: np.clip's wrapper costs more on one row)."""
    np.minimum(x, ACT_MAX, out=x)
    return np.maximum(x, -ACT_MAX, out=x)


def _shift_factors(shifts) -> tuple[np.ndarray, np.ndarray]:
    """`fixed_point.shift_factors` as numpy arrays, in (offset, factor) order."""
    scale, offset = shift_factors(shifts)
    return offset.numpy(), scale.numpy()


def _lookup(table: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """`ExpTable.forward` on numpy rows (last axis): table[min(max(row) - logit, end)]."""
    d = logits.max(-1, keepdims=True) - logits
    return table[np.minimum(d, len(table) - 1).astype(np.intp)]


def _norm_eps(exponent: int) -> int:
    """nn.LayerNorm's epsilon for inputs of `exponent`: eps * 2^(2 exponent), rounded, >= 1."""
    return max(1, round(NORM_EPS * pow2(2 * exponent)))


class _Requantizer:
    """An IntegerLinear as numpy arrays: x @ W + bias, requantized by its per-channel shifts
    (`fixed_point.requantize`), the power-of-two factors built once. The coder calls these
    layers tens of thousands of times on single rows, where numpy's per-op cost is a fraction
    of torch's; the arithmetic is the same exact integer arithmetic in float64."""

    def __init__(self, layer: IntegerLinear) -> None:
        offset, self.scale = _shift_factors(layer.shift.numpy())
        self.weight = np.ascontiguousarray(layer.weight.numpy().T)  # [in, out]
        # The rounding offset 2^(k-1) is an integer: folded into the bias, still exact.
        self.bias = layer.bias.numpy() + offset

    def __call__(self, x: np.ndarray) -> np.ndarray:
        acc = x @ self.weight
        acc += self.bias
        acc *= self.scale
        return _clamp(np.floor(acc, out=acc))


def _folded_linear(linear: nn.Linear, norm: nn.LayerNorm | None = None,
                   row_scale: torch.Tensor | None = None) -> nn.Linear:
    """`linear` (in float64) with a preceding layer norm's gain and bias folded in:
    W (g*y + b) + c = (W diag g) y + (W b + c); rows optionally scaled."""
    w = linear.weight.detach().double()
    b = (linear.bias.detach().double() if linear.bias is not None
         else torch.zeros(len(w), dtype=DTYPE))
    if norm is not None:
        b = b + w @ norm.bias.detach().double()
        w = w * norm.weight.detach().double()
    if row_scale is not None:
        w, b = w * row_scale[:, None], b * row_scale
    out = nn.Linear(w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        out.weight.copy_(w)
        out.bias.copy_(b)
    return out


class _IntegerBlock(nn.Module):
    """One transformer block: integer attention (with an optional KV cache) and MLP."""

    def __init__(self, *, width: int, heads: int, score_shift: int) -> None:
        super().__init__()
        self.width, self.heads, self.score_shift = width, heads, score_shift
        self.qkv = IntegerLinear(width, 3 * width)  # q at q_exp, k at k_exp, v at v_exp
        self.proj = IntegerLinear(width, width)
        self.fc1 = IntegerLinear(width, 4 * width)
        self.fc2 = IntegerLinear(4 * width, width)

    def prepare(self) -> None:
        self._qkv, self._proj = _Requantizer(self.qkv), _Requantizer(self.proj)
        self._fc1, self._fc2 = _Requantizer(self.fc1), _Requantizer(self.fc2)
        self._score_offset, self._score_scale = (float(v) for v in _shift_factors(
            np.array(self.score_shift)))

    def forward(self, x: np.ndarray, prior: "IntegerFramePrior",
                cache: tuple[np.ndarray, np.ndarray] | None = None, at: int = 0) -> np.ndarray:
        """x [B, T, W] residual-stream integers; with `cache` [B, heads, context, W/heads],
        x holds frames at..at+T-1 and attends to frames 0..at+T-1."""
        b, t, w = x.shape
        y = integer_layer_norm(x, prior.residual_eps)
        qkv = self._qkv(y).reshape(b, t, 3, self.heads, w // self.heads).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if cache is not None:
            cache[0][:, :, at:at + t] = k
            cache[1][:, :, at:at + t] = v
            k, v = cache[0][:, :, :at + t], cache[1][:, :, :at + t]
        # q.k < head_dim * 2^40 < 2^53; the shift takes it to SCORE_EXP fraction bits (nats).
        scores = _clamp(np.floor((q @ k.swapaxes(-1, -2) + self._score_offset) * self._score_scale))
        if t > 1:
            mask = np.tril(np.ones((t, k.shape[2]), dtype=bool), k.shape[2] - t)
            weights = _lookup(prior._attention, np.where(mask, scores, -ACT_MAX)) * mask
        else:
            weights = _lookup(prior._attention, scores)
        # weights <= 2^16, |v| <= 2^20, context <= 2^16 frames: sums < 2^53.
        out = _round_div(weights @ v, weights.sum(-1, keepdims=True))
        x = _clamp(x + self._proj(out.transpose(0, 2, 1, 3).reshape(b, t, w)))
        h = prior.gelu(self._fc1(integer_layer_norm(x, prior.residual_eps)))
        return _clamp(x + self._fc2(h))


class IntegerGelu(nn.Module):
    """GELU of integers at GELU_EXP fraction bits, by a table over [-GELU_RANGE, GELU_RANGE]
    (stored in the model file); identity above the range and 0 below it, where GELU rounds to
    those anyway."""

    def __init__(self) -> None:
        super().__init__()
        self.half = GELU_RANGE << GELU_EXP
        self.register_buffer("table", torch.zeros(2 * self.half + 1, dtype=torch.int32))

    def fill(self) -> None:
        """Compute the table (conversion time only)."""
        u = torch.arange(-self.half, self.half + 1, dtype=DTYPE) * pow2(-GELU_EXP)
        self.table.copy_(torch.round(F.gelu(u) * pow2(GELU_EXP)).to(torch.int32))

    def prepare(self) -> None:
        self._table = self.table.numpy().astype(np.float64)

    def forward(self, u: np.ndarray) -> np.ndarray:
        looked_up = self._table[(np.clip(u, -self.half, self.half) + self.half).astype(np.intp)]
        return np.where(u > self.half, u, looked_up)


@dataclass
class IntegerPriorStream:
    """State of frame-by-frame coding within one chunk (integers in float64)."""

    num_stages: int
    caches: list[tuple[np.ndarray, np.ndarray]]
    at: int = 0
    previous: np.ndarray | None = None  # [1, W] previous frame's code embeddings (residual exp)
    lower: np.ndarray | None = None  # [1, W] current frame's coded stages (residual exp)
    lower_context: np.ndarray | None = None  # [1, W] the same at the head's context exp
    hidden: np.ndarray | None = None  # [1, W] transformer output of the current frame
    codes: list[int] = field(default_factory=list)


class IntegerFramePrior(nn.Module):
    """Integer count tables for audio indices [S', F], frame by frame and stage by stage: the
    exact counterpart of `FramePrior` (build it with `from_float`).

    Args:
        num_stages, num_codes, width, depth, heads, context: as `FramePrior`.
        residual_exp: fraction bits of the transformer's residual stream (and its input).
        context_exp: fraction bits of the depth head's context (frame hidden + stage embedding
            + lower stages) and of its residual.
        code_embedding_exp: exponent of the stored 15-bit code embedding mantissas.
        hidden_scale_exp: exponent of the final norm's integer gain.
        score_shifts: per block, q_exp + k_exp - SCORE_EXP.
    """

    def __init__(self, *, num_stages: int, num_codes: int, width: int, depth: int, heads: int,
                 context: int, residual_exp: int, context_exp: int, code_embedding_exp: int,
                 hidden_scale_exp: int, score_shifts: Sequence[int]) -> None:
        super().__init__()
        self.num_stages, self.num_codes = num_stages, num_codes
        self.width, self.depth, self.heads, self.context = width, depth, heads, context
        self.residual_exp, self.context_exp = residual_exp, context_exp
        self.code_embedding_exp, self.hidden_scale_exp = code_embedding_exp, hidden_scale_exp
        self.score_shifts = [int(s) for s in score_shifts]
        self.residual_eps, self.context_eps = _norm_eps(residual_exp), _norm_eps(context_exp)
        head_dim = width // heads
        check_exact(head_dim * float(ACT_MAX) ** 2, "attention scores")
        check_exact(2 * context * pow2(ATTENTION_PRECISION) * ACT_MAX, "attention sums")
        i32 = torch.int32
        # Code embeddings as 15-bit mantissas (the largest tables; int16 halves the file).
        self.register_buffer("code_embedding", torch.zeros(num_stages, num_codes, width,
                                                           dtype=torch.int16))
        self.register_buffer("start", torch.zeros(width, dtype=i32))  # residual exp
        self.register_buffer("position", torch.zeros(context, width, dtype=i32))
        self.register_buffer("rate_embedding", torch.zeros(num_stages + 1, width, dtype=i32))
        self.blocks = nn.ModuleList(_IntegerBlock(width=width, heads=heads, score_shift=s)
                                    for s in self.score_shifts)
        # Final norm's gain (mantissas at hidden_scale_exp) and bias (at NORM_EXP + that).
        self.register_buffer("hidden_scale", torch.zeros(width, dtype=i32))
        self.register_buffer("hidden_bias", torch.zeros(width, dtype=torch.int64))
        self.register_buffer("stage_embedding", torch.zeros(num_stages, width, dtype=i32))
        self.depth_fc1 = IntegerLinear(width, 2 * width)  # depth head's norm folded in
        self.depth_fc2 = IntegerLinear(2 * width, width)
        # Output embeddings with the output norm folded in: 15-bit mantissas, one exponent per
        # (stage, code), bias at NORM_EXP + that exponent.
        self.register_buffer("out_embedding", torch.zeros(num_stages, num_codes, width,
                                                          dtype=torch.int16))
        self.register_buffer("out_embedding_exp", torch.zeros(num_stages, num_codes,
                                                              dtype=torch.int16))
        self.register_buffer("out_bias", torch.zeros(num_stages, num_codes, dtype=torch.int64))
        self.gelu = IntegerGelu()
        self.attention_table = ExpTable(precision=ATTENTION_PRECISION, logit_exp=SCORE_EXP)
        self.count_table = ExpTable(precision=COUNT_PRECISION, logit_exp=LOGIT_EXP)
        self.register_load_state_dict_post_hook(lambda module, _: module.prepare())
        self.prepare()

    # ---- configuration and conversion ----

    def config_dict(self) -> dict:
        return {"num_stages": self.num_stages, "num_codes": self.num_codes, "width": self.width,
                "depth": self.depth, "heads": self.heads, "context": self.context,
                "residual_exp": self.residual_exp, "context_exp": self.context_exp,
                "code_embedding_exp": self.code_embedding_exp,
                "hidden_scale_exp": self.hidden_scale_exp, "score_shifts": self.score_shifts}

    @classmethod
    def from_config(cls, config: dict) -> "IntegerFramePrior":
        return cls(**config)

    def prepare(self) -> None:
        """Derive the float64 (numpy) working arrays from the stored integers (after loading)."""
        for block in self.blocks:
            block.prepare()
        self.gelu.prepare()
        self._depth_fc1 = _Requantizer(self.depth_fc1)
        self._depth_fc2 = _Requantizer(self.depth_fc2)
        mantissas, exp = self.code_embedding.to(DTYPE), self.code_embedding_exp
        # The code embeddings at the two exponents they are summed at (exact requantization).
        self._embed_residual = requantize(mantissas, exp - self.residual_exp, act_max=None).numpy()
        self._embed_context = requantize(mantissas, exp - self.context_exp, act_max=None).numpy()
        as_array = lambda t: t.numpy().astype(np.float64)
        self._start, self._position = as_array(self.start), as_array(self.position)
        self._rate, self._stage = as_array(self.rate_embedding), as_array(self.stage_embedding)
        self._hidden_scale = as_array(self.hidden_scale)
        self._hidden_bias = as_array(self.hidden_bias)
        self._hidden_offset, self._hidden_factor = (float(v) for v in _shift_factors(
            np.array(NORM_EXP + self.hidden_scale_exp - self.context_exp)))
        self._out_weight = np.ascontiguousarray(
            as_array(self.out_embedding).transpose(0, 2, 1))  # [S, W, K]
        out_offset, self._out_scale = _shift_factors(
            self.out_embedding_exp.numpy().astype(np.int64) + NORM_EXP - LOGIT_EXP)  # [S, K]
        self._out_bias = as_array(self.out_bias) + out_offset
        self._attention = self.attention_table.counts.numpy()
        self._counts = self.count_table.counts.numpy()

    @classmethod
    @torch.no_grad()
    def from_float(cls, prior: FramePrior, calibration_indices: Iterable[torch.Tensor], *,
                   rates: Sequence[int] | None = None) -> "IntegerFramePrior":
        """Convert a float prior, choosing each activation's power-of-two exponent from its
        largest magnitude on real index sequences (with HEADROOM).

        Args:
            prior: the float prior (eval mode, CPU).
            calibration_indices: index tensors [B, S, F] or [S, F] with all S stages (split into
                chunks of `context` frames, as files are coded).
            rates: stage counts to run the float prior at (default 1, 2, 4, ... and S: each
                rate is one more pass over the calibration set; give a model's qualities).
        """
        prior = prior.eval()
        if rates is None:
            rates = sorted({2 ** i for i in range(prior.num_stages.bit_length())
                            if 2 ** i <= prior.num_stages} | {prior.num_stages})
        maxima = _calibrate(prior, calibration_indices, rates)
        w, heads = prior.width, prior.heads
        head_scale = (w // heads) ** -0.5
        residual_exp = activation_exponent(maxima["residual"], HEADROOM)
        context_exp = activation_exponent(maxima["context"], HEADROOM)
        qkv_exps = [[activation_exponent(maxima[f"{n}{i}"], HEADROOM) for n in "qkv"]
                    for i in range(len(prior.blocks))]
        emb, emb_exp = quantize_weight(prior.code_embedding)
        gain, gain_exp = quantize_weight(prior.norm.weight)
        integer = cls(num_stages=prior.num_stages, num_codes=prior.num_codes, width=w,
                      depth=len(prior.blocks), heads=heads, context=prior.context,
                      residual_exp=residual_exp, context_exp=context_exp,
                      code_embedding_exp=emb_exp, hidden_scale_exp=gain_exp,
                      score_shifts=[q + k - SCORE_EXP for q, k, _ in qkv_exps])
        integer.code_embedding.copy_(emb.to(torch.int16))
        for name in ("start", "position", "rate_embedding"):
            getattr(integer, name).copy_(_to_int32(getattr(prior, name), residual_exp))
        integer.stage_embedding.copy_(_to_int32(prior.stage_embedding, context_exp))
        integer.hidden_scale.copy_(gain.to(torch.int32))
        integer.hidden_bias.copy_(quantize_to_exponent(prior.norm.bias, NORM_EXP + gain_exp)
                                  .to(torch.int64))
        for block, source, (q_exp, k_exp, v_exp) in zip(integer.blocks, prior.blocks, qkv_exps):
            row_scale = torch.ones(3 * w, dtype=DTYPE)
            row_scale[:w] = head_scale  # 1/sqrt(head_dim) into q
            out_exp = torch.tensor([q_exp] * w + [k_exp] * w + [v_exp] * w)
            _copy(block.qkv, IntegerLinear.from_float(
                _folded_linear(source.attn.qkv, source.norm1, row_scale), NORM_EXP, out_exp))
            _copy(block.proj, IntegerLinear.from_float(_folded_linear(source.attn.proj), v_exp,
                                                       residual_exp))
            _copy(block.fc1, IntegerLinear.from_float(
                _folded_linear(source.mlp[0], source.norm2), NORM_EXP, GELU_EXP))
            _copy(block.fc2, IntegerLinear.from_float(_folded_linear(source.mlp[2]), GELU_EXP,
                                                      residual_exp))
        _copy(integer.depth_fc1, IntegerLinear.from_float(
            _folded_linear(prior.depth_mlp[1], prior.depth_mlp[0]), NORM_EXP, GELU_EXP))
        _copy(integer.depth_fc2, IntegerLinear.from_float(_folded_linear(prior.depth_mlp[3]),
                                                          GELU_EXP, context_exp))
        e = prior.out_embedding.detach().double() * prior.out_norm.weight.detach().double()
        bias = prior.out_bias.detach().double() + \
            prior.out_embedding.detach().double() @ prior.out_norm.bias.detach().double()
        mantissas, exps = quantize_weight(e.reshape(-1, w), per_channel=True)
        exps = exps.view(prior.num_stages, prior.num_codes)
        integer.out_embedding.copy_(mantissas.view_as(e).to(torch.int16))
        integer.out_embedding_exp.copy_(exps.to(torch.int16))
        integer.out_bias.copy_(quantize_to_exponent(bias, exps + NORM_EXP).to(torch.int64))
        check_exact(w * (ACT_MAX + 1) * 2.0 ** 14 + float(integer.out_bias.abs().max()),
                    "output logits")
        integer.gelu.fill()
        integer.prepare()
        return integer.eval()

    # ---- the network ----

    def _head(self, context: np.ndarray, stages: int | slice) -> np.ndarray:
        """Head context -> counts: [N, W] -> [N, K] for one stage (an int), or [S', N, W] ->
        [S', N, K] for the stages of a slice (stage-major)."""
        c = _clamp(context)
        h = self.gelu(self._depth_fc1(integer_layer_norm(c, self.context_eps)))
        g = _clamp(c + self._depth_fc2(h))
        y = integer_layer_norm(g, self.context_eps)
        bias, scale = self._out_bias[stages], self._out_scale[stages]
        if isinstance(stages, slice):
            bias, scale = bias[:, None], scale[:, None]
        acc = y @ self._out_weight[stages]
        acc += bias
        acc *= scale
        return _lookup(self._counts, _clamp(np.floor(acc, out=acc)))

    def _final_hidden(self, x: np.ndarray) -> np.ndarray:
        acc = integer_layer_norm(x, self.residual_eps) * self._hidden_scale + self._hidden_bias
        return _clamp(np.floor((acc + self._hidden_offset) * self._hidden_factor))

    @torch.no_grad()
    def counts(self, indices: torch.Tensor) -> torch.Tensor:
        """Integer counts [B, S', F, K] (float64) of indices [B, S', F] (F <= context), all
        positions in parallel (teacher forcing): the same integers the walk gives."""
        b, s, f = indices.shape
        if f > self.context:
            raise ValueError("sequence longer than the prior's context")
        indices = indices.cpu().numpy()
        stage = np.arange(s)[None, :, None]
        emb_x = self._embed_residual[stage, indices].sum(1)  # [B, F, W]
        emb_c = self._embed_context[stage, indices]  # [B, S', F, W]
        x = np.concatenate([np.broadcast_to(self._start, (b, 1, self.width)), emb_x[:, :-1]], 1)
        x = _clamp(x + self._position[:f] + self._rate[s])
        for block in self.blocks:
            x = block(x, self)
        hidden = self._final_hidden(x)  # [B, F, W]
        lower = np.cumsum(emb_c, 1) - emb_c
        context = hidden[:, None] + self._stage[:s, None, :] + lower  # [B, S', F, W]
        context = context.transpose(1, 0, 2, 3).reshape(s, b * f, self.width)
        counts = self._head(context, slice(0, s))  # [S', B*F, K]
        return torch.from_numpy(counts.reshape(s, b, f, -1).transpose(1, 0, 2, 3).copy())

    @torch.no_grad()
    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Log2-likelihoods [B, S', F] of indices [B, S', F] under the exact integer tables
        (for evaluation; the log is the only float step and is not part of coding)."""
        counts = self.counts(indices)
        picked = counts.gather(-1, indices.cpu()[..., None])[..., 0]
        return torch.log2(picked) - torch.log2(counts.sum(-1))

    # ---- frame-by-frame coding (the same calls on the encoder and the decoder side) ----

    def new_stream(self, num_stages: int) -> IntegerPriorStream:
        head_dim = self.width // self.heads
        caches = [(np.zeros((1, self.heads, self.context, head_dim)),
                   np.zeros((1, self.heads, self.context, head_dim))) for _ in self.blocks]
        return IntegerPriorStream(num_stages=num_stages, caches=caches)

    def begin_frame(self, stream: IntegerPriorStream) -> None:
        """Run the transformer for the next frame of the chunk."""
        if stream.at >= self.context:
            raise ValueError("chunk longer than the prior's context")
        x = self._start[None] if stream.previous is None else stream.previous
        x = _clamp(x + self._position[stream.at] + self._rate[stream.num_stages])[:, None]
        for block, cache in zip(self.blocks, stream.caches):
            x = block(x, self, cache, stream.at)
        stream.hidden = self._final_hidden(x[:, 0])
        stream.lower = np.zeros_like(stream.hidden)
        stream.lower_context = np.zeros_like(stream.hidden)
        stream.codes = []

    def stage_counts(self, stream: IntegerPriorStream) -> np.ndarray:
        """Integer counts [1, K] (float64, each >= 1) of the current frame's next stage."""
        s = len(stream.codes)
        return self._head(stream.hidden + self._stage[s] + stream.lower_context, s)

    def push(self, stream: IntegerPriorStream, code: int) -> None:
        """Record the current frame's next code (after coding it)."""
        s = len(stream.codes)
        stream.lower = stream.lower + self._embed_residual[s, code]
        stream.lower_context = stream.lower_context + self._embed_context[s, code]
        stream.codes.append(code)
        if len(stream.codes) == stream.num_stages:
            stream.previous = stream.lower
            stream.at += 1


def _to_int32(x: torch.Tensor, exponent: int) -> torch.Tensor:
    return quantize_to_exponent(x, exponent).clamp(-ACT_MAX, ACT_MAX).to(torch.int32)


def _copy(target: IntegerLinear, source: IntegerLinear) -> None:
    for name in ("weight", "bias", "shift"):
        getattr(target, name).copy_(getattr(source, name))


@torch.no_grad()
def _calibrate(prior: FramePrior, batches: Iterable[torch.Tensor],
               rates: Iterable[int]) -> dict[str, float]:
    """Largest |activation| of each quantized site of `prior` over `batches` at each rate."""
    maxima: dict[str, float] = defaultdict(float)

    def record(name: str, t: torch.Tensor) -> None:
        maxima[name] = max(maxima[name], float(t.detach().abs().max()))

    w = prior.width
    hooks = []
    for i, block in enumerate(prior.blocks):
        hooks.append(block.register_forward_pre_hook(lambda m, a: record("residual", a[0])))
        hooks.append(block.register_forward_hook(lambda m, a, out: record("residual", out)))

        def qkv_hook(m, a, out, i=i):
            q, k, v = out.split(w, -1)
            record(f"q{i}", q * (w // prior.heads) ** -0.5)
            record(f"k{i}", k)
            record(f"v{i}", v)
        hooks.append(block.attn.qkv.register_forward_hook(qkv_hook))
        hooks.append(block.mlp[0].register_forward_hook(lambda m, a, out: record("gelu", out)))
        hooks.append(block.attn.proj.register_forward_hook(
            lambda m, a, out: record("residual", out)))
        hooks.append(block.mlp[2].register_forward_hook(lambda m, a, out: record("residual", out)))
    hooks.append(prior.norm.register_forward_hook(lambda m, a, out: record("context", out)))
    hooks.append(prior.depth_mlp.register_forward_pre_hook(lambda m, a: record("context", a[0])))
    hooks.append(prior.depth_mlp.register_forward_hook(lambda m, a, out: record("context", out)))
    hooks.append(prior.depth_mlp[1].register_forward_hook(lambda m, a, out: record("gelu", out)))
    hooks.append(prior.out_norm.register_forward_pre_hook(lambda m, a: record("context", a[0])))
    try:
        for indices in batches:
            indices = indices if indices.dim() == 3 else indices[None]
            for chunk in indices.split(prior.context, dim=2):  # as files are coded
                for s in rates:
                    prior(chunk[:, :s])
    finally:
        for h in hooks:
            h.remove()
    if maxima["gelu"] * HEADROOM > ACT_MAX * pow2(-GELU_EXP):
        raise ValueError(f"MLP pre-activations up to {maxima['gelu']:.0f} exceed the integer "
                         f"GELU input range")
    return dict(maxima)
