"""vqcodec: neural image compression with residual vector quantization and a learned prior.

    >>> import vqcodec, numpy as np
    >>> data = vqcodec.compress(image)          # PIL image or uint8 array HxW / HxWx3
    >>> array = vqcodec.decompress(data)        # uint8 array HxWx3 (HxW for grayscale)

`compress` takes `quality=` (1..N of the model, default the model's own), `model=` (a shipped
model name or a .safetensors path) and `device=` ("auto", "cpu", "cuda").
"""
from __future__ import annotations

__all__ = ["compress", "decompress", "__version__"]
__version__ = "0.1.0"


def compress(image, *, quality: int | None = None, model: str | None = None,
             device: str = "auto") -> bytes:
    """Compress an image to the bytes of a `.vqc` file."""
    from .codec.image_codec import compress_image
    from .models.registry import DEFAULT_IMAGE_MODEL
    return compress_image(image, model=model or DEFAULT_IMAGE_MODEL, quality=quality,
                          device=device).data


def decompress(data: bytes, *, model: str | None = None, device: str = "auto"):
    """Decode `.vqc` bytes to a uint8 numpy array (use `PIL.Image.fromarray` for a PIL image)."""
    from .codec.image_codec import decompress_image
    return decompress_image(data, model=model, device=device)
