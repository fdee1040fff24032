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


def test_a_prior_alone_loads_onto_its_shipped_model(tmp_path, monkeypatch,
                                                   tiny_integer_grouped_model_path):
    """`save_model(..., prior_of=M)` writes the priors only; loading takes every other weight
    from the shipped M, checked by its weights hash, and the model codes as a whole file."""
    import shutil

    from conftest import TINY_GROUPED_QUALITIES
    from vqcodec.errors import ModelError
    from vqcodec.zoo import registry
    shipped = tmp_path / "weights"
    shipped.mkdir()
    shutil.copy(tiny_integer_grouped_model_path, shipped / "tiny-int-grouped.safetensors")
    monkeypatch.setattr(registry, "WEIGHTS_DIR", shipped)
    monkeypatch.setattr(registry, "_CACHE", {})
    base = load_model("tiny-int-grouped")
    net = load_model(tiny_integer_grouped_model_path).model  # a second copy, changed below
    with torch.no_grad():
        net.integer_prior.code_bias.add_(1.0)
    whole, alone = tmp_path / "whole.safetensors", tmp_path / "alone.safetensors"
    for path, prior_of in ((whole, None), (alone, base)):
        save_model(net, path, name="tiny-fast", qualities=TINY_GROUPED_QUALITIES,
                   default_quality=3, prior_of=prior_of)
    assert alone.stat().st_size < whole.stat().st_size
    with safe_open(str(alone), "pt") as f:
        assert all(k.startswith(("prior.", INTEGER_PREFIX)) for k in f.keys())
    a, w = load_model(str(alone)), load_model(str(whole))
    assert a.name == "tiny-fast" and a.weights_hash != base.weights_hash
    for key, value in w.model.state_dict().items():
        assert torch.equal(a.model.state_dict()[key], value), key
    indices = torch.zeros(1, 2, 4, 4, 4, dtype=torch.long)  # [B, R, G, H, W]
    from vqcodec.coding import file_codec
    assert (file_codec(a.model).compress(indices[0], stream_per_stage=True).streams
            == file_codec(w.model).compress(indices[0], stream_per_stage=True).streams)
    # A prior of another model's weights is refused, at writing and at loading.
    other = tmp_path / "weights" / "tiny-int-grouped.safetensors"
    changed = load_model(tiny_integer_grouped_model_path).model
    with torch.no_grad():
        next(p for k, p in changed.named_parameters() if not k.startswith("prior.")).add_(1.0)
    save_model(changed, tmp_path / "changed.safetensors", name="tiny-int-grouped",
               qualities=TINY_GROUPED_QUALITIES, default_quality=3)
    try:
        save_model(changed, tmp_path / "bad.safetensors", name="x",
                   qualities=TINY_GROUPED_QUALITIES, default_quality=3, prior_of=base)
        raise AssertionError("a prior of another model was written")
    except ModelError as e:
        assert "not a prior of it" in str(e)
    shutil.copy(tmp_path / "changed.safetensors", other)  # the shipped base changes
    monkeypatch.setattr(registry, "_CACHE", {})
    try:
        load_model(str(alone))
        raise AssertionError("a prior loaded onto another model")
    except ModelError as e:
        assert "is a prior of model 'tiny-int-grouped'" in str(e)
