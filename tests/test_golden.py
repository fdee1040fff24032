"""Golden files: `.vqc` files written once by the shipped models (`tests/golden/make_golden.py`)
must decode on whatever machine runs the tests, to exactly the same indices. CI machines differ
from run to run (Intel AVX-512 one day, AMD AVX2 the next), so over time this is a real
cross-machine test, and it guards the format's stability.

The decoder networks stay float, so the decoded pixels and samples may differ across machines
by rounding: at most 1 level of 8 bits per pixel, and at most 4 steps of 16 bits per sample
(measured between CPU kernels: 1 level and 1 step)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from vqcodec.format import stage_payload, unpack_container
from vqcodec.pipelines.audio import decompress_audio
from vqcodec.pipelines.file import decode_indices
from vqcodec.pipelines.image import decompress_image
from vqcodec.zoo.registry import load_model, shipped_models

GOLDEN = Path(__file__).resolve().parent / "golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
MAX_PIXEL_LEVELS = 1
MAX_SAMPLE_STEPS = 4


def test_every_shipped_model_has_golden_files():
    assert {entry["model"] for entry in MANIFEST.values()} == set(shipped_models())


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_golden_file_decodes_to_the_same_indices(name):
    entry = MANIFEST[name]
    data = (GOLDEN / name).read_bytes()
    loaded = load_model(entry["model"])
    header, payload = unpack_container(data)
    assert header.portable, "shipped models write portable files"
    if loaded.kind == "image":
        shape = (header.num_stages, *header.latent_shape)
    else:
        shape = (header.latent_shape[0], header.num_stages, header.latent_shape[1])
    indices = decode_indices(header, loaded, stage_payload(header, payload), *shape)
    digest = hashlib.sha256(np.ascontiguousarray(indices.numpy(), dtype="<i4").tobytes())
    assert digest.hexdigest() == entry["indices_sha256"]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_golden_file_decodes_to_the_same_output(name):
    entry = MANIFEST[name]
    data = (GOLDEN / name).read_bytes()
    loaded = load_model(entry["model"])
    if loaded.kind == "image":
        got = decompress_image(data, model=loaded, device="cpu").astype(np.int16)
        want = np.asarray(Image.open(GOLDEN / entry["decoded"])).astype(np.int16)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= MAX_PIXEL_LEVELS
    else:
        clip = decompress_audio(data, model=loaded, device="cpu")
        want, rate = soundfile.read(GOLDEN / entry["decoded"], dtype="float32", always_2d=True)
        assert rate == clip.sample_rate and clip.samples.T.shape == want.shape
        # + half a step: the golden output was rounded to 16 bits when it was written
        assert np.abs(clip.samples.T - want).max() <= (MAX_SAMPLE_STEPS + 0.5) / 32768
