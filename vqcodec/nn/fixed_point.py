"""Exact integer arithmetic for probability tables (Ballé, Johnston, Minnen, ICLR 2019,
"Integer networks for data compression with latent-variable models"; post-training conversion).

Every value here is an integer held in a float64 tensor. float64 represents every integer
below 2^53 exactly, and the sum or product of two such integers is exact as long as the result
stays below 2^53; so a matmul or convolution over integers whose every partial sum stays below
2^53 gives the same result in any summation order, with or without FMA, at any thread count,
batch shape or vector width, on any IEEE-754 machine (CPU or CUDA). The bounds that guarantee
it:

- activations are clamped to |a| <= ACT_MAX = 2^20 - 1 (`clamp_activation`);
- weights are quantized to |w| <= WEIGHT_MAX = 2^14 (15 bits with sign) with a power-of-two
  exponent per layer or per output channel (`quantize_weight`);
- layers check at construction that fan_in * ACT_MAX * max|w| + max|bias| < 2^53
  (`check_accumulator`).

Scales are powers of two only: a real value x is represented by the integer round(x * 2^e),
e its exponent. Requantizing an accumulator to another exponent multiplies by an exactly built
power of two (`pow2`, from `math.ldexp`; never `pow` of floats), then floors and clamps
(`requantize`). Leaky ReLU multiplies negatives by 205/1024 (~0.2) as an integer multiply and
a shift-floor (`leaky_relu`). `floor_div` and `isqrt` are integer division and square root with
an integer correction step after the (correctly rounded) float operation. `ExpTable` turns
integer logits into integer counts by a table lookup: no transcendental function runs at coding
time.

On CUDA, run the layers inside `exact_mode()` (cuDNN off, so no FFT/Winograd algorithm; float64
never uses TF32).

Public API (shared by the image prior, `integer_prior.py`, and the audio prior):
    ACT_BITS, ACT_MAX, WEIGHT_BITS, WEIGHT_MAX, EXACT_LIMIT
    pow2, pow2_tensor, exact_mode, check_accumulator, check_exact
    quantize_weight, quantize_to_exponent, activation_exponent
    clamp_activation, requantize, leaky_relu, floor_div, isqrt
    IntegerConv2d, IntegerLinear, ExpTable
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACT_BITS = 20
ACT_MAX = 2 ** ACT_BITS - 1       # |activation| <= ACT_MAX
WEIGHT_BITS = 15
WEIGHT_MAX = 2 ** (WEIGHT_BITS - 1)  # |weight| <= WEIGHT_MAX
EXACT_LIMIT = 2 ** 53              # every integer below this is exact in float64

DTYPE = torch.float64

# Leaky ReLU slope 0.2 as 205 / 2^10 (0.2002).
LEAKY_NUM, LEAKY_SHIFT = 205, 10


def pow2(k: int) -> float:
    """2^k as a float, built exactly (`math.ldexp`)."""
    return math.ldexp(1.0, int(k))


def pow2_tensor(exponents: Sequence[int] | torch.Tensor, device=None) -> torch.Tensor:
    """float64 tensor of 2^k for each integer k, built exactly element by element."""
    if isinstance(exponents, torch.Tensor):
        shape = exponents.shape
        exponents = exponents.reshape(-1).tolist()
    else:
        exponents = list(exponents)
        shape = (len(exponents),)
    return torch.tensor([pow2(int(k)) for k in exponents], dtype=DTYPE,
                        device=device).reshape(shape)


def shift_factors(shifts: Sequence[int] | torch.Tensor | np.ndarray,
                  device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(2^-k, rounding offset 2^(k-1) for k > 0 else 0) for integer right shifts k, as float64
    tensors shaped as `shifts`, each built exactly (`pow2`): floor((acc + offset) * factor) is
    acc shifted right by k, rounded half up."""
    shape = tuple(np.shape(shifts))
    flat = [int(k) for k in np.asarray(shifts).reshape(-1)]
    scale = torch.tensor([pow2(-k) for k in flat], dtype=DTYPE, device=device)
    offset = torch.tensor([pow2(k - 1) if k > 0 else 0.0 for k in flat], dtype=DTYPE,
                          device=device)
    return scale.reshape(shape), offset.reshape(shape)


@contextmanager
def exact_mode():
    """No-grad, cuDNN off (no FFT/Winograd convolution algorithms, no TF32): the context to
    run integer layers in. On the CPU float64 convolutions never use oneDNN/Winograd."""
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=False):
        yield


def check_exact(bound: float, what: str = "accumulator") -> None:
    """Raise ValueError unless `bound` (an upper bound of |partial sums|) is below 2^53."""
    if not bound < EXACT_LIMIT:
        raise ValueError(f"{what} may reach {bound:.3g} >= 2^53: integer sums would not be exact")


def check_accumulator(fan_in: int, weight_max: float, bias_max: float = 0.0,
                      act_max: float = ACT_MAX, what: str = "layer") -> None:
    """Check that a layer with `fan_in` inputs of |a| <= act_max, weights |w| <= weight_max and
    bias |b| <= bias_max keeps every partial sum (and the rounding offset) below 2^53."""
    check_exact(fan_in * act_max * weight_max + bias_max + 2.0 ** 40, f"{what} accumulator")


def quantize_to_exponent(x: torch.Tensor, exponent: int | torch.Tensor) -> torch.Tensor:
    """round(x * 2^exponent) as float64 integers (conversion time only). `exponent` is an int
    or a tensor broadcasting against x."""
    x = x.detach().to(DTYPE)
    scale = (pow2(exponent) if isinstance(exponent, int)
             else pow2_tensor(exponent, device=x.device))
    return torch.round(x * scale)


def quantize_weight(w: torch.Tensor, *, per_channel: bool = False,
                    bits: int = WEIGHT_BITS) -> tuple[torch.Tensor, int | torch.Tensor]:
    """Weights -> (integers W with |W| <= 2^(bits-1), exponent e) so that w ~ W * 2^-e.

    The exponent is the largest that keeps |W| within range: one for the whole tensor, or with
    `per_channel` one per slice of dim 0 (output channel), returned as an int64 tensor.
    """
    limit = 2 ** (bits - 1)
    w = w.detach().to(DTYPE)
    if per_channel:
        m = w.reshape(len(w), -1).abs().amax(1).tolist()
        exps = torch.tensor([_largest_exponent(v, limit) for v in m], dtype=torch.int64)
        q = quantize_to_exponent(w, exps.view(-1, *([1] * (w.dim() - 1))))
        return q.clamp(-limit, limit), exps
    e = _largest_exponent(float(w.abs().max()) if w.numel() else 0.0, limit)
    return quantize_to_exponent(w, e).clamp(-limit, limit), e


def _largest_exponent(max_abs: float, limit: float) -> int:
    """Largest e with round(max_abs * 2^e) <= limit (0 for an all-zero tensor)."""
    if max_abs == 0.0:
        return 0
    e = math.floor(math.log2(limit / max_abs))
    while round(max_abs * pow2(e)) > limit:
        e -= 1
    while round(max_abs * pow2(e + 1)) <= limit:
        e += 1
    return e


def activation_exponent(max_abs: float, headroom: float = 4.0, act_max: int = ACT_MAX) -> int:
    """Exponent e for an activation whose calibrated max |value| is `max_abs`: the largest with
    max_abs * headroom * 2^e <= act_max (values beyond are clamped)."""
    return _largest_exponent(max(max_abs, 1e-12) * headroom, act_max)


def clamp_activation(x: torch.Tensor, act_max: int = ACT_MAX) -> torch.Tensor:
    return x.clamp(-act_max, act_max)


def requantize(acc: torch.Tensor, shift: int | torch.Tensor, *, dim: int = 1,
               rounding: bool = True, act_max: int | None = ACT_MAX,
               overwrite: bool = False) -> torch.Tensor:
    """Integer accumulator -> activation: floor((acc [+ 2^(shift-1)]) * 2^-shift), clamped.

    Args:
        acc: float64 integers (|acc| + 2^(shift-1) < 2^53).
        shift: right shift in bits (negative: left shift), an int, or an int64 tensor [C] of
            one shift per channel of dimension `dim`.
        rounding: add half a step before flooring (round half up) when shifting right.
        act_max: clamp bound (None: no clamp).
        overwrite: `acc` is a temporary of the caller's: computed in place in it (the same
            operations in the same order, so the same integers, without three temporaries).
    """
    if isinstance(shift, torch.Tensor):
        view = [1] * acc.dim()
        view[dim] = -1
        scale, offset = shift_factors(shift.cpu().reshape(-1), device=acc.device)
        offset, scale = offset.view(view), scale.view(view)
    else:
        shift = int(shift)
        offset, scale = pow2(shift - 1) if shift > 0 else 0.0, pow2(-shift)
    if not overwrite:
        acc = acc.clone()
    if rounding:
        acc.add_(offset)
    acc.mul_(scale).floor_()
    return acc if act_max is None else acc.clamp_(-act_max, act_max)


def leaky_relu(x: torch.Tensor, num: int = LEAKY_NUM, shift: int = LEAKY_SHIFT) -> torch.Tensor:
    """Integer leaky ReLU: x for x >= 0, floor(x * num / 2^shift) for x < 0 (exact for
    |x| * num < 2^53; default slope 205/1024 ~ 0.2).

    Computed as max(x, floor(x * (num / 2^shift))) for num < 2^shift: for an integer x >= 0
    the floor is at most x, for x <= -1 it is at least x. One multiply by the exact constant
    num / 2^shift gives the exact x * num / 2^shift (an integer below 2^53 scaled by a power
    of two), so the values are those of the two-step form."""
    if not 0 <= num < 2 ** shift:
        return torch.where(x >= 0, x, torch.floor((x * num) * pow2(-shift)))
    low = (x * (num * pow2(-shift))).floor_()
    return torch.maximum(x, low, out=low)


def floor_div(a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    """Exact floor(a / b) of float64 integers (|a|, |b| < 2^53, b != 0): the float quotient,
    floored, then corrected by one step so that q*b <= a < (q+1)*b (b > 0) or the mirror
    (b < 0)."""
    a = a.to(DTYPE)
    b = torch.as_tensor(b, dtype=DTYPE, device=a.device)
    sign = torch.where(b < 0, -1.0, 1.0).to(DTYPE)
    a, b = a * sign, b * sign  # b > 0 from here; floor(a/b) is unchanged
    q = torch.floor(a / b)
    r = a - q * b
    q = q - (r < 0).to(DTYPE) + (r >= b).to(DTYPE)
    r = a - q * b
    q = q - (r < 0).to(DTYPE) + (r >= b).to(DTYPE)
    return q


def isqrt(n: torch.Tensor) -> torch.Tensor:
    """Exact floor(sqrt(n)) of float64 integers 0 <= n < 2^52: the correctly rounded float
    square root, floored, then corrected so that r*r <= n < (r+1)*(r+1)."""
    if bool((n < 0).any()):
        raise ValueError("isqrt of a negative number")
    r = torch.floor(torch.sqrt(n))
    for _ in range(2):
        r = r - (r * r > n).to(DTYPE)
        r = r + ((r + 1) * (r + 1) <= n).to(DTYPE)
    return r


def compact_integers(t: torch.Tensor) -> torch.Tensor:
    """A float64 tensor of integers as the smallest of int16/int32/int64 that holds it (for
    model files: the values, and so their float64 form after loading, are unchanged)."""
    if t.dtype != DTYPE or not t.numel():
        return t
    m = float(t.abs().max())
    if not torch.equal(t, t.round()):
        raise ValueError("not an integer tensor")
    for dtype, bound in ((torch.int16, 2 ** 15), (torch.int32, 2 ** 31)):
        if m < bound:
            return t.to(dtype)
    return t.to(torch.int64)


class CompactState:
    """Mixin for integer modules: their float64 integer buffers go into state dicts (and so
    model files) as int16/int32/int64 (`compact_integers`); loading copies them back into the
    float64 buffers exactly."""

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name, buf in self._buffers.items():
            key = prefix + name
            if buf is not None and key in destination:
                destination[key] = compact_integers(buf.detach())


class _IntegerLayer(CompactState, nn.Module):
    """Integer weights and bias (float64 buffers), a per-output-channel right shift (int64)
    from the accumulator to the output activation, and a clamp to ACT_MAX."""

    def _init(self, weight: torch.Tensor, bias: torch.Tensor, shift: torch.Tensor) -> None:
        self.register_buffer("weight", weight.to(DTYPE))
        self.register_buffer("bias", bias.to(DTYPE))
        self.register_buffer("shift", shift.to(torch.int64))

    @staticmethod
    def _convert(weight: torch.Tensor, bias: torch.Tensor | None, in_exp: int, out_exp: int):
        """Quantize float (weight, bias) for inputs of exponent in_exp and outputs of out_exp."""
        w_int, w_exp = quantize_weight(weight, per_channel=True)
        acc_exp = in_exp + w_exp  # exponent of each output channel's accumulator
        b = torch.zeros(len(weight), dtype=DTYPE) if bias is None else bias.detach().to(DTYPE)
        b_int = quantize_to_exponent(b, acc_exp)
        return w_int, b_int, acc_exp - out_exp

    @property
    def acc_exponent_offset(self) -> torch.Tensor:
        """shift = accumulator exponent - output exponent, per output channel."""
        return self.shift

    def check(self) -> None:
        fan_in = self.weight[0].numel()
        check_accumulator(fan_in, float(self.weight.abs().max()),
                          float(self.bias.abs().max()) if self.bias.numel() else 0.0,
                          what=type(self).__name__)

    def _finish(self, acc: torch.Tensor, dim: int, extra: torch.Tensor | None) -> torch.Tensor:
        # acc is the layer's own fresh accumulator: requantized in place.
        if extra is not None:
            acc = acc.add_(extra)
        return requantize(acc, self.shift, dim=dim, overwrite=True)


class IntegerConv2d(_IntegerLayer):
    """Integer 2-D convolution (stride 1, zero padding): float64 integers in and out.

    `from_float(conv, in_exp, out_exp)` converts an `nn.Conv2d` for inputs round(x * 2^in_exp)
    and outputs round(y * 2^out_exp).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 padding: int = 0) -> None:
        super().__init__()
        self.padding = padding
        self._init(torch.zeros(out_channels, in_channels, kernel_size, kernel_size),
                   torch.zeros(out_channels), torch.zeros(out_channels, dtype=torch.int64))

    @classmethod
    def from_float(cls, conv: nn.Conv2d, in_exp: int, out_exp: int) -> "IntegerConv2d":
        out_c, in_c, k, _ = conv.weight.shape
        layer = cls(in_c, out_c, k, padding=int(conv.padding[0]))
        w, b, shift = cls._convert(conv.weight, conv.bias, in_exp, out_exp)
        layer.weight.copy_(w), layer.bias.copy_(b), layer.shift.copy_(shift)
        layer.check()
        return layer

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        """The exact integer accumulator [B, C, H, W] (bias included, not requantized)."""
        return F.conv2d(x, self.weight, self.bias, padding=self.padding)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C_in, H, W] -> requantized [B, C_out, H, W]; `extra` (accumulator units,
        broadcasting, e.g. [B, C_out, 1, 1]) is added before requantizing."""
        return self._finish(self.accumulate(x), 1, extra)


class IntegerLinear(_IntegerLayer):
    """Integer linear layer over the last dimension: float64 integers in and out."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self._init(torch.zeros(out_features, in_features), torch.zeros(out_features),
                   torch.zeros(out_features, dtype=torch.int64))

    @classmethod
    def from_float(cls, linear: nn.Linear, in_exp: int, out_exp: int) -> "IntegerLinear":
        layer = cls(linear.in_features, linear.out_features)
        w, b, shift = cls._convert(linear.weight, linear.bias, in_exp, out_exp)
        layer.weight.copy_(w), layer.bias.copy_(b), layer.shift.copy_(shift)
        layer.check()
        return layer

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        return self._finish(self.accumulate(x), -1, extra)


class ExpTable(CompactState, nn.Module):
    """Integer logits -> integer counts, by table lookup (no exp at coding time).

    A logit L is an integer in units of 2^-logit_exp nats. For a row of logits, with
    d = max(row) - L (clamped to the table length - 1), count = counts[d], where
    counts[d] = max(1, round(2^precision * exp(-d / 2^logit_exp))). The table is stored in the
    model file (a buffer), so coding never evaluates exp; every count is >= 1.

    Args:
        precision: log2 of the largest count (count of the most likely symbol).
        logit_exp: logits are in units of 2^-logit_exp nats.
    """

    def __init__(self, precision: int = 22, logit_exp: int = 8) -> None:
        super().__init__()
        self.precision, self.logit_exp = precision, logit_exp
        # Past d_max every count would round below 1.
        d_max = math.ceil((precision + 1) * math.log(2) * 2 ** logit_exp) + 1
        d = torch.arange(d_max + 1, dtype=DTYPE)
        counts = torch.round(pow2(precision) * torch.exp(-d * pow2(-logit_exp))).clamp(min=1)
        self.register_buffer("counts", counts)

    def config_dict(self) -> dict:
        return {"precision": self.precision, "logit_exp": self.logit_exp}

    def forward(self, logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Counts (float64 integers >= 1) of integer logits, rows along `dim`."""
        d = (logits.amax(dim, keepdim=True) - logits).clamp_(0, len(self.counts) - 1)
        return torch.take(self.counts, d.to(torch.int64))  # a plain gather: 2x indexing's speed

    @staticmethod
    def probabilities(counts: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """counts / sum: the sum is exact (< 2^53) and the division correctly rounded, so the
        result is bit-identical on every IEEE-754 machine."""
        return counts / counts.sum(dim, keepdim=True)
