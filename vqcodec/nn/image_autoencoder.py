"""Convolutional image autoencoder with a space-to-depth stem (cheap enough for CPU training).

The encoder maps RGB in [0, 1] (shape [B, 3, H, W], H and W multiples of `stride`) to latents
[B, D, H/stride, W/stride]; the decoder maps latents back. All work happens at 1/4 resolution
or coarser: the stem folds 4x4 pixel blocks into channels instead of convolving at full size.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ImageAutoencoderConfig:
    """Sizes of an image autoencoder; `stride` is derived, the one place it is stated."""

    latent_dim: int = 32
    widths: tuple[int, ...] = (64, 160, 256)  # at 1/4, 1/8, 1/16 resolution
    encoder_blocks: tuple[int, ...] = (1, 1, 2)
    decoder_blocks: tuple[int, ...] = (2, 2, 3)
    # A linear block transform (stride x stride patches <-> latent) beside the convolutional
    # path. Initialised by PCA it starts training at the linear optimum, which a CPU-trained
    # conv net alone does not reach in hours (Kodak, D=64: PCA 28.7 dB, conv net 26.1 dB).
    linear_path: bool = False
    # Without the convolutional paths the model is the block transform alone (a PCA when
    # initialised by `init_linear_path_from_pca`). vqimage-v3 has no encoder conv path and
    # uses the decoder's as a learned post-filter on top of the inverse PCA.
    encoder_conv: bool = True
    decoder_conv: bool = True
    # Extra inputs of the decoder's conv path beside the latents: a grouped quantizer's rate
    # map (`GroupedResidualQuantizer.rate_map`, one channel per group), so that one post-filter
    # can tell a finely from a coarsely quantized region. 0: latents only (v3, v3i).
    rate_channels: int = 0

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
        self.net = nn.Sequential(*layers) if config.encoder_conv else None
        self.linear = _block_transform(config, transpose=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2 - 1
        return _sum_paths(self.net, self.linear, x)


class ImageDecoder(nn.Module):
    def __init__(self, config: ImageAutoencoderConfig) -> None:
        super().__init__()
        w = config.widths[::-1]
        blocks = config.decoder_blocks[::-1]
        self.rate_channels = config.rate_channels
        layers: list[nn.Module] = [nn.Conv2d(config.latent_dim + config.rate_channels, w[0], 3,
                                             padding=1)]
        for i, width in enumerate(w):
            if i:
                layers.append(_up(w[i - 1], width))
            layers += [ResBlock(width) for _ in range(blocks[i])]
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(w[-1], 48, 3, padding=1), nn.PixelShuffle(4)]
        self.net = nn.Sequential(*layers) if config.decoder_conv else None
        self.linear = _block_transform(config, transpose=True)

    def forward(self, z: torch.Tensor, rate_map: torch.Tensor | None = None) -> torch.Tensor:
        """Latents z [B, D, H, W] (and, when the config has rate channels, the rate map
        [B, rate_channels, H, W]) -> RGB [B, 3, H*stride, W*stride], about [0, 1]."""
        net_input = z
        if self.rate_channels:
            if rate_map is None or rate_map.shape[1] != self.rate_channels:
                raise ValueError(f"this decoder reads a rate map of {self.rate_channels} "
                                 "channels beside the latents")
            net_input = torch.cat([z, rate_map.to(z.dtype)], 1)
        return (_sum_paths(self.net, self.linear, z, net_input) + 1) / 2


def decoder_halo(decoder: ImageDecoder) -> int:
    """Latent rows (or columns) on each side that a decoded pixel depends on beyond its own
    block: the receptive field of the conv path (0 without one; the block transform reaches
    no neighbour). A band of latent rows decoded with this many extra rows above and below
    gives the same pixels as the whole image, up to float rounding.

    Args:
        decoder: the decoder.
    """
    if decoder.net is None:
        return 0
    reach, scale = 0.0, 1  # scale: resolution of the current layer, in steps per latent row
    for module in decoder.net.modules():  # pre-order: the order the layers run in
        if isinstance(module, nn.Conv2d):
            reach += (module.kernel_size[0] // 2) / scale
        elif isinstance(module, nn.PixelShuffle):
            scale *= module.upscale_factor
    return math.ceil(reach)


def _sum_paths(net: nn.Module | None, linear: nn.Module | None, x: torch.Tensor,
               net_input: torch.Tensor | None = None) -> torch.Tensor:
    """linear(x) + net(net_input), net_input defaulting to x; a missing path adds nothing."""
    net_input = x if net_input is None else net_input
    if linear is None:
        return net(net_input)
    return linear(x) if net is None else linear(x) + net(net_input)


def _block_transform(config: ImageAutoencoderConfig, *, transpose: bool) -> nn.Module | None:
    """The optional linear path: one conv (or transposed conv) with kernel = stride = the model's
    stride, i.e. a block transform. The conv path's last layer starts at zero, so a fresh model
    is exactly this transform until training moves it."""
    if not config.linear_path:
        return None
    s, d = config.stride, config.latent_dim
    return nn.ConvTranspose2d(d, 3, s, stride=s) if transpose else nn.Conv2d(3, d, s, stride=s)


@torch.no_grad()
def init_linear_path_from_pca(encoder: ImageEncoder, decoder: ImageDecoder,
                              images: torch.Tensor) -> float:
    """Set the linear paths to the PCA of stride x stride patches of `images` ([N, 3, H, W] in
    [0, 1], H and W multiples of the stride) and zero the conv paths' last layers.

    Returns the fraction of patch variance the kept components explain.
    """
    lin_e, lin_d = encoder.linear, decoder.linear
    d, s = lin_e.out_channels, lin_e.kernel_size[0]
    x = images * 2 - 1
    mean = x.mean(dim=(0, 2, 3))  # per channel: ConvTranspose2d has one bias per channel
    patches = F.unfold(x - mean[None, :, None, None], s, stride=s)  # [N, 3*s*s, L]
    patches = patches.permute(0, 2, 1).reshape(-1, patches.shape[1]).double()
    cov = patches.T @ patches / len(patches)
    eigval, eigvec = torch.linalg.eigh(cov)
    basis = eigvec.flip(1)[:, :d].T.float()  # [D, 3*s*s], orthonormal rows
    weight = basis.reshape(d, 3, s, s)
    lin_e.weight.copy_(weight)
    lin_e.bias.copy_(-(weight * mean[None, :, None, None]).sum(dim=(1, 2, 3)))
    lin_d.weight.copy_(weight)
    lin_d.bias.copy_(mean)
    for last in (encoder.net[-1] if encoder.net is not None else None,
                 decoder.net[-2] if decoder.net is not None else None):
        if last is not None:
            last.weight.zero_()
            last.bias.zero_()
    return (eigval.flip(0)[:d].sum() / eigval.sum()).item()
