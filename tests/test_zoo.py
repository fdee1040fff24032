"""The zoo's model files: an integer prior is stored exactly (and compactly)."""
from __future__ import annotations

import json

import numpy as np
import torch
from safetensors import safe_open

from vqcodec.zoo.registry import INTEGER_PREFIX, load_model, save_model


def test_integer_prior_round_trips_exactly_and_compactly(tmp_path, rng):
    from conftest import TINY_GROUPED_QUALITIES, make_tiny_grouped_model
    from vqcodec.train.integerize import integerize_model

    float_path = tmp_path / "float.safetensors"  # a model of its own: integerizing changes it
    save_model(make_tiny_grouped_model(), float_path, name="tiny-int",
               qualities=TINY_GROUPED_QUALITIES, default_quality=2)
    images = [(rng.random((32, 48, 3)) * 255).astype(np.uint8) for _ in range(2)]
    net = integerize_model(load_model(str(float_path)), images=images)
    path = tmp_path / "int.safetensors"
    save_model(net, path, name="tiny-int", qualities=TINY_GROUPED_QUALITIES, default_quality=2)
    loaded = load_model(str(path))
    want = net.integer_prior.state_dict()
    got = loaded.model.integer_prior.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert want[key].dtype == got[key].dtype and torch.equal(want[key], got[key]), key
    with safe_open(str(path), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys() if k.startswith(INTEGER_PREFIX)}
        meta = json.loads(f.metadata()["vqcodec"])
    assert "I16" in dtypes  # 15-bit integer weights take 2 bytes in the file
    assert meta["integer_prior"] == net.integer_prior.config_dict()
