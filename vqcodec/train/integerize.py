"""Post-training conversion of a model's float prior to its exact integer prior
(`vqcodec train integerize`): gather calibration indices by encoding training data with the
model, convert, and return the model with `.integer_prior` set (the zoo saves it exactly).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .data import SHARED_IMAGES

IMAGE_CALIBRATION = f"{SHARED_IMAGES}/bsds500/train"


def image_calibration_indices(loaded, images: Sequence[np.ndarray], *,
                              qualities: Sequence[int] | None = None) -> list[torch.Tensor]:
    """Indices of `images` (uint8 arrays) encoded by `loaded` at several qualities (default:
    lowest, middle and highest), one tensor [1, S', (G,) H, W] per (image, quality)."""
    from ..pipelines.image import image_to_tensor
    net = loaded.model
    n_q = len(loaded.qualities)
    qualities = qualities or sorted({1, (n_q + 1) // 2, n_q})
    out = []
    for array in images:
        x = image_to_tensor(array, net.config.stride, torch.device("cpu"))
        for q in qualities:
            stages, rd_lambda = loaded.rate_for_quality(q)
            out.append(net.encode(x, stages, rd_lambda).cpu())
    return out


def training_crops(folder: str | Path = IMAGE_CALIBRATION, count: int = 20, size: int = 256,
                   seed: int = 0) -> list[np.ndarray]:
    """`count` random size x size crops (uint8 RGB) of the images in `folder`."""
    from ..io.image import as_rgb, load_image
    from ..io.media import IMAGE_SUFFIXES
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no calibration images in {folder}")
    rng = np.random.default_rng(seed)
    crops = []
    for i in rng.choice(len(paths), size=min(count, len(paths)), replace=False):
        a = as_rgb(load_image(paths[i]))
        h, w = a.shape[:2]
        y, x = rng.integers(0, max(h - size, 0) + 1), rng.integers(0, max(w - size, 0) + 1)
        crops.append(np.ascontiguousarray(a[y:y + size, x:x + size, :3]))
    return crops


def integerize_image_model(net, calibration_indices, **options):
    """Set `net.integer_prior` from its float prior and calibration indices (tensors in the
    quantizer's layout, [B, S', H, W] or [B, R', G, H, W]); returns net."""
    from ..coding.latent_codec import teacher_forced_passes
    from ..nn.integer_prior import IntegerStagePrior
    passes = (p for indices in calibration_indices
              for p in teacher_forced_passes(net.quantizer, indices.cpu(), net.prior.schedule))
    net.integer_prior = IntegerStagePrior.from_float(net.prior, net.quantizer, passes,
                                                     **options)
    return net


def integerize_model(loaded, *, images: Sequence[np.ndarray] | None = None,
                     clips: Sequence | None = None, log=None, **options):
    """The loaded model's network with `.integer_prior` set (and returned).

    Image models are calibrated on `images` (uint8 arrays; default: 20 random 256x256 crops of
    the BSDS500 training images) encoded at the lowest, middle and highest quality. Audio
    models on `clips` (see `nn/integer_frame_prior.py`, imported only for audio).
    """
    t0 = time.process_time()
    net = loaded.model.cpu().eval()
    if loaded.kind == "image":
        images = training_crops() if images is None else images
        calibration = image_calibration_indices(loaded, images)
        integerize_image_model(net, calibration, **options)
    else:
        from ..nn.integer_frame_prior import IntegerFramePrior
        clips = training_clips() if clips is None else clips
        calibration = _audio_calibration_indices(loaded, clips)
        net.integer_prior = IntegerFramePrior.from_float(net.prior, calibration, **options)
    if log is not None:
        print(f"integerized {loaded.name}: {time.process_time() - t0:.1f} CPU s", file=log)
    return net


def training_clips(count: int = 48, seconds: float = 8.0) -> list[tuple[np.ndarray, int]]:
    """(samples [C, n], rate) of `count` training files of the default audio split (evenly
    spread over it: speech and music), each cut to its first `seconds`."""
    from ..io.audio import load_audio
    from .data import default_audio_split
    files = default_audio_split()[0]
    if not files:
        raise FileNotFoundError("no audio training files for calibration")
    picks = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(count, len(files)))]
    clips = []
    for f in picks:
        clip = load_audio(f)
        clips.append((clip.samples[:, :int(seconds * clip.sample_rate)], clip.sample_rate))
    return clips


def _audio_calibration_indices(loaded, clips):
    """Indices [S, F] of every channel of a few clips ((samples [C, n] or [n], rate) pairs)
    encoded with all stages (the first n stages serve every bitrate), via pipelines.audio."""
    if not clips:
        raise ValueError("audio integerization needs calibration clips")
    from ..pipelines.audio import encode_channel, model_input
    net = loaded.model
    out = []
    with torch.no_grad():
        for samples, rate in clips:
            samples = np.atleast_2d(np.asarray(samples, dtype=np.float32))
            for channel in samples:
                x = model_input(channel, rate, net)
                out.append(encode_channel(net, x, net.config.num_stages).cpu())
    return out
