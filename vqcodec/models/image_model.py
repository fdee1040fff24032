"""The image model: encoder, residual quantizer, decoder and the prior over code indices."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .image_autoencoder import ImageAutoencoderConfig, ImageDecoder, ImageEncoder
from .prior import StagePrior
from .quantization import ResidualQuantizer


@dataclass(frozen=True)
class ImageModelConfig:
    autoencoder: ImageAutoencoderConfig = field(default_factory=ImageAutoencoderConfig)
    num_stages: int = 24
    num_codes: int = 256
    min_dropout_stages: int = 2
    prior_width: int = 96
    prior_depth: int = 3
    schedule: str = "checkerboard"

    @property
    def stride(self) -> int:
        return self.autoencoder.stride

    @property
    def bits_per_code(self) -> float:
        return math.log2(self.num_codes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["autoencoder"] = self.autoencoder.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ImageModelConfig":
        d = dict(d)
        ae = {k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("autoencoder").items()}
        return cls(autoencoder=ImageAutoencoderConfig(**ae), **d)


# What `vqcodec train image-autoencoder` starts a new run with: the vqimage-v2 recipe. (The
# dataclass defaults stay as they were, because model files written before a field existed
# rely on them.)
NEW_RUN_CONFIG = ImageModelConfig(
    autoencoder=ImageAutoencoderConfig(latent_dim=128, linear_path=True), num_stages=24)


class VQImageModel(nn.Module):
    """RGB image in [0, 1] <-> residual-VQ indices [B, S, H/stride, W/stride], plus their prior."""

    kind = "image"

    def __init__(self, config: ImageModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ImageEncoder(config.autoencoder)
        self.decoder = ImageDecoder(config.autoencoder)
        self.quantizer = ResidualQuantizer(
            dim=config.autoencoder.latent_dim, num_stages=config.num_stages,
            num_codes=config.num_codes, min_dropout_stages=config.min_dropout_stages)
        self.prior = StagePrior(
            dim=config.autoencoder.latent_dim, num_stages=config.num_stages,
            num_codes=config.num_codes, width=config.prior_width, depth=config.prior_depth,
            schedule=config.schedule)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: returns (reconstruction, indices, commitment loss)."""
        zq, indices, commit = self.quantizer(self.encoder(x))
        return self.decoder(zq), indices, commit

    @torch.no_grad()
    def encode(self, x: torch.Tensor, num_stages: int | None = None) -> torch.Tensor:
        return self.quantizer.encode(self.encoder(x), num_stages)

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.decode(indices)).clamp(0, 1)
