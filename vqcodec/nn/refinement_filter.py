"""A small convolutional filter that restores the refined picture (format version 8).

The refinement (`coding.refinement`) leaves the error of uniform 8x8 DCT steps: ringing near
edges and block structure that the rule-based deblocking only partly removes. This network
sees the refined, deblocked picture, what the refinement added to the base picture, the step
and each pixel's place in its 8x8 block, and predicts a correction scaled by the step. It
only changes the decoder's output: the stream and its tables do not depend on it, so files
stay exact on every machine (its float result may differ in the last level between
machines, as the quantizer's post-filter's does).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BLOCK = 8  # the refinement's block side (coding.refinement.BLOCK; nn does not import coding)
STEP_SCALE = 64.0  # the step enters as step / STEP_SCALE
ADDED_SCALE = 32.0  # refined - base enters in units of this many levels
CORRECTION_SCALE = 8.0  # the output is a correction in units of step / CORRECTION_SCALE
# Pixel rows filtered at once (memory and speed, not format): on a Kodak picture with one
# thread, 128-row bands in channels-last layout take 0.42 s, 256 rows 0.46 s, and the
# default layout 0.75-0.85 s (session 16).
BAND_ROWS = 128


@dataclass(frozen=True)
class RefinementFilterConfig:
    channels: int = 32
    layers: int = 4  # hidden 3x3 convolutions (ReLU after each); one more makes the output

    def to_dict(self) -> dict:
        return asdict(self)


class RefinementFilter(nn.Module):
    """Refined picture -> restored picture, both [B, 3, H, W] float in 8-bit levels.

    Args:
        config: its width and depth.
    """

    # Inputs: refined (3), refined - base (3), step (1), row and column within the block (2).
    INPUTS = 9

    def __init__(self, *, config: RefinementFilterConfig = RefinementFilterConfig()):
        super().__init__()
        self.config = config
        widths = [self.INPUTS] + [config.channels] * config.layers
        self.hidden = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1)
                                    for a, b in zip(widths, widths[1:]))
        self.out = nn.Conv2d(config.channels, 3, 3, padding=1)
        # Starts as the identity: training begins from the deblocked picture.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def radius(self) -> int:
        """How many pixels away an output pixel sees."""
        return self.config.layers + 1

    def forward(self, refined: torch.Tensor, base: torch.Tensor, step: torch.Tensor,
                top: int = 0) -> torch.Tensor:
        """Args:
            refined, base: [B, 3, H, W] the refined (deblocked) and the base picture.
            step: [B] the refinement step of each picture.
            top: the first row's index in the whole picture (its place in the block grid;
                columns always start at 0).
        """
        b, _, h, w = refined.shape
        step = step.to(refined).view(b, 1, 1, 1)
        rows = ((torch.arange(h, device=refined.device) + top) % BLOCK).to(refined)
        cols = (torch.arange(w, device=refined.device) % BLOCK).to(refined)
        y = torch.cat([refined / 255 - 0.5, (refined - base) / ADDED_SCALE,
                       (step / STEP_SCALE).expand(b, 1, h, w),
                       (rows / (BLOCK - 1) - 0.5).view(1, 1, h, 1).expand(b, 1, h, w),
                       (cols / (BLOCK - 1) - 0.5).view(1, 1, 1, w).expand(b, 1, h, w)], 1)
        for conv in self.hidden:
            y = F.relu(conv(y))
        return refined + self.out(y) * (step / CORRECTION_SCALE)


def _as_planes(picture: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 HxWx3 or HxW -> [1, 3, H, W] float32 (a gray picture as three equal channels),
    channels-last in memory (oneDNN's fast layout for these convolutions)."""
    x = torch.from_numpy(np.ascontiguousarray(picture)).to(device, torch.float32)
    x = x.expand(3, *x.shape)[None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def restore_picture(net: RefinementFilter, refined: np.ndarray, base: np.ndarray, step: float,
                    device: torch.device | str = "cpu") -> np.ndarray:
    """`refined` (uint8 HxWx3 or HxW, deblocked) restored by `net`, in bands of rows with
    enough rows around them that every output pixel sees what it would in one pass; rounded
    to the nearest level and clamped to 8 bits. A gray picture: the mean of the three
    outputs."""
    height = refined.shape[0]
    halo = net.radius
    out = np.empty_like(refined)
    for top in range(0, height, BAND_ROWS):
        bottom = min(top + BAND_ROWS, height)
        lo, hi = max(0, top - halo), min(height, bottom + halo)
        y = net(_as_planes(refined[lo:hi], device), _as_planes(base[lo:hi], device),
                torch.tensor([float(step)]), top=lo)[0, :, top - lo:bottom - lo]
        if refined.ndim == 2:
            y = y.mean(0)
        else:
            y = y.permute(1, 2, 0)
        out[top:bottom] = y.round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    return out
