"""Image and audio `<->` `.vqc` bytes (`image.py`, `audio.py`, what both share in `file.py`).

This is the one place that chooses between the two media: from an input file's suffix when
compressing, from the header's media type when decompressing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..format import MediaType, read_header
from ..io.audio import AudioClip, AudioReader, save_audio
from ..io.image import load_image, save_image
from ..io.media import is_audio_path
from ..zoo.registry import DEFAULT_AUDIO_MODEL
from .audio import (AudioCompression, AudioInfo, compress_audio, decompress_audio,
                    decompress_audio_to_file)
from .image import ImageCompression, compress_image, decompress_image

__all__ = ["compress_file", "decompress", "decompress_to_file", "save_decoded",
           "describe_decoded", "compress_image", "decompress_image", "compress_audio",
           "decompress_audio", "decompress_audio_to_file"]


def compress_file(path: str | Path, *, quality: int | None = None, bitrate: float | None = None,
                  model: str | None = None,
                  device: str = "auto") -> ImageCompression | AudioCompression:
    """Compress an image or audio file, the kind taken from its suffix.

    Args:
        path: the input file.
        quality: images only: the rate setting 1..N (default: the model's).
        bitrate: audio only: kbps before entropy coding (default: the model's).
        model: shipped model name or model file; default: the default model of the kind.
        device: "auto", "cpu" or "cuda".
    """
    if is_audio_path(path):
        if quality is not None:
            raise InputError("--quality is for images; audio takes --bitrate")
        with AudioReader(path) as reader:  # read window by window
            return compress_audio(reader, model=model or DEFAULT_AUDIO_MODEL,
                                  bitrate=bitrate, device=device)
    if bitrate is not None:
        raise InputError("--bitrate is for audio; images take --quality")
    return compress_image(load_image(path), model=model, quality=quality, device=device)


def decompress(data: bytes, *, model: str | None = None, device: str = "auto",
               stages: int | None = None) -> np.ndarray | AudioClip:
    """Decode `.vqc` bytes: a uint8 image array, or an `AudioClip`, as the header says.

    Args:
        data: the file's bytes.
        model: optional model name or file; by default the one the file names.
        device: "auto", "cpu" or "cuda".
        stages: decode from the first `stages` stages only (see `decompress_image`); None: all.
    """
    # A file cut short still has a header: its media type decides, the pipeline refuses it.
    if read_header(data, allow_truncation=True).media_type == MediaType.AUDIO:
        return decompress_audio(data, model=model, device=device, stages=stages)
    return decompress_image(data, model=model, device=device, stages=stages)


def decompress_to_file(data: bytes, path: str | Path, *, model: str | None = None,
                       device: str = "auto", stages: int | None = None) -> str:
    """Decode `.vqc` bytes into the file `path` (format from its suffix, atomically), audio
    window by window; returns `describe_decoded` of what was written."""
    if read_header(data, allow_truncation=True).media_type == MediaType.AUDIO:
        info = decompress_audio_to_file(data, path, model=model, device=device, stages=stages)
        return describe_decoded(info)
    decoded = decompress_image(data, model=model, device=device, stages=stages)
    save_image(decoded, path)
    return describe_decoded(decoded)


def save_decoded(decoded: np.ndarray | AudioClip, path: str | Path) -> None:
    """Write what `decompress` returned, in the format OUTPUT's suffix names (atomically)."""
    if isinstance(decoded, AudioClip):
        save_audio(path, decoded)
    else:
        save_image(decoded, path)


def describe_decoded(decoded: np.ndarray | AudioClip | AudioInfo) -> str:
    """One line on what was decoded."""
    if isinstance(decoded, (AudioClip, AudioInfo)):
        return f"{decoded.seconds:.2f} s, {decoded.channels} ch at {decoded.sample_rate} Hz"
    return f"{decoded.shape[1]}x{decoded.shape[0]}"
