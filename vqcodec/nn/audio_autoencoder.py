"""1-D convolutional audio autoencoder in the SEANet spirit, made cheap for CPU training.

Encoder: waveform [B, 1, T] (T a multiple of `hop`) -> latents [B, D, T / hop]. As in the image
model, resolution changes by folding time steps into channels (space-to-depth) instead of
strided convolutions at full rate: the stem folds `fold` samples into channels, then each level
folds `ratio` steps. Residual units with dilated convolutions give the receptive field.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class AudioAutoencoderConfig:
    """Sizes of an audio autoencoder; `hop` and `frame_rate` are derived from them."""

    sample_rate: int = 24000
    latent_dim: int = 64
    fold: int = 8  # samples folded into channels by the stem
    ratios: tuple[int, ...] = (2, 4, 5)  # further folding, level by level
    widths: tuple[int, ...] = (32, 64, 128, 256)  # after the stem, then after each ratio
    dilations: tuple[int, ...] = (1, 3, 9)  # residual units per level

    @property
    def hop(self) -> int:
        return self.fold * math.prod(self.ratios)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    def to_dict(self) -> dict:
        return asdict(self)


def fold_time(x: torch.Tensor, r: int) -> torch.Tensor:
    """[B, C, T] -> [B, C * r, T / r]: r consecutive steps become channels."""
    b, c, t = x.shape
    return x.view(b, c, t // r, r).permute(0, 1, 3, 2).reshape(b, c * r, t // r)


def unfold_time(x: torch.Tensor, r: int) -> torch.Tensor:
    """Inverse of `fold_time`: [B, C * r, T] -> [B, C, T * r]."""
    b, cr, t = x.shape
    return x.view(b, cr // r, r, t).permute(0, 1, 3, 2).reshape(b, cr // r, t * r)


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ELU(), nn.Conv1d(channels, channels, 3, dilation=dilation, padding=dilation),
            nn.ELU(), nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AudioEncoder(nn.Module):
    def __init__(self, config: AudioAutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        self.stem = nn.Conv1d(config.fold, w[0], 7, padding=3)
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, r in enumerate(config.ratios):
            self.levels.append(nn.Sequential(*[ResidualUnit(w[i], d) for d in config.dilations]))
            self.downs.append(nn.Conv1d(w[i] * r, w[i + 1], 3, padding=1))
        self.out = nn.Sequential(nn.ELU(), nn.Conv1d(w[-1], config.latent_dim, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(fold_time(x, self.config.fold))
        for level, down, r in zip(self.levels, self.downs, self.config.ratios):
            h = down(fold_time(level(h), r))
        return self.out(h)


class AudioDecoder(nn.Module):
    def __init__(self, config: AudioAutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        self.inp = nn.Conv1d(config.latent_dim, w[-1], 3, padding=1)
        self.ups = nn.ModuleList()
        self.levels = nn.ModuleList()
        for i in reversed(range(len(config.ratios))):
            r = config.ratios[i]
            self.ups.append(nn.Conv1d(w[i + 1], w[i] * r, 3, padding=1))
            self.levels.append(nn.Sequential(*[ResidualUnit(w[i], d) for d in config.dilations]))
        self.out = nn.Sequential(nn.ELU(), nn.Conv1d(w[0], config.fold, 7, padding=3))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.inp(z)
        for up, level, r in zip(self.ups, self.levels, reversed(self.config.ratios)):
            h = level(unfold_time(up(h), r))
        return unfold_time(self.out(h), self.config.fold)
