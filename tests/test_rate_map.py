"""A post-filter that reads the quantizer's rate map (vqimage-v3r): the map, the decoder's
extra inputs, starting a filter run from a shipped-style model and exporting it back."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import (TINY_GROUPED_CONFIG, TINY_GROUPED_QUALITIES, integerize_tiny,
                      make_image_folder, make_tiny_grouped_model)
from vqcodec.cli.main import cli
from vqcodec.nn.image_model import VQImageModel
from vqcodec.pipelines.image import compress_image, decompress_image, indices_to_image
from vqcodec.zoo.registry import load_model, save_model

RATE_CONFIG = dataclasses.replace(TINY_GROUPED_CONFIG, autoencoder=dataclasses.replace(
    TINY_GROUPED_CONFIG.autoencoder, rate_channels=TINY_GROUPED_CONFIG.num_groups))


def test_rate_map_is_the_fraction_of_rounds_with_a_nonzero_code():
    q = make_tiny_grouped_model().quantizer  # 3 rounds, 4 groups
    indices = torch.zeros(1, 2, 4, 1, 2, dtype=torch.long)  # two of the three rounds coded
    indices[0, 0, 1, 0, 0] = 5
    indices[0, 1, 1, 0, 0] = 2
    indices[0, 1, 3, 0, 1] = 7
    expected = torch.zeros(1, 4, 1, 2)
    expected[0, 1, 0, 0], expected[0, 3, 0, 1] = 2 / 3, 1 / 3
    assert torch.equal(q.rate_map(indices), expected)


def test_a_rate_decoder_needs_its_map_and_a_config_one_channel_per_group():
    model = VQImageModel(RATE_CONFIG).eval()
    z = torch.zeros(1, RATE_CONFIG.autoencoder.latent_dim, 2, 2)
    with pytest.raises(ValueError, match="rate map"):
        model.decoder(z)
    with pytest.raises(ValueError, match="one channel per quantizer group"):
        VQImageModel(dataclasses.replace(RATE_CONFIG, autoencoder=dataclasses.replace(
            RATE_CONFIG.autoencoder, rate_channels=3)))


def _rate_model(tmp_path, seed: int = 0):
    """The tiny grouped integer model with a rate-reading filter whose map weights are not
    zero, saved and loaded."""
    base = make_tiny_grouped_model(seed)
    model = VQImageModel(RATE_CONFIG)
    state = base.state_dict()
    first = state.pop("decoder.net.0.weight")
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        torch.manual_seed(seed)
        model.decoder.net[0].weight.copy_(torch.randn_like(model.decoder.net[0].weight) * 0.3)
        model.decoder.net[0].weight[:, :first.shape[1]] = first
        model.decoder.net[-2].weight.add_(0.1)  # so the filter's output is not zero
    model = integerize_tiny(model.eval(), TINY_GROUPED_QUALITIES)
    path = tmp_path / "rate.safetensors"
    save_model(model, path, name="tiny-rate", qualities=TINY_GROUPED_QUALITIES,
               default_quality=3)
    return load_model(str(path))


def test_rate_filter_model_round_trips_and_decodes_in_bands_as_whole(tmp_path, rng):
    loaded = _rate_model(tmp_path)
    assert loaded.model.config.autoencoder.rate_channels == 4
    image = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    r = compress_image(image, model=loaded, quality=3, device="cpu")
    out = decompress_image(r.data, model=loaded, device="cpu")
    assert out.shape == image.shape
    net = loaded.model
    indices = net.encode(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, None,
                         loaded.rate_for_quality(3)[1])[0]
    whole = indices_to_image(net, indices, 3, 48, 80, torch.device("cpu"))
    banded = indices_to_image(net, indices, 3, 48, 80, torch.device("cpu"), band_rows=1)
    assert np.abs(whole.astype(int) - banded.astype(int)).max() <= 1
    # The map matters: the same latents without it (zeros) give another picture.
    zq = net.quantizer.decode(indices[None])
    without = net.decoder(zq, torch.zeros_like(net.rate_map(indices[None])))
    assert not torch.allclose(without, net.reconstruct(indices[None]))


def test_filter_run_from_a_model_starts_as_it_and_exports_its_streams(tmp_path, rng):
    """`image-filter --from-model` then `export-filter`: at step 0 the pictures are the
    base model's; after training the files' payloads are still byte for byte the base's
    (same indices, same integer prior), and only the pictures differ."""
    base_net = integerize_tiny(make_tiny_grouped_model(), TINY_GROUPED_QUALITIES)
    base_path = tmp_path / "base.safetensors"
    save_model(base_net, base_path, name="tiny-base", qualities=TINY_GROUPED_QUALITIES,
               default_quality=3)
    data = make_image_folder(tmp_path / "imgs", rng)
    run = tmp_path / "run"
    from vqcodec.errors import TrainingError
    from vqcodec.train.image import start_filter_run, train_decoder_filter
    start_filter_run(str(run), str(base_path))
    with pytest.raises(TrainingError, match="already has a state"):
        start_filter_run(str(run), str(base_path))
    start = tmp_path / "start.safetensors"
    r = CliRunner().invoke(cli, ["train", "export-filter", str(run), str(start), "--base",
                                 str(base_path), "--name", "tiny-start"])
    assert r.exit_code == 0, r.output
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    base = load_model(str(base_path))
    started = load_model(str(start))
    a = compress_image(image, model=base, quality=2, device="cpu")
    b = compress_image(image, model=started, quality=2, device="cpu")
    assert a.data[-a.payload_bytes:] == b.data[-b.payload_bytes:]
    pa = decompress_image(a.data, model=base, device="cpu").astype(int)
    pb = decompress_image(b.data, model=started, device="cpu").astype(int)
    assert np.abs(pa - pb).max() <= 1  # float16 weights, the same filter

    train_decoder_filter(run=str(run), train=[data], val=[data], minutes=5,
                         rd_lambdas=[0.01, 0.05], batch=2, crop=32, val_crop=64, max_steps=3,
                         lr=1e-2)
    trained = tmp_path / "trained.safetensors"
    r = CliRunner().invoke(cli, ["train", "export-filter", str(run), str(trained), "--base",
                                 str(base_path), "--name", "tiny-trained"])
    assert r.exit_code == 0, r.output
    model = load_model(str(trained))
    assert model.training["filter_steps"] == 3 and model.training["filter_base"] == "tiny-base"
    c = compress_image(image, model=model, quality=2, device="cpu")
    assert c.data[-c.payload_bytes:] == a.data[-a.payload_bytes:]
    pc = decompress_image(c.data, model=model, device="cpu").astype(int)
    assert np.abs(pc - pa).max() > 1
    # A run is not exported over another base.
    other = tmp_path / "other.safetensors"
    save_model(integerize_tiny(make_tiny_grouped_model(1), TINY_GROUPED_QUALITIES), other,
               name="tiny-other", qualities=TINY_GROUPED_QUALITIES, default_quality=3)
    r = CliRunner().invoke(cli, ["train", "export-filter", str(run), str(tmp_path / "x.st"),
                                 "--base", str(other), "--name", "x"])
    assert r.exit_code == 1 and r.output.startswith("error: ") and "not" in r.output
    assert not (tmp_path / "x.st").exists()
