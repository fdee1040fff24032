"""The image model: encoder, residual quantizer, decoder and the prior over code indices."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .image_autoencoder import ImageAutoencoderConfig, ImageDecoder, ImageEncoder
from .grouped_rvq import GroupedResidualQuantizer
from .image_prior import GroupedStagePrior, StagePrior
from .rvq import ResidualQuantizer


@dataclass(frozen=True)
class ImageModelConfig:
    autoencoder: ImageAutoencoderConfig = field(default_factory=ImageAutoencoderConfig)
    num_stages: int = 24
    num_codes: int = 256
    min_dropout_stages: int = 2
    prior_width: int = 96
    prior_depth: int = 3
    schedule: str = "checkerboard"
    # 0: one residual quantizer over the whole latent vector (EMA codebooks, trained with the
    # autoencoder). G > 0: a GroupedResidualQuantizer of G groups with entropy-constrained
    # codebooks, num_stages rounds, trained offline (vqimage-v3).
    num_groups: int = 0
    # Grouped models: the encoder's rate weight per quality (latent units, see
    # GROUPED_RD_LAMBDAS); empty means GROUPED_RD_LAMBDAS (models written before this field).
    rd_lambdas: tuple[float, ...] = ()

    @property
    def stride(self) -> int:
        return self.autoencoder.stride

    @property
    def quality_lambdas(self) -> list[float]:
        """A grouped model's rate weight per quality, lowest rate first."""
        return list(self.rd_lambdas) or GROUPED_RD_LAMBDAS

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
        if "rd_lambdas" in d:
            d["rd_lambdas"] = tuple(d["rd_lambdas"])
        return cls(autoencoder=ImageAutoencoderConfig(**ae), **d)


# What `vqcodec train image-autoencoder` starts a new run with: the vqimage-v2 recipe. (The
# dataclass defaults stay as they were, because model files written before a field existed
# rely on them.)
NEW_RUN_CONFIG = ImageModelConfig(
    autoencoder=ImageAutoencoderConfig(latent_dim=128, linear_path=True), num_stages=24)


# The vqimage-v3 design: block PCA (16x16 RGB -> 128 components), 6 rounds x 16 groups of 8
# components, 256 entropy-constrained codes each (`vqcodec train image-codebooks`), and the
# decoder's conv path as a post-filter (`vqcodec train image-filter`).
GROUPED_RUN_CONFIG = ImageModelConfig(
    autoencoder=ImageAutoencoderConfig(latent_dim=128, linear_path=True, encoder_conv=False),
    num_stages=6, num_groups=16, num_codes=256, prior_width=128, prior_depth=3)

# The vqimage-v4 design: the same block PCA kept to 256 components (99.77 % of the patch
# variance; its inverse alone reaches 41.7 dB on Kodak against 33.5 dB for 128), 32 groups
# of 8, and a ladder that reaches past 36 dB. The rate weights are squared 8-bit error per bit.
V4_RD_LAMBDAS = tuple(w / 16256 for w in (25600, 12800, 6400, 3200, 1800, 1000, 560, 320, 180,
                                          100, 56, 32, 18, 10))
V4_RUN_CONFIG = ImageModelConfig(
    autoencoder=ImageAutoencoderConfig(latent_dim=256, linear_path=True, encoder_conv=False),
    num_stages=6, num_groups=32, num_codes=256, prior_width=128, prior_depth=3,
    rd_lambdas=V4_RD_LAMBDAS)

# Quality ladder of a grouped model: all rounds, the encoder's rate weight per quality. The
# weights are in latent units (squared error of [-1, 1]-scaled block PCA components per bit);
# times 127.5**2 = 16256 they are squared 8-bit pixel error per bit.
GROUPED_RD_LAMBDAS = [w / 16256 for w in (25600, 12800, 6400, 3200, 2000, 1400, 1000, 700, 500,
                                           350, 250, 170)]


class VQImageModel(nn.Module):
    """RGB image in [0, 1] <-> residual-VQ indices [B, S, H/stride, W/stride], plus their prior."""

    kind = "image"

    def __init__(self, config: ImageModelConfig) -> None:
        super().__init__()
        self.config = config
        # The exact integer prior that codes files, when the model file has one (set by
        # the zoo or by `vqcodec train integerize`); `prior` stays the float one for training.
        self.integer_prior: nn.Module | None = None
        self.encoder = ImageEncoder(config.autoencoder)
        self.decoder = ImageDecoder(config.autoencoder)
        dim = config.autoencoder.latent_dim
        if config.autoencoder.rate_channels not in (0, config.num_groups):
            raise ValueError("a decoder's rate map has one channel per quantizer group "
                             f"({config.num_groups}), not {config.autoencoder.rate_channels}")
        if config.num_groups:
            self.quantizer = GroupedResidualQuantizer(
                dim=dim, num_stages=config.num_stages, num_groups=config.num_groups,
                num_codes=config.num_codes)
            self.prior = GroupedStagePrior(
                dim=dim, num_stages=config.num_stages, num_groups=config.num_groups,
                num_codes=config.num_codes, width=config.prior_width,
                depth=config.prior_depth, schedule=config.schedule)
        else:
            self.quantizer = ResidualQuantizer(
                dim=dim, num_stages=config.num_stages, num_codes=config.num_codes,
                min_dropout_stages=config.min_dropout_stages)
            self.prior = StagePrior(
                dim=dim, num_stages=config.num_stages, num_codes=config.num_codes,
                width=config.prior_width, depth=config.prior_depth, schedule=config.schedule)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: returns (reconstruction, indices, commitment loss)."""
        zq, indices, commit = self.quantizer(self.encoder(x))
        return self.decoder(zq, self.rate_map(indices)), indices, commit

    @torch.no_grad()
    def encode(self, x: torch.Tensor, num_stages: int | None = None,
               rd_lambda: float = 0.0) -> torch.Tensor:
        """Indices [B, S', H, W], or [B, S', G, H, W] for a grouped quantizer (which weighs
        rate by rd_lambda when choosing codes)."""
        z = self.encoder(x)
        if self.config.num_groups:
            return self.quantizer.encode(z, num_stages, rd_lambda)
        return self.quantizer.encode(z, num_stages)

    def rate_map(self, indices: torch.Tensor) -> torch.Tensor | None:
        """What the decoder reads beside the latents of `indices`: the quantizer's rate map
        when the decoder has rate channels, else None."""
        if not self.config.autoencoder.rate_channels:
            return None
        return self.quantizer.rate_map(indices)

    def reconstruct(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices -> the decoder's output (not clamped; differentiable in the decoder)."""
        return self.decoder(self.quantizer.decode(indices), self.rate_map(indices))

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(indices).clamp(0, 1)
