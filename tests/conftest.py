"""Shared fixtures: a tiny random-weight model (no training, no ../shared data needed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vqcodec.nn.audio_autoencoder import AudioAutoencoderConfig
from vqcodec.nn.audio_model import AudioModelConfig, VQAudioModel
from vqcodec.nn.image_autoencoder import ImageAutoencoderConfig
from vqcodec.nn.image_model import ImageModelConfig, VQImageModel
from vqcodec.zoo.registry import load_model, save_model

TINY_CONFIG = ImageModelConfig(
    autoencoder=ImageAutoencoderConfig(latent_dim=4, widths=(8, 8, 8), encoder_blocks=(1, 0, 0),
                                       decoder_blocks=(1, 0, 0)),
    num_stages=4, num_codes=16, min_dropout_stages=1, prior_width=8, prior_depth=1)


def make_tiny_model(seed: int = 0) -> VQImageModel:
    torch.manual_seed(seed)
    model = VQImageModel(TINY_CONFIG)
    with torch.no_grad():
        for s, vq in enumerate(model.quantizer.stages):
            vq.codebook.copy_(torch.randn_like(vq.codebook) * 0.5 ** s)
            vq.initialized.fill_(True)
        for p in model.prior.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(make_tiny_model(), path, name="tiny-test", qualities=[1, 2, 3, 4], default_quality=3)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    return load_model(tiny_model_path)


TINY_GROUPED_CONFIG = ImageModelConfig(
    autoencoder=ImageAutoencoderConfig(latent_dim=8, widths=(8, 8, 8), encoder_blocks=(1, 0, 0),
                                       decoder_blocks=(1, 0, 0), linear_path=True,
                                       encoder_conv=False),
    num_stages=3, num_groups=4, num_codes=8, prior_width=8, prior_depth=1)
TINY_GROUPED_QUALITIES = [[1, 0.0], [2, 0.05], [3, 0.01], [3, 0.0]]


def make_tiny_grouped_model(seed: int = 0) -> VQImageModel:
    """The vqimage-v3 design in miniature: a random block transform, grouped codebooks whose
    code 0 is zero (smaller each round), a random prior."""
    torch.manual_seed(seed)
    model = VQImageModel(TINY_GROUPED_CONFIG)
    with torch.no_grad():
        q = model.quantizer
        q.codebooks.copy_(torch.randn_like(q.codebooks)
                          * 0.5 ** torch.arange(q.num_stages)[:, None, None, None])
        q.codebooks[:, :, 0] = 0
        q.code_bits.copy_(torch.rand_like(q.code_bits) * 4)
        for p in model.prior.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_grouped_model_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("models") / "tiny-grouped.safetensors"
    save_model(make_tiny_grouped_model(), path, name="tiny-grouped",
               qualities=TINY_GROUPED_QUALITIES, default_quality=3)
    return str(path)


@pytest.fixture(scope="session")
def tiny_grouped_model(tiny_grouped_model_path):
    return load_model(tiny_grouped_model_path)


TINY_AUDIO_CONFIG = AudioModelConfig(
    autoencoder=AudioAutoencoderConfig(sample_rate=8000, latent_dim=4, fold=4, ratios=(2, 5),
                                       widths=(4, 4, 8), dilations=(1,)),
    num_stages=4, num_codes=16, prior_width=8, prior_depth=1, prior_heads=2, prior_context=12)


def make_tiny_audio_model(seed: int = 0) -> VQAudioModel:
    """Random weights; codebooks set so every stage matters; hop 40 at 8 kHz (200 frames/s)."""
    torch.manual_seed(seed)
    model = VQAudioModel(TINY_AUDIO_CONFIG)
    with torch.no_grad():
        for s, vq in enumerate(model.quantizer.stages):
            vq.codebook.copy_(torch.randn_like(vq.codebook) * 0.5 ** s)
            vq.initialized.fill_(True)
        for p in model.prior.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_audio_model_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("models") / "tiny_audio.safetensors"
    save_model(make_tiny_audio_model(), path, name="tiny-audio", qualities=[1, 2, 4],
               default_quality=2)
    return str(path)


@pytest.fixture(scope="session")
def tiny_audio_model(tiny_audio_model_path):
    return load_model(tiny_audio_model_path)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def integerize_tiny(model, qualities=None, seed: int = 0):
    """Give a tiny image model its exact integer prior, calibrated on a few random images."""
    from vqcodec.train.integerize import integerize_image_model
    g = torch.Generator().manual_seed(seed)
    rates = qualities or [model.config.num_stages]
    calibration = []
    for _ in range(3):
        x = torch.rand(1, 3, 64, 48, generator=g)
        for r in rates:
            n, lam = (r[0], r[1]) if isinstance(r, list) else (r, 0.0)
            calibration.append(model.encode(x, n, lam))
    return integerize_image_model(model, calibration)


@pytest.fixture(scope="session")
def tiny_integer_model_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("models") / "tiny-int.safetensors"
    save_model(integerize_tiny(make_tiny_model()), path, name="tiny-int",
               qualities=[1, 2, 3, 4], default_quality=3)
    return str(path)


@pytest.fixture(scope="session")
def tiny_integer_model(tiny_integer_model_path):
    return load_model(tiny_integer_model_path)


@pytest.fixture(scope="session")
def tiny_integer_grouped_model_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("models") / "tiny-int-grouped.safetensors"
    save_model(integerize_tiny(make_tiny_grouped_model(), TINY_GROUPED_QUALITIES), path,
               name="tiny-int-grouped", qualities=TINY_GROUPED_QUALITIES, default_quality=3)
    return str(path)


@pytest.fixture(scope="session")
def tiny_integer_grouped_model(tiny_integer_grouped_model_path):
    return load_model(tiny_integer_grouped_model_path)


def make_tiny_integer_audio_model(seed: int = 0) -> VQAudioModel:
    """The tiny audio model with an exact integer prior (calibrated on random index
    sequences: any calibration gives an exact prior, only its rate depends on it)."""
    from vqcodec.nn.integer_frame_prior import IntegerFramePrior

    model = make_tiny_audio_model(seed)
    g = torch.Generator().manual_seed(seed)
    config = TINY_AUDIO_CONFIG
    calibration = [torch.randint(0, config.num_codes, (2, config.num_stages, config.prior_context),
                                 generator=g) for _ in range(2)]
    model.integer_prior = IntegerFramePrior.from_float(model.prior, calibration)
    return model


@pytest.fixture(scope="session")
def tiny_integer_audio_model_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("models") / "tiny_integer_audio.safetensors"
    save_model(make_tiny_integer_audio_model(), path, name="tiny-integer-audio",
               qualities=[1, 2, 4], default_quality=2)
    return str(path)


@pytest.fixture(scope="session")
def tiny_integer_audio_model(tiny_integer_audio_model_path):
    return load_model(tiny_integer_audio_model_path)


# Small shared test inputs.
def smooth_image(rng, h: int, w: int) -> np.ndarray:
    """A smooth RGB pattern with noise, uint8 [h, w, 3]."""
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = 128 + 90 * np.sin(xx / 7)[..., None] * np.cos(yy / 5)[..., None]
    return (smooth + rng.normal(0, 8, (h, w, 3))).clip(0, 255).astype(np.uint8)


def make_image_folder(path, rng, n: int = 3, size=(80, 96)) -> str:
    """A new folder of n PNG patterns of `size` (h, w), named 0.png ...; returns its path."""
    from PIL import Image
    path.mkdir()
    for i in range(n):
        yy, xx = np.mgrid[0:size[0], 0:size[1]]
        img = (128 + 90 * np.sin(xx / (5 + i))[..., None] * np.cos(yy / 7)[..., None]
               + rng.normal(0, 10, (*size, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(path / f"{i}.png")
    return str(path)


def chunk_ends(data: bytes) -> list[int]:
    """Where each chunk of a version-3 file ends (after its CRC), read from the layout."""
    from vqcodec.format import unpack_container
    _, chunks = unpack_container(data)
    pos = len(data) - sum(len(c) + 8 for c in chunks)
    ends = []
    for chunk in chunks:
        pos += 8 + len(chunk)
        ends.append(pos)
    return ends


def make_clip_folder(path) -> str:
    """A new folder of three 2-second 8 kHz WAV tones with noise (0.wav ...); returns its path."""
    import soundfile
    path.mkdir()
    g = np.random.default_rng(0)
    for i in range(3):
        t = np.arange(16000) / 8000
        soundfile.write(path / f"{i}.wav", 0.3 * np.sin(2 * np.pi * (200 + 90 * i) * t)
                        + 0.02 * g.standard_normal(t.size), 8000)
    return str(path)


def assert_one_line_error(result, pattern: str) -> None:
    """A click result that failed with exit 1 and exactly one 'error: ...' line holding pattern."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], lines
    assert "Traceback" not in result.output


@pytest.fixture(scope="session")
def shipped():
    """The default shipped image model."""
    return load_model("vqimage-v3i")
