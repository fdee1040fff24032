"""Portable files across CPU kernels: one box stands in for several machines by choosing other
kernels (an older ISA for oneDNN, ATen's scalar code path, other thread counts). Under each,
a subprocess writes the golden input's file and decodes a file written under the defaults.

File bytes, indices, count tables, a batch of two and the decoded indices must be identical
everywhere. The decoder networks stay float, so decoded output may differ by rounding: at most
1 level of 8 bits per pixel and 1e-4 of full scale per sample (measured: 1 level, 3.1e-5)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vqcodec.zoo.registry import DEFAULT_AUDIO_MODEL, DEFAULT_IMAGE_MODEL, shipped_models

WORKER = Path(__file__).resolve().parent / "kernel_worker.py"
SETTINGS = {
    "sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "1-thread": {"OMP_NUM_THREADS": "1"},
    "2-threads": {"OMP_NUM_THREADS": "2"},
}
MAX_PIXEL_DIFFERENCE = 1
MAX_SAMPLE_DIFFERENCE = 1e-4


def run_worker(models: list[str], out: Path, env: dict, reference: Path | None = None) -> list:
    out.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, str(WORKER), str(out), str(reference or "-"), *models]
    result = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def models(tiny_integer_model_path, tiny_integer_grouped_model_path,
           tiny_integer_audio_model_path) -> list[str]:
    """Tiny integer models of each kind, and the shipped defaults."""
    for name in (DEFAULT_IMAGE_MODEL, DEFAULT_AUDIO_MODEL):
        assert name in shipped_models(), f"default model {name} is not shipped"
    return [tiny_integer_model_path, tiny_integer_grouped_model_path,
            tiny_integer_audio_model_path, DEFAULT_IMAGE_MODEL, DEFAULT_AUDIO_MODEL]


def test_same_tables_and_indices_across_kernels(models, tmp_path):
    """One subprocess per kernel setting codes every model (torch starts once per setting)."""
    default = run_worker(models, tmp_path / "default", {})
    base = run_worker(models, tmp_path / "default-decode", {}, tmp_path / "default")
    for i, found in enumerate(base):
        assert found["decoded_indices"] == default[i]["indices"], models[i]
    wants = [np.load(tmp_path / "default-decode" / f"{i}.npy") for i in range(len(models))]
    for name, env in SETTINGS.items():
        got = run_worker(models, tmp_path / name, env, tmp_path / "default")
        for i, model in enumerate(models):
            assert got[i] == base[i], f"{model} under {name}: {got[i]} != {base[i]}"
            out, want = np.load(tmp_path / name / f"{i}.npy"), wants[i]
            assert out.shape == want.shape
            diff = np.abs(out.astype(np.float64) - want.astype(np.float64)).max()
            limit = MAX_PIXEL_DIFFERENCE if want.dtype == np.uint8 else MAX_SAMPLE_DIFFERENCE
            assert diff <= limit, f"{model} under {name}: decoded output differs by {diff}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("model", [DEFAULT_IMAGE_MODEL, DEFAULT_AUDIO_MODEL])
def test_cuda_encode_decodes_on_cpu(model):
    """The autoencoder on CUDA, the tables always on the CPU: a file written with
    --device cuda decodes on the CPU to the same indices, and vice versa."""
    from kernel_worker import indices_of
    from make_golden import golden_inputs
    from vqcodec.pipelines.audio import compress_audio, decompress_audio
    from vqcodec.pipelines.image import compress_image, decompress_image
    from vqcodec.zoo.registry import load_model

    image, clip = golden_inputs()
    for encode_on, decode_on in (("cuda", "cpu"), ("cpu", "cuda")):
        loaded = load_model(model, device=encode_on)
        if loaded.kind == "image":
            data = compress_image(image, model=loaded, device=encode_on).data
            decompress_image(data, model=load_model(model, device=decode_on), device=decode_on)
        else:
            data = compress_audio(clip, model=loaded, device=encode_on).data
            decompress_audio(data, model=load_model(model, device=decode_on), device=decode_on)
        indices_of(data, load_model(model, device=decode_on))  # raises on any mismatch
