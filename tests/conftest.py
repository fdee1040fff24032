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
