"""Image <-> `.vqc` bytes: the compress/decompress pipeline for images.

Images of any size are padded (edge replication) to a multiple of the model's stride and
cropped back after decoding. Grayscale images are coded as RGB with equal channels and come
back grayscale.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..zoo.registry import (DEFAULT_IMAGE_MODEL, LoadedModel, ModelError, load_model,
                               model_for_header)
from ..format import ContainerHeader, MediaType, pack_container, unpack_container
from ..device import resolve_device
from ..io.image import as_image_array
from ..coding import file_codec


@dataclass
class ImageCompression:
    """What `compress_image` produced and measured."""

    data: bytes  # the whole .vqc file
    header: ContainerHeader
    payload_bytes: int
    nll_bits: float  # the prior's ideal payload size
    num_pixels: int
    seconds: float

    @property
    def bpp(self) -> float:
        """File bits per pixel (container included)."""
        return 8 * len(self.data) / self.num_pixels

    @property
    def payload_bpp(self) -> float:
        return 8 * self.payload_bytes / self.num_pixels


def image_to_tensor(array: np.ndarray, stride: int, device: torch.device) -> torch.Tensor:
    """uint8 HxW or HxWx3 -> float [1, 3, H', W'] in [0, 1], padded to multiples of stride."""
    rgb = np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1)[None].float() / 255
    h, w = array.shape[:2]
    pad_h, pad_w = -h % stride, -w % stride
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


def _to_array(x: torch.Tensor, channels: int, height: int, width: int) -> np.ndarray:
    rgb = (x[0, :, :height, :width].clamp(0, 1) * 255).round().to(torch.uint8)
    rgb = rgb.permute(1, 2, 0).cpu().numpy()
    if channels == 1:
        return np.asarray(Image.fromarray(rgb).convert("L"))
    return rgb


def compress_image(image, *, model: str | LoadedModel = DEFAULT_IMAGE_MODEL,
                   quality: int | None = None, device: str = "auto") -> ImageCompression:
    """Compress an image (PIL image or uint8 array HxW / HxWx3) into a `.vqc` file's bytes.

    Args:
        image: the image.
        model: shipped model name, model file path, or a loaded model.
        quality: 1..N (more stages, more bits); default: the model's default.
        device: "auto", "cpu" or "cuda".
    """
    start = time.perf_counter()
    dev = resolve_device(device)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device=dev)
    loaded.require_kind("image")
    net = loaded.model
    array = as_image_array(image)
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else 3
    stages, rd_lambda = loaded.rate_for_quality(
        loaded.default_quality if quality is None else quality)
    x = image_to_tensor(array, net.config.stride, dev)
    indices = net.encode(x, stages, rd_lambda)[0].cpu()
    coded = file_codec(loaded.model).compress(indices)
    header = ContainerHeader(
        media_type=MediaType.IMAGE, model_id=loaded.name, weights_hash=loaded.weights_hash,
        num_stages=stages, shape=(channels, height, width), sample_rate=0,
        latent_shape=tuple(indices.shape[-2:]))
    data = pack_container(header, coded.payload)
    return ImageCompression(data=data, header=header, payload_bytes=len(coded.payload),
                            nll_bits=coded.nll_bits, num_pixels=height * width,
                            seconds=time.perf_counter() - start)


def decompress_image(data: bytes, *, model: str | LoadedModel | None = None,
                     device: str = "auto") -> np.ndarray:
    """Decode a `.vqc` file's bytes to a uint8 array (HxWx3, or HxW for grayscale).

    Args:
        data: the file's bytes.
        model: optional model name/path/loaded model; by default the one named in the file.
        device: "auto", "cpu" or "cuda".
    """
    header, payload = unpack_container(data)
    if header.media_type != MediaType.IMAGE:
        raise ModelError(f"this .vqc file holds {header.media_type.name.lower()}, not an image")
    dev = resolve_device(device)
    loaded = model_for_header(header, model, dev)
    net = loaded.model
    channels, height, width = header.shape
    stride = net.config.stride
    expected = (-(-height // stride), -(-width // stride))
    if (channels not in (1, 3) or tuple(header.latent_shape) != expected
            or header.num_stages > net.config.num_stages):
        raise ModelError("inconsistent .vqc header: shape, latent grid or stages do not fit the model")
    try:
        indices = file_codec(loaded.model).decompress(payload, header.num_stages, *expected)
    except Exception as e:  # constriction reports a stream that does not fit as AssertionError
        raise ModelError(f"corrupted .vqc payload ({type(e).__name__})") from None
    return _to_array(net.decode(indices[None].to(dev)), channels, height, width)
