"""vqcodec: neural image and audio compression with residual vector quantization and a
learned prior.

    >>> import vqcodec
    >>> data = vqcodec.compress(image)             # PIL image or uint8 array HxW / HxWx3
    >>> array = vqcodec.decompress(data)           # uint8 array HxWx3 (HxW for grayscale)
    >>> data = vqcodec.compress_audio(samples, 44100, bitrate=6)  # float [n] or [channels, n]
    >>> samples, rate = vqcodec.decompress_audio(data)           # float32 [channels, n]

`compress` takes `quality=` (1..N of the model, default the model's own), `compress_audio`
takes `bitrate=` (kbps before entropy coding: one of the model's settings); both take `model=`
(a shipped model name or a .safetensors path) and `device=` ("auto", "cpu", "cuda").
`decompress` reads the media type and the model from the file (for audio it returns the same
as `decompress_audio`).
"""
from __future__ import annotations

__all__ = ["compress", "decompress", "compress_audio", "decompress_audio", "__version__"]
__version__ = "0.1.0"


def compress(image, *, quality: int | None = None, model: str | None = None,
             device: str = "auto") -> bytes:
    """Compress an image to the bytes of a `.vqc` file."""
    from .pipelines.image import compress_image
    return compress_image(image, model=model, quality=quality, device=device).data


def decompress(data: bytes, *, model: str | None = None, device: str = "auto",
               stages: int | None = None):
    """Decode `.vqc` bytes, as the file's header says: an image to a uint8 numpy array
    (`PIL.Image.fromarray` makes a PIL image of it), audio to (samples float32 [channels, n],
    sample_rate). `stages=r` decodes from the first r stages only (a coarser preview; for an
    image, all a file cut after r stage chunks needs)."""
    from .io.audio import AudioClip
    from .pipelines import decompress as decode
    decoded = decode(data, model=model, device=device, stages=stages)
    return (decoded.samples, decoded.sample_rate) if isinstance(decoded, AudioClip) else decoded


def compress_audio(samples, sample_rate: int, *, bitrate: float | None = None,
                   model: str | None = None, device: str = "auto") -> bytes:
    """Compress audio (float in [-1, 1] or int16; [n] mono or [channels, n]) to `.vqc` bytes."""
    from .pipelines.audio import compress_audio as _compress
    from .zoo.registry import DEFAULT_AUDIO_MODEL
    return _compress((samples, sample_rate), model=model or DEFAULT_AUDIO_MODEL,
                     bitrate=bitrate, device=device).data


def decompress_audio(data: bytes, *, model: str | None = None, device: str = "auto"):
    """Decode `.vqc` bytes to (samples float32 [channels, n], sample_rate)."""
    from .pipelines.audio import decompress_audio as _decompress
    clip = _decompress(data, model=model, device=device)
    return clip.samples, clip.sample_rate
