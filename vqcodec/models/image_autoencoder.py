"""Convolutional image autoencoder with a space-to-depth stem (cheap enough for CPU training).

The encoder maps RGB in [0, 1] (shape [B, 3, H, W], H and W multiples of `stride`) to latents
[B, D, H/stride, W/stride]; the decoder maps latents back. All work happens at 1/4 resolution
or coarser: the stem folds 4x4 pixel blocks into channels instead of convolving at full size.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ImageAutoencoderConfig:
    """Sizes of an image autoencoder; `stride` is derived, the one place it is stated."""

    latent_dim: int = 32
    widths: tuple[int, ...] = (64, 160, 256)  # at 1/4, 1/8, 1/16 resolution
    encoder_blocks: tuple[int, ...] = (1, 1, 2)
    decoder_blocks: tuple[int, ...] = (2, 2, 3)

    @property
    def stride(self) -> int:
        return 4 * 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict:
        return asdict(self)


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LeakyReLU(0.2), nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.2), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _down(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4 * cin, cout, 1))


def _up(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, 4 * cout, 1), nn.PixelShuffle(2))


class ImageEncoder(nn.Module):
    def __init__(self, config: ImageAutoencoderConfig) -> None:
        super().__init__()
        w = config.widths
        layers: list[nn.Module] = [nn.PixelUnshuffle(4), nn.Conv2d(48, w[0], 3, padding=1)]
        for i, width in enumerate(w):
            if i:
                layers.append(_down(w[i - 1], width))
            layers += [ResBlock(width) for _ in range(config.encoder_blocks[i])]
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(w[-1], config.latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


class ImageDecoder(nn.Module):
    def __init__(self, config: ImageAutoencoderConfig) -> None:
        super().__init__()
        w = config.widths[::-1]
        blocks = config.decoder_blocks[::-1]
        layers: list[nn.Module] = [nn.Conv2d(config.latent_dim, w[0], 3, padding=1)]
        for i, width in enumerate(w):
            if i:
                layers.append(_up(w[i - 1], width))
            layers += [ResBlock(width) for _ in range(blocks[i])]
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(w[-1], 48, 3, padding=1), nn.PixelShuffle(4)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.net(z) + 1) / 2
