"""Pictures and sounds drawn from a model's prior: indices sampled stage by stage and pass by
pass (images) or frame by frame (audio), in the order the codec codes them, then decoded.
Images are sampled with every stage in the passes of the model's context schedule, the most
context the prior can use (files code the later stages in one pass, to save time:
`pipelines.image.IMAGE_CONTEXT_STAGES`).

The walk is the file codec's (`coding.file_codec`): over the exact integer prior when the
model has one, so at temperature 1 a seed gives the same indices on every machine (see
`coding.sampling.TableSampler`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..coding import file_codec
from ..coding.sampling import TableSampler
from ..device import resolve_device
from ..errors import InputError
from ..io.audio import MAX_SECONDS, AudioClip
from ..io.image import MAX_PIXELS
from ..zoo.registry import DEFAULT_IMAGE_MODEL, LoadedModel, load_model
from .audio import decode_channel
from .image import indices_to_image

__all__ = ["Sample", "sample_image", "sample_audio", "parse_size"]


@dataclass
class Sample:
    """What a sampling call drew and decoded."""

    decoded: np.ndarray | AudioClip  # uint8 HxWx3, or the clip at the model's rate
    indices: torch.Tensor  # the drawn indices, in the codec's layout
    seconds: float  # time taken (drawing and decoding)

    def describe(self) -> str:
        """One line on what was drawn."""
        if isinstance(self.decoded, AudioClip):
            what = f"{self.decoded.seconds:.2f} s at {self.decoded.sample_rate} Hz"
            stages = self.indices.shape[1]  # [1, S', F]
        else:
            what = f"{self.decoded.shape[1]}x{self.decoded.shape[0]}"
            stages = self.indices.shape[0]  # [S', h, w] or [R', G, h, w]
        return f"{what}, {stages} stages, {self.seconds:.2f} s"


def _prepare(model: str | LoadedModel, kind: str, stages: int | None, temperature: float,
             seed: int, device: str) -> tuple[LoadedModel, int, TableSampler, torch.device]:
    """The model, the stage count, the seeded sampler and the device, with the options checked.

    Args:
        model: shipped model name, model file path, or a loaded model.
        kind: "image" or "audio": what the model must be.
        stages: how many stages to draw (None: all the model has).
        temperature: > 0.
        seed: >= 0.
        device: "auto", "cpu" or "cuda".
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature > 0):
        raise InputError(f"temperature must be a positive number, got {temperature!r}")
    dev = resolve_device(device)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device=dev)
    loaded.require_kind(kind)
    total = loaded.model.config.num_stages
    if stages is None:
        stages = total
    elif isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= total:
        raise InputError(f"--stages must be 1 to {total} for model {loaded.name}, got {stages}")
    return loaded, stages, TableSampler(seed, temperature), dev


def sample_image(height: int, width: int, *, model: str | LoadedModel = DEFAULT_IMAGE_MODEL,
                 seed: int = 0, temperature: float = 1.0, stages: int | None = None,
                 device: str = "auto") -> Sample:
    """Draw an RGB picture from an image model's prior.

    Args:
        height, width: the picture's size in pixels (the latent grid is rounded up to the
            model's stride, the picture cropped back).
        model: shipped model name, model file path, or a loaded model.
        seed: seeds the draws (same seed, same picture).
        temperature: > 0; the tables' log-probabilities are divided by it (below 1: likelier
            codes, smoother pictures).
        stages: how many stages (rounds) to draw, from stage 0; default all the model has.
        device: where the decoder runs ("auto", "cpu", "cuda"); the prior runs on the CPU.
    """
    start = time.perf_counter()
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if height * width > MAX_PIXELS:
        raise InputError(f"{width}x{height} is over the limit of {MAX_PIXELS} pixels")
    loaded, stages, sampler, dev = _prepare(model, "image", stages, temperature, seed, device)
    stride = loaded.model.config.stride
    indices = file_codec(loaded.model).sample(stages, -(-height // stride), -(-width // stride),
                                              sampler)
    picture = indices_to_image(loaded.model, indices, 3, height, width, dev)
    return Sample(picture, indices, time.perf_counter() - start)


def sample_audio(seconds: float, *, model: str | LoadedModel, seed: int = 0,
                 temperature: float = 1.0, stages: int | None = None,
                 device: str = "auto") -> Sample:
    """Draw a mono clip from an audio model's prior, at the model's sample rate.

    Args:
        seconds: its length (> 0).
        model: shipped model name, model file path, or a loaded model.
        seed: seeds the draws (same seed, same clip).
        temperature: > 0, as for `sample_image`.
        stages: how many stages to draw per frame; default all the model has.
        device: where the decoder runs; the prior runs on the CPU.
    """
    start = time.perf_counter()
    if not (isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
            and math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        raise InputError(f"seconds must be a number in (0, {MAX_SECONDS}], got {seconds!r}")
    loaded, stages, sampler, dev = _prepare(model, "audio", stages, temperature, seed, device)
    net = loaded.model
    rate = net.config.sample_rate
    num_samples = max(1, round(seconds * rate))
    frames = -(-num_samples // net.config.hop)
    indices = file_codec(net).sample(1, stages, frames, sampler)  # [1, S', F]
    waveform = decode_channel(net, indices[0].to(dev)).cpu().numpy()[:num_samples]
    clip = AudioClip(samples=np.clip(waveform, -1, 1).astype(np.float32)[None], sample_rate=rate)
    return Sample(clip, indices, time.perf_counter() - start)


def parse_size(text: str) -> tuple[int, int]:
    """(height, width) of a size given as WIDTHxHEIGHT, e.g. "256x192"."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise InputError(f"size must be WIDTHxHEIGHT in pixels, e.g. 256x256, got {text!r}")
    width, height = (int(p) for p in parts)
    return height, width
