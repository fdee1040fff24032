"""Sampling from the prior: indices drawn in the codec's own order from its own tables, seeded,
then decoded (`vqcodec sample`)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vqcodec.cli.main import cli
from vqcodec.coding import file_codec
from vqcodec.coding.sampling import TableSampler
from vqcodec.errors import InputError
from vqcodec.pipelines.sample import parse_size, sample_audio, sample_image


def test_sampler_draws_from_the_table():
    table = np.array([[0.1, 0.2, 0.7, 0.0], [0.0, 0.0, 0.0, 1.0]])
    draws = np.stack([TableSampler(seed)(table) for seed in range(4000)])
    assert np.all(draws[:, 1] == 3) and not np.any(draws[:, 0] == 3)  # zero stays impossible
    freq = np.bincount(draws[:, 0], minlength=4) / len(draws)
    assert np.allclose(freq, table[0], atol=0.025)
    # Temperature 0.5 squares the probabilities (then renormalises).
    sharp = np.stack([TableSampler(seed, 0.5)(table) for seed in range(4000)])[:, 0]
    want = table[0] ** 2 / (table[0] ** 2).sum()
    assert np.allclose(np.bincount(sharp, minlength=4) / len(sharp), want, atol=0.025)
    with pytest.raises(ValueError):
        TableSampler(0, 0.0)


def test_sampler_is_seeded():
    table = np.full((50, 8), 1 / 8)
    assert np.array_equal(TableSampler(3)(table), TableSampler(3)(table))
    assert not np.array_equal(TableSampler(3)(table), TableSampler(4)(table))


def test_image_sampling_walks_the_codec_order(tiny_integer_grouped_model):
    """The sampler is handed, pass by pass, exactly the tables the codec codes the drawn
    indices with (the integer codec's `tables`, in stream order)."""
    codec = file_codec(tiny_integer_grouped_model.model)
    seen = []
    sampler = TableSampler(0)

    def draw(table):
        seen.append(table.copy())
        return sampler(table)

    indices = codec.sample(3, 2, 3, draw)
    assert indices.shape == (3, tiny_integer_grouped_model.model.config.num_groups, 2, 3)
    counts = codec.tables(indices)
    assert len(seen) == len(counts) == 3 * 2  # stages x checkerboard passes
    for table, c in zip(seen, counts):
        assert np.array_equal(table, (c / c.sum(1, keepdim=True)).numpy())


@pytest.mark.parametrize("model_fixture", ["tiny_integer_grouped_model", "tiny_model"])
def test_image_samples_are_reproducible(model_fixture, request):
    loaded = request.getfixturevalue(model_fixture)
    a = sample_image(24, 40, model=loaded, seed=0, device="cpu")
    b = sample_image(24, 40, model=loaded, seed=0, device="cpu")
    c = sample_image(24, 40, model=loaded, seed=1, device="cpu")
    assert a.decoded.shape == (24, 40, 3) and a.decoded.dtype == np.uint8
    assert torch.equal(a.indices, b.indices) and np.array_equal(a.decoded, b.decoded)
    assert not torch.equal(a.indices, c.indices)
    cold = sample_image(24, 40, model=loaded, seed=0, temperature=0.3, device="cpu")
    assert not torch.equal(a.indices, cold.indices)
    assert sample_image(24, 40, model=loaded, seed=0, stages=1, device="cpu").indices.shape[0] == 1


def test_audio_samples_are_reproducible(tiny_integer_audio_model):
    loaded = tiny_integer_audio_model
    a = sample_audio(0.1, model=loaded, seed=0, device="cpu")
    b = sample_audio(0.1, model=loaded, seed=0, device="cpu")
    c = sample_audio(0.1, model=loaded, seed=5, device="cpu")
    rate = loaded.model.config.sample_rate
    assert a.decoded.sample_rate == rate and a.decoded.samples.shape == (1, round(0.1 * rate))
    assert torch.equal(a.indices, b.indices) and not torch.equal(a.indices, c.indices)
    assert np.array_equal(a.decoded.samples, b.decoded.samples)


@pytest.mark.parametrize("kwargs,message", [
    ({"seed": -1}, "seed"), ({"temperature": 0.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"), ({"stages": 0}, "--stages must be 1 to"),
    ({"stages": 99}, "--stages must be 1 to"), ({"height": 0}, "height")])
def test_bad_sampling_options(tiny_model, kwargs, message):
    size = {"height": kwargs.pop("height", 16), "width": 16}
    with pytest.raises(InputError, match=message):
        sample_image(size["height"], size["width"], model=tiny_model, device="cpu", **kwargs)


def test_parse_size():
    assert parse_size("256x128") == (128, 256)
    for bad in ("256", "ax2", "1x2x3", "-1x4", ""):
        with pytest.raises(InputError, match="WIDTHxHEIGHT"):
            parse_size(bad)


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_same_seed_same_png_bytes(tiny_integer_grouped_model_path, tmp_path):
    outs = [tmp_path / f"{name}.png" for name in ("a", "b", "c")]
    for out, seed in zip(outs, (0, 0, 1)):
        result = _run("sample", "--model", tiny_integer_grouped_model_path, "--size", "40x24",
                      "--seed", seed, "-o", out, "--device", "cpu")
        assert result.exit_code == 0, result.output
        assert "40x24" in result.output
    assert outs[0].read_bytes() == outs[1].read_bytes() != outs[2].read_bytes()


def test_cli_audio_sample(tiny_integer_audio_model_path, tmp_path):
    out = tmp_path / "s.wav"
    result = _run("sample", "--model", tiny_integer_audio_model_path, "--seconds", 0.05,
                  "-o", out, "--device", "cpu")
    assert result.exit_code == 0, result.output and out.stat().st_size > 44


@pytest.mark.parametrize("args,message", [
    (("--stages", 0, "-o", "x.png"), "--stages must be 1 to"),
    (("--temperature", -1, "-o", "x.png"), "temperature"),
    (("--size", "big", "-o", "x.png"), "WIDTHxHEIGHT"),
    (("--seconds", 2, "-o", "x.png"), "--seconds is for audio"),
    (("--size", "8x8", "-o", "x.wav"), "--size is for images"),
    (("-o", "x.unknown"), "cannot write image format"),
])
def test_cli_errors_are_one_line_and_write_nothing(tiny_model_path, tmp_path, args, message):
    args = [tmp_path / a if isinstance(a, str) and a.startswith("x.") else a for a in args]
    result = _run("sample", "--model", tiny_model_path, *args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not list(tmp_path.iterdir())
