"""Exactness of the integer arithmetic in `vqcodec.nn.fixed_point`."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vqcodec.nn import fixed_point as fp


def _ints(shape, bound, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-bound, bound + 1, shape, generator=g).to(torch.float64)


def test_pow2_is_exact():
    for k in range(-60, 60):
        assert fp.pow2(k) == 2.0 ** k == math.ldexp(1.0, k)
    assert fp.pow2_tensor([-3, 0, 5]).tolist() == [0.125, 1.0, 32.0]


def test_quantize_weight_bounds_and_error():
    w = torch.randn(16, 8, 3, 3)
    q, e = fp.quantize_weight(w)
    assert q.abs().max() <= fp.WEIGHT_MAX and q.abs().max() > fp.WEIGHT_MAX / 2
    assert torch.equal(q, q.round())
    assert (q * 2.0 ** -e - w.double()).abs().max() <= 2.0 ** (-e - 1) + 1e-12
    qc, ec = fp.quantize_weight(w, per_channel=True)
    assert ec.shape == (16,) and qc.reshape(16, -1).abs().amax(1).le(fp.WEIGHT_MAX).all()
    assert qc.reshape(16, -1).abs().amax(1).gt(fp.WEIGHT_MAX / 2).all()


def test_requantize_against_python_ints():
    acc = _ints((4000,), 2 ** 45, seed=1)
    acc[:6] = torch.tensor([0.0, -1.0, 1.0, 2.0 ** 9, -(2.0 ** 9), 2.0 ** 10 - 1])
    for shift in (-2, 0, 1, 10, 25):
        for rounding in (True, False):
            got = fp.requantize(acc, shift, rounding=rounding, act_max=None)
            for a, g in zip(acc.tolist()[:500], got.tolist()[:500]):
                a = int(a)
                if shift <= 0:
                    ref = a << -shift
                else:
                    ref = (a + (1 << (shift - 1) if rounding else 0)) >> shift  # floor
                assert int(g) == ref
    clamped = fp.requantize(acc, 1)
    assert clamped.abs().max() <= fp.ACT_MAX


def test_requantize_per_channel_matches_scalar():
    acc = _ints((2, 3, 5, 5), 2 ** 40, seed=2)
    shifts = torch.tensor([0, 7, 21])
    got = fp.requantize(acc, shifts, dim=1)
    for c, k in enumerate(shifts.tolist()):
        assert torch.equal(got[:, c], fp.requantize(acc[:, c], k))


def test_leaky_relu_exact():
    x = _ints((5000,), fp.ACT_MAX, seed=3)
    got = fp.leaky_relu(x)
    for a, g in zip(x.tolist()[:1000], got.tolist()[:1000]):
        a = int(a)
        assert int(g) == (a if a >= 0 else (a * 205) >> 10)


def test_floor_div_edges():
    big = 2.0 ** 53 - 1
    a = torch.tensor([0.0, 1.0, -1.0, 7.0, -7.0, big, -big, big - 1, 2.0 ** 52 + 1,
                      3.0 * (2 ** 50) - 1, 123456789012345.0], dtype=torch.float64)
    for b in (1.0, 2.0, 3.0, 7.0, -3.0, 2.0 ** 26 + 1, big, 2.0 ** 52 - 3):
        got = fp.floor_div(a, b)
        for x, q in zip(a.tolist(), got.tolist()):
            assert int(q) == int(x) // int(b), (x, b)
    # Random pairs near the limits, against Python ints.
    g = torch.Generator().manual_seed(4)
    a = torch.randint(-2 ** 52, 2 ** 52, (3000,), generator=g).double()
    b = torch.randint(1, 2 ** 30, (3000,), generator=g).double()
    got = fp.floor_div(a, b)
    assert all(int(q) == int(x) // int(y) for x, y, q in zip(a.tolist(), b.tolist(), got.tolist()))


def test_isqrt_edges():
    ns = [0, 1, 2, 3, 4, 15, 16, 17, 2 ** 52 - 1, 2 ** 51, (2 ** 26 - 1) ** 2,
          (2 ** 26 - 1) ** 2 - 1, (2 ** 26) ** 2 - 1, 4503599493152768]
    ns += [k * k + d for k in (3, 1000, 94906265, 67108863) for d in (-1, 0, 1) if k * k + d < 2 ** 52]
    got = fp.isqrt(torch.tensor(ns, dtype=torch.float64))
    assert [int(r) for r in got.tolist()] == [math.isqrt(n) for n in ns]
    g = torch.Generator().manual_seed(5)
    n = torch.randint(0, 2 ** 52, (5000,), generator=g).double()
    assert [int(r) for r in fp.isqrt(n).tolist()] == [math.isqrt(int(v)) for v in n.tolist()]
    with pytest.raises(ValueError):
        fp.isqrt(torch.tensor([-1.0]))


def _conv_pair(seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(32, 24, 3, padding=1)
    layer = fp.IntegerConv2d.from_float(conv, in_exp=12, out_exp=10)
    return conv, layer


def test_integer_conv_close_to_float_and_bounded():
    conv, layer = _conv_pair()
    x = torch.randn(2, 32, 9, 11)
    xi = fp.quantize_to_exponent(x, 12)
    with fp.exact_mode():
        yi = layer(xi)
        y = conv(x)
    assert torch.equal(yi, yi.round()) and yi.abs().max() <= fp.ACT_MAX
    assert (yi * 2.0 ** -10 - y.double()).abs().max() < 2e-3


def test_integer_conv_exact_under_order_batch_threads():
    conv, layer = _conv_pair(1)
    x = fp.clamp_activation(_ints((3, 32, 13, 7), fp.ACT_MAX, seed=6))
    with fp.exact_mode():
        ref = layer.accumulate(x)
        # Batch: one by one equals all at once; a different crop of the same input as well.
        assert torch.equal(torch.cat([layer.accumulate(x[i:i + 1]) for i in range(3)]), ref)
        # Summation order: permuting input channels (with the weights) gives the same sums.
        perm = torch.randperm(32)
        perm_layer = fp.IntegerConv2d(32, 24, 3, padding=1)
        perm_layer.weight.copy_(layer.weight[:, perm])
        perm_layer.bias.copy_(layer.bias)
        assert torch.equal(perm_layer.accumulate(x[:, perm]), ref)
        # Through im2col + matmul, in reverse order, in Python ints.
        cols = torch.nn.functional.unfold(x, 3, padding=1)  # [B, C*9, L]
        wmat = layer.weight.reshape(24, -1)
        alt = (wmat.flip(1) @ cols.flip(1)) + layer.bias[None, :, None]
        assert torch.equal(alt.reshape(ref.shape), ref)
        for b, o, pos in [(0, 0, 0), (2, 23, 50), (1, 7, 90)]:
            col = [int(v) for v in cols[b, :, pos].tolist()]
            w = [int(v) for v in wmat[o].tolist()]
            exact = sum(p * q for p, q in zip(w, col)) + int(layer.bias[o])
            assert int(ref.view(3, 24, -1)[b, o, pos]) == exact
        # Thread counts.
        threads = torch.get_num_threads()
        try:
            for n in (1, 2, 3):
                torch.set_num_threads(n)
                assert torch.equal(layer.accumulate(x), ref)
        finally:
            torch.set_num_threads(threads)
        # float32 of the same conv would not be exact: make sure we never run it.
        assert ref.dtype == torch.float64


def test_integer_linear():
    torch.manual_seed(2)
    lin = nn.Linear(40, 10)
    layer = fp.IntegerLinear.from_float(lin, in_exp=14, out_exp=12)
    x = torch.randn(5, 40)
    y = layer(fp.quantize_to_exponent(x, 14)) * 2.0 ** -12
    assert (y - lin(x).double()).abs().max() < 1e-3
    xi = _ints((7, 40), fp.ACT_MAX, seed=7)
    assert torch.equal(layer(xi), torch.cat([layer(xi[i:i + 1]) for i in range(7)]))


def test_fan_in_check():
    with pytest.raises(ValueError):
        fp.check_accumulator(2 ** 20, fp.WEIGHT_MAX)
    fp.check_accumulator(128 * 9, fp.WEIGHT_MAX)


def test_exp_table():
    table = fp.ExpTable(precision=16, logit_exp=4)
    c = table.counts
    assert c[0] == 2 ** 16 and c.min() == 1 and (c[1:] <= c[:-1]).all() and c[-1] == 1
    logits = torch.tensor([[0.0, -16.0, -32.0, -100000.0], [5.0, 5.0, 4.0, 3.0]], dtype=torch.float64)
    counts = table(logits)
    assert counts[0, 0] == 2 ** 16 and counts[0, 3] == 1
    assert counts[0, 1] == round(2 ** 16 * math.exp(-1))
    assert counts[1, 0] == counts[1, 1] == 2 ** 16
    p = fp.ExpTable.probabilities(counts)
    assert torch.allclose(p.sum(1), torch.ones(2, dtype=torch.float64))
    # Round trip through the state dict (the table is what the model file holds).
    other = fp.ExpTable(precision=16, logit_exp=4)
    other.load_state_dict(table.state_dict())
    assert torch.equal(other.counts, table.counts)
