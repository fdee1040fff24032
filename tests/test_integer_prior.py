"""The exact integer image prior: round trips, NLL, batch independence, cross-kernel tables,
corrupted payloads, save/load."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import integerize_tiny, make_tiny_model
from vqcodec.coding import file_codec
from vqcodec.coding.latent_codec import IntegerStageCodec, StageByStageCodec
from vqcodec.errors import CorruptPayloadError
from vqcodec.nn.integer_prior import IntegerStagePrior
from vqcodec.zoo.registry import load_model, save_model

MODELS = ["tiny_integer_model", "tiny_integer_grouped_model"]


def _indices(loaded, seed=0, batch=1, size=(64, 48)):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, *size, generator=g)
    n, lam = loaded.rate_for_quality(loaded.ladder_qualities)
    return loaded.model.encode(x, n, lam)


@pytest.fixture(params=MODELS)
def model(request):
    return request.getfixturevalue(request.param)


def test_file_codec_is_integer_and_portable(model):
    codec = file_codec(model.model)
    assert isinstance(codec, IntegerStageCodec) and codec.portable
    assert not StageByStageCodec.portable


def test_round_trip_exact(model):
    codec = file_codec(model.model)
    for seed in range(2):
        idx = _indices(model, seed)[0]
        coded = codec.compress(idx)
        assert torch.equal(codec.decompress(coded.payload, idx.shape[0], *idx.shape[-2:]), idx)
        assert coded.payload_bits <= 1.1 * coded.nll_bits + 64


def test_forward_nll_equals_coder_nll(model):
    codec = file_codec(model.model)
    idx = _indices(model, 1)
    coded = codec.compress(idx[0])
    bits = -float(codec.forward(idx).sum())
    assert bits == pytest.approx(coded.nll_bits, rel=1e-9)


def test_forward_batch_equals_one_by_one(model):
    codec = file_codec(model.model)
    idx = _indices(model, 2, batch=2)
    both = codec.forward(idx)
    assert torch.equal(both, torch.cat([codec.forward(idx[i:i + 1]) for i in range(2)]))
    stages = torch.tensor([1, 2])
    assert torch.equal(codec.forward(idx, stages), both[:, 1:3])
    # The walk's tables are those of teacher forcing, whatever the torch thread count.
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = codec.tables(idx[0])
        torch.set_num_threads(2)
        assert all(torch.equal(a, b) for a, b in zip(one, codec.tables(idx[0])))
    finally:
        torch.set_num_threads(threads)


def test_integer_close_to_float(model):
    """Post-training conversion costs (much) less than 1% bits on the tiny models."""
    from vqcodec.coding import latent_codec
    idx = _indices(model, 3, batch=2)
    with torch.no_grad():
        f = -float(latent_codec(model.model).forward(idx).double().sum())
    i = -float(file_codec(model.model).forward(idx).sum())
    assert abs(i / f - 1) < 0.01


SCRIPT = r"""
import hashlib, json, sys, torch
from vqcodec.zoo.registry import load_model
from vqcodec.coding import file_codec
out = {}
for path in sys.argv[1:]:
    loaded = load_model(path)
    codec = file_codec(loaded.model)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 48, generator=g)
    n, lam = loaded.rate_for_quality(loaded.ladder_qualities)
    idx = loaded.model.encode(x, n, lam)
    h = hashlib.sha256()
    for t in codec.tables(idx[0]):
        h.update(t.numpy().tobytes())
    for t in (codec.forward(idx), codec.forward(idx[1:])):
        h.update(t.numpy().tobytes())
    coded = codec.compress(idx[0])
    back = codec.decompress(coded.payload, idx.shape[1], *idx.shape[-2:])
    out[path] = [h.hexdigest(), hashlib.sha256(coded.payload).hexdigest(),
                 hashlib.sha256(idx.numpy().tobytes()).hexdigest(), bool(torch.equal(back, idx[0]))]
print(json.dumps(out))
"""

KERNELS = [{}, {"ONEDNN_MAX_CPU_ISA": "SSE41"}, {"ATEN_CPU_CAPABILITY": "default"},
           {"OMP_NUM_THREADS": "1"}, {"OMP_NUM_THREADS": "2"}]


def test_tables_identical_across_kernels(tiny_integer_model_path, tiny_integer_grouped_model_path):
    """Count tables, payloads and indices are the same under other CPU kernels and thread
    counts (one subprocess per setting, run side by side)."""
    paths = [tiny_integer_model_path, tiny_integer_grouped_model_path]
    root = Path(__file__).resolve().parent.parent
    procs = []
    for extra in KERNELS:
        env = {k: v for k, v in os.environ.items()
               if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS")}
        env.update(extra)
        env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
        procs.append(subprocess.Popen([sys.executable, "-c", SCRIPT, *paths], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for extra, p in zip(KERNELS, procs):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, (extra, err[-2000:])
        results.append(json.loads(out.strip().splitlines()[-1]))
    for extra, r in zip(KERNELS, results):
        assert r == results[0], extra
    assert all(v[3] for v in results[0].values())


def test_corrupted_payload(model):
    codec = file_codec(model.model)
    idx = _indices(model, 4)[0]
    payload = bytearray(codec.compress(idx).payload)
    g = torch.Generator().manual_seed(0)
    for trial in range(12):
        bad = bytearray(payload)
        for pos in torch.randint(0, len(bad), (3,), generator=g).tolist():
            bad[pos] ^= 0xFF
        if trial == 11:
            bad = bytearray(b"\x01\x02\x03")  # not a multiple of 4 bytes
        try:
            out = codec.decompress(bytes(bad), idx.shape[0], *idx.shape[-2:])
        except CorruptPayloadError:
            continue
        assert out.shape == idx.shape and 0 <= int(out.min()) and int(out.max()) < \
            model.model.quantizer.num_codes


def test_save_load_bit_exact(tmp_path):
    net = integerize_tiny(make_tiny_model(1))
    path = tmp_path / "m.safetensors"
    save_model(net, path, name="t", qualities=[1, 2, 3, 4], default_quality=2)
    loaded = load_model(str(path))
    a, b = net.integer_prior.state_dict(), loaded.model.integer_prior.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert loaded.model.integer_prior.config_dict() == json.loads(
        json.dumps(net.integer_prior.config_dict()))
    again = IntegerStagePrior.from_config(net.integer_prior.config_dict())
    again.load_state_dict(a)
    idx = _indices(loaded, 5)[0]
    codec = IntegerStageCodec(prior=again, quantizer=net.quantizer)
    assert codec.compress(idx).payload == file_codec(loaded.model).compress(idx).payload


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tables_equal_cpu(model):
    import copy
    cpu = file_codec(model.model)
    gpu = IntegerStageCodec(prior=copy.deepcopy(cpu.prior).cuda(), quantizer=cpu.quantizer)
    idx = _indices(model, 6, batch=2)
    assert all(torch.equal(a, b) for a, b in zip(cpu.tables(idx[0]), gpu.tables(idx[0])))
    assert torch.equal(cpu.forward(idx), gpu.forward(idx.cuda()).cpu())
    assert gpu.compress(idx[0]).payload == cpu.compress(idx[0]).payload


@pytest.mark.parametrize("size", [(3, 5), (15, 15), (16, 17), (21, 34)])
def test_pass_features_equal_full_features(model, size):
    """The walk's shortcuts (coarse part of the stem computed once, constant first pass on a
    small grid, last conv and head at the pass positions only) give the same integers as the
    whole-grid features, with and without coarse and visible inputs."""
    from vqcodec.coding.context import pass_masks
    prior = file_codec(model.model).prior
    h, w = size
    g = torch.Generator().manual_seed(h * w)
    big = 2 ** prior.in_exp
    for with_coarse in (False, True):
        coarse = (torch.randint(-big, big, (1, prior.dim, h, w), generator=g).double()
                  if with_coarse else torch.zeros(1, prior.dim, h, w, dtype=torch.float64))
        for mask in pass_masks(prior.schedule, h, w):
            for seen in (False, True):
                visible = ((~mask).double() if seen else torch.zeros(h, w).double())[None, None]
                current = torch.randint(-big, big, (1, prior.dim, h, w), generator=g).double()
                current = current * visible
                for stage in range(prior.num_stages):
                    st = torch.tensor([stage])
                    full = prior.features(coarse, current, visible, st)[0][mask]
                    fast = prior.pass_features(prior.coarse_accumulator(coarse), current,
                                               visible, st, mask)
                    assert torch.equal(fast, full)
