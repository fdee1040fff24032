"""Exact integer audio prior (IntegerFramePrior) and its codec on a tiny model: exact round
trips, frame-by-frame walk == parallel forward to the bit, the same count tables under other
CPU kernels and thread counts, corrupted payloads, save/load."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vqcodec.coding import file_codec
from vqcodec.coding.frame_codec import FrameByFrameCodec, IntegerFrameCodec
from vqcodec.errors import CorruptPayloadError
from vqcodec.nn.integer_frame_prior import (IntegerFramePrior, _isqrt, _round_div,
                                             integer_layer_norm)
from vqcodec.nn.fixed_point import DTYPE, floor_div, isqrt

from conftest import TINY_AUDIO_CONFIG

K, CONTEXT = TINY_AUDIO_CONFIG.num_codes, TINY_AUDIO_CONFIG.prior_context


def random_indices(channels: int, stages: int, frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, K, (channels, stages, frames), generator=g)


def walk_counts(prior: IntegerFramePrior, indices: torch.Tensor) -> torch.Tensor:
    """Counts [S', F, K] of one channel's indices [S', F] by the coder's frame-by-frame walk."""
    s, f = indices.shape
    out = torch.empty(s, f, prior.num_codes, dtype=DTYPE)
    stream = None
    for t in range(f):
        if t % prior.context == 0:
            stream = prior.new_stream(s)
        prior.begin_frame(stream)
        for k in range(s):
            out[k, t] = torch.from_numpy(prior.stage_counts(stream)[0])
            prior.push(stream, int(indices[k, t]))
    return out


def test_file_codec_is_integer_and_portable(tiny_integer_audio_model, tiny_audio_model):
    codec = file_codec(tiny_integer_audio_model.model)
    assert isinstance(codec, IntegerFrameCodec) and codec.portable
    assert not file_codec(tiny_audio_model.model).portable


@pytest.mark.parametrize("channels,stages,frames", [(1, 1, 1), (1, 4, 30), (2, 3, 25)])
def test_round_trip_exact(tiny_integer_audio_model, channels, stages, frames):
    """Random indices survive, across chunk borders (context 12 frames)."""
    codec = file_codec(tiny_integer_audio_model.model)
    idx = random_indices(channels, stages, frames, seed=frames)
    coded = codec.compress(idx)
    assert torch.equal(codec.decompress(coded.payload, channels, stages, frames), idx)
    assert coded.payload_bits >= coded.nll_bits - 1


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_walk_equals_parallel_forward(tiny_integer_audio_model, stages):
    """The decoder's walk (KV cache, one stage at a time) gives the very integers of the
    teacher-forced parallel pass the encoder uses, over several chunks."""
    codec = file_codec(tiny_integer_audio_model.model)
    idx = random_indices(1, stages, 2 * CONTEXT + 5, seed=stages)
    assert torch.equal(walk_counts(codec.prior, idx[0]), codec.tables(idx)[0])


def test_tables_independent_of_batch(tiny_integer_audio_model):
    prior = tiny_integer_audio_model.model.integer_prior
    idx = random_indices(3, 4, CONTEXT, seed=7)
    together = prior.counts(idx)
    for b in range(3):
        assert torch.equal(prior.counts(idx[b:b + 1])[0], together[b])
        assert torch.equal(prior.counts(idx[b:b + 1, :, :5])[0], together[b, :, :5])  # causal


def test_counts_are_integers_at_least_one(tiny_integer_audio_model):
    counts = file_codec(tiny_integer_audio_model.model).tables(random_indices(1, 4, 20))
    assert torch.equal(counts, counts.floor()) and bool((counts >= 1).all())
    assert float(counts.max()) <= 2 ** 20


def test_forward_nll_equals_coder_nll(tiny_integer_audio_model):
    codec = file_codec(tiny_integer_audio_model.model)
    idx = random_indices(1, 4, CONTEXT, seed=3)
    bits = -float(codec.forward(idx).sum())
    assert codec.compress(idx).nll_bits == pytest.approx(bits, rel=1e-9)


def test_integer_prior_close_to_float(tiny_integer_audio_model):
    """The conversion keeps the float prior's likelihoods (a loose check on a random model)."""
    net = tiny_integer_audio_model.model
    idx = random_indices(1, 4, CONTEXT, seed=5)
    with torch.no_grad():
        float_bits = -float(FrameByFrameCodec(prior=net.prior).forward(idx).sum())
    integer_bits = -float(file_codec(net).forward(idx).sum())
    assert integer_bits == pytest.approx(float_bits, rel=0.01)


def test_integer_layer_norm_matches_float():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 64, generator=g, dtype=DTYPE) * 3 + 1
    xi = torch.round(x * 2 ** 12).numpy()
    y = torch.from_numpy(integer_layer_norm(xi, round(1e-5 * 2 ** 24)) * 2.0 ** -14)
    assert torch.allclose(y, torch.nn.functional.layer_norm(x, (64,)), atol=1e-3)


def test_lean_division_and_sqrt_are_exact():
    """The layer norm's positive-divisor rounding division and square root agree with
    fixed_point's corrected floor_div/isqrt, near 2^52 and at exact multiples and squares."""
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-2 ** 50, 2 ** 50, (20000,), generator=g).to(DTYPE)
    b = torch.randint(1, 2 ** 30, (20000,), generator=g).to(DTYPE)
    a[:100] = b[:100] * torch.arange(100, dtype=DTYPE) + torch.floor(b[:100] / 2)  # ties
    lean = torch.from_numpy(_round_div(a.numpy(), b.numpy()))
    assert torch.equal(lean, floor_div(2 * a + b, 2 * b))
    r = torch.randint(0, 2 ** 26, (20000,), generator=g).to(DTYPE)
    big = torch.randint(0, 2 ** 52, (20000,), generator=g).to(DTYPE)
    n = torch.cat([r * r, r * r - 1, r * r + r, big]).clamp(min=0)
    assert torch.equal(torch.from_numpy(_isqrt(n.numpy())), isqrt(n))


def test_corrupted_payload(tiny_integer_audio_model):
    """A damaged payload raises CorruptPayloadError or decodes to other valid indices (the
    container's index check catches those); never a crash or an out-of-range index."""
    codec = file_codec(tiny_integer_audio_model.model)
    idx = random_indices(1, 3, 20, seed=11)
    payload = bytearray(codec.compress(idx).payload)
    for cut in (payload[:-4], payload[:5], payload + b"\xff\xff\xff\xff"):
        try:
            back = codec.decompress(bytes(cut), 1, 3, 20)
        except CorruptPayloadError:
            continue
        assert back.shape == idx.shape and 0 <= int(back.min()) and int(back.max()) < K
    payload[len(payload) // 2] ^= 0x5A
    try:
        back = codec.decompress(bytes(payload), 1, 3, 20)
        assert back.shape == idx.shape and int(back.max()) < K
    except CorruptPayloadError:
        pass


def test_save_load_keeps_integer_prior_exact(tiny_integer_audio_model, tmp_path):
    from conftest import make_tiny_integer_audio_model
    from vqcodec.zoo.registry import load_model, save_model

    original = make_tiny_integer_audio_model().integer_prior
    loaded = tiny_integer_audio_model.model.integer_prior
    assert loaded.config_dict() == original.config_dict()
    ref = original.state_dict()
    for name, value in loaded.state_dict().items():
        assert torch.equal(value.to(ref[name].dtype), ref[name]), name
    idx = random_indices(1, 4, 2 * CONTEXT, seed=13)
    assert torch.equal(IntegerFrameCodec(prior=original).tables(idx),
                       IntegerFrameCodec(prior=loaded).tables(idx))
    # Saving the loaded model again gives the same tensors.
    path = tmp_path / "again.safetensors"
    save_model(tiny_integer_audio_model.model, path, name="again", qualities=[1, 2, 4],
               default_quality=2)
    again = load_model(str(path)).model.integer_prior
    assert torch.equal(IntegerFrameCodec(prior=again).tables(idx),
                       IntegerFrameCodec(prior=loaded).tables(idx))


CHILD = r"""
import hashlib, sys, torch
from vqcodec.zoo.registry import load_model
from vqcodec.coding import file_codec
model_path, indices_path, payload_path = sys.argv[1:4]
codec = file_codec(load_model(model_path).model)
idx = torch.load(indices_path)
tables = codec.tables(idx)
coded = codec.compress(idx)
back = codec.decompress(open(payload_path, "rb").read(), *idx.shape)
print(hashlib.sha256(tables.numpy().tobytes()).hexdigest(),
      hashlib.sha256(coded.payload).hexdigest(), bool(torch.equal(back, idx)))
"""

# The integer prior runs on numpy, whose OpenBLAS picks its kernel per CPU (DYNAMIC_ARCH):
# OPENBLAS_CORETYPE=Prescott forces the SSE3 one, as an old CPU would get.
KERNEL_SETTINGS = [{"ONEDNN_MAX_CPU_ISA": "SSE41"}, {"ATEN_CPU_CAPABILITY": "default"},
                   {"OMP_NUM_THREADS": "1"},
                   {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"},
                   {"OPENBLAS_CORETYPE": "Prescott"}]


def test_tables_identical_across_kernels(tiny_integer_audio_model_path, tmp_path):
    """Encode and decode in subprocesses under other CPU kernels (oneDNN, ATen, OpenBLAS) and
    thread counts: the count tables and payload are the same bytes, and the parent's payload
    decodes everywhere."""
    from vqcodec.zoo.registry import load_model

    codec = file_codec(load_model(tiny_integer_audio_model_path).model)
    idx = random_indices(2, 4, CONTEXT + 7, seed=17)
    torch.save(idx, tmp_path / "idx.pt")
    coded = codec.compress(idx)
    (tmp_path / "payload").write_bytes(coded.payload)
    expected = (hashlib.sha256(codec.tables(idx).numpy().tobytes()).hexdigest(),
                hashlib.sha256(coded.payload).hexdigest(), "True")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    root = Path(__file__).resolve().parent.parent
    procs = []
    for setting in KERNEL_SETTINGS:
        env = {**os.environ, "PYTHONPATH": str(root), **setting}
        procs.append(subprocess.Popen(
            [sys.executable, str(script), tiny_integer_audio_model_path, str(tmp_path / "idx.pt"),
             str(tmp_path / "payload")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    for setting, proc in zip(KERNEL_SETTINGS, procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert tuple(out.split()) == expected, setting
