"""The audio model: encoder, residual quantizer, decoder and the frame prior over code indices."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .audio_autoencoder import AudioAutoencoderConfig, AudioDecoder, AudioEncoder
from .audio_prior import FramePrior
from .rvq import ResidualQuantizer


@dataclass(frozen=True)
class AudioModelConfig:
    autoencoder: AudioAutoencoderConfig = field(default_factory=AudioAutoencoderConfig)
    num_stages: int = 16
    num_codes: int = 1024
    min_dropout_stages: int = 1
    prior_width: int = 192
    prior_depth: int = 4
    prior_heads: int = 4
    prior_context: int = 375  # frames per coded chunk (5 s at 75 Hz)

    @property
    def hop(self) -> int:
        return self.autoencoder.hop

    @property
    def sample_rate(self) -> int:
        return self.autoencoder.sample_rate

    @property
    def bits_per_code(self) -> float:
        return math.log2(self.num_codes)

    def kbps(self, num_stages: int) -> float:
        """Bitrate before entropy coding when `num_stages` stages are coded."""
        return num_stages * self.bits_per_code * self.autoencoder.frame_rate / 1000

    def to_dict(self) -> dict:
        d = asdict(self)
        d["autoencoder"] = self.autoencoder.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AudioModelConfig":
        d = dict(d)
        ae = {k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("autoencoder").items()}
        return cls(autoencoder=AudioAutoencoderConfig(**ae), **d)


class VQAudioModel(nn.Module):
    """Mono waveform [B, 1, T] in [-1, 1] (T a multiple of `hop`) <-> indices [B, S, T / hop]."""

    kind = "audio"

    def __init__(self, config: AudioModelConfig) -> None:
        super().__init__()
        self.config = config
        # The exact integer prior that codes files, when the model file has one (set by
        # the zoo or by `vqcodec train integerize`); `prior` stays the float one for training.
        self.integer_prior: nn.Module | None = None
        self.encoder = AudioEncoder(config.autoencoder)
        self.decoder = AudioDecoder(config.autoencoder)
        self.quantizer = ResidualQuantizer(
            dim=config.autoencoder.latent_dim, num_stages=config.num_stages,
            num_codes=config.num_codes, min_dropout_stages=config.min_dropout_stages)
        self.prior = FramePrior(
            num_stages=config.num_stages, num_codes=config.num_codes, width=config.prior_width,
            depth=config.prior_depth, heads=config.prior_heads, context=config.prior_context)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: returns (reconstruction, indices [B, S, F], commitment loss)."""
        # The quantizer works on grids [B, D, H, W]: audio is a 1 x F grid.
        zq, indices, commit = self.quantizer(self.encoder(x)[:, :, None])
        return self.decoder(zq[:, :, 0]), indices[:, :, 0], commit

    @torch.no_grad()
    def encode(self, x: torch.Tensor, num_stages: int | None = None) -> torch.Tensor:
        return self.quantizer.encode(self.encoder(x)[:, :, None], num_stages)[:, :, 0]

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.decode(indices[:, :, None])[:, :, 0]).clamp(-1, 1)
