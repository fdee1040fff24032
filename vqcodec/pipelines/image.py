"""Image <-> `.vqc` bytes: the compress/decompress pipeline for images.

Images of any size are padded (edge replication) to a multiple of the model's stride and
cropped back after decoding. Grayscale images are coded as RGB with equal channels and come
back grayscale.

Large images stay within bounded memory and linear time: a block-wise encoder (the block
transform of vqimage-v3) runs on bands of block rows, the prior codes the latent grid in
independent tiles of `IMAGE_TILE` positions (recorded in the file), and the decoder runs on
bands of latent rows with a halo of its receptive field, so the picture equals the
whole-image decode up to float rounding. An image that fits in one tile is coded and decoded
exactly as without tiles.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..nn.image_autoencoder import decoder_halo
from ..zoo.registry import LoadedModel, ModelError, default_image_model, load_model
from ..format import (DEBLOCKED_VERSION, FILTERED_VERSION, FORMAT_VERSION, MAX_TILE,
                      ContainerError,
                      ContainerHeader, MediaType, pack_container, refinement_held,
                      stage_payload)
from ..device import resolve_device
from ..errors import InputError
from ..io.image import as_image_array, as_rgb
from ..coding import file_codec
from ..coding.refinement import decode_refinement, encode_refinement
from ..nn.refinement_filter import restore_picture
from ..zoo.filters import load_refinement_filter
from .file import Compression, decode_indices, encode_indices, open_file, stages_to_decode


# The side, in latent positions, of the tiles the prior codes a large image's latent grid in
# (64 positions = 1024 pixels for a stride of 16); files record it, so a decoder never
# assumes it. Chosen by measurement on a 2048x2048 photo (benchmarks/large_image.py, README):
# the rate cost of tiling against the time and memory of one tile's walk.
IMAGE_TILE = 64
# The most latent positions one band of the encoder (block transform and quantizer, whose
# distance table is positions x groups x codes) or of the decoder (its conv activations at
# 1/4 resolution) holds at once: what bounds their memory on large images. 1024 positions keep
# the quantizer's float32 distance tables (1024 x 16 x 256, 16 MiB) below the size glibc
# serves from reused memory: about twice as fast as 4096 (fresh pages every band), same indices.
ENCODE_BAND_POSITIONS = 1024
DECODE_BAND_POSITIONS = 16384
# How many leading stages (rounds) are coded with the model's context schedule; the later
# ones are coded in one pass each, predicted from the earlier rounds only (format version 4).
# Measured on every 4th Kodak image with vqimage-v3i (docs/ablations.md, session 9): from
# round 2 on one pass costs +1.4 % of the bits at quality 1 and +0.15-0.18 % at 6 and 12, and
# saves 4 of the 11 prior evaluations that see anything (round 0's first pass sees nothing
# and is nearly free); from round 1 on, +2.5 % at quality 1 for one evaluation more.
IMAGE_CONTEXT_STAGES = 2


@dataclass
class ImageCompression(Compression):
    """What `compress_image` produced and measured."""

    num_pixels: int

    @property
    def bpp(self) -> float:
        """File bits per pixel (container included)."""
        return 8 * len(self.data) / self.num_pixels

    @property
    def payload_bpp(self) -> float:
        return 8 * self.payload_bytes / self.num_pixels

    def describe(self) -> str:
        """One line on what was written."""
        h = self.header
        return (f"{len(self.data)} bytes, {self.bpp:.4f} bpp (payload {self.payload_bpp:.4f} "
                f"bpp, prior NLL {self.nll_bits / self.num_pixels:.4f} bpp), "
                f"{h.shape[2]}x{h.shape[1]}, {h.num_stages} stages, {self.seconds:.2f} s")


def image_to_tensor(array: np.ndarray, stride: int, device: torch.device) -> torch.Tensor:
    """uint8 HxW or HxWx3 -> float [1, 3, H', W'] in [0, 1], padded to multiples of stride."""
    rgb = torch.from_numpy(np.ascontiguousarray(as_rgb(array))).to(device)
    x = rgb.permute(2, 0, 1)[None].float() / 255
    h, w = array.shape[:2]
    pad_h, pad_w = -h % stride, -w % stride
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Decoder output in [0, 1] (any shape) -> uint8 levels, clamped and rounded."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def rgb_to_luma(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 RGB [..., 3, H, W] -> uint8 luma [..., H, W], exactly as Pillow's convert("L").

    ITU-R 601-2 luma in Pillow's 16-bit fixed point (L = (19595 R + 38470 G + 7471 B +
    0x8000) >> 16), so a grayscale image comes back the same as through Pillow, on any device.
    """
    r, g, b = rgb.to(torch.int64).unbind(-3)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)


def _to_array(x: torch.Tensor, channels: int, height: int, width: int) -> np.ndarray:
    rgb = to_8bit(x[0, :, :height, :width])
    if channels == 1:
        return rgb_to_luma(rgb).cpu().numpy()
    return rgb.permute(1, 2, 0).cpu().numpy()


def _bands(rows: int, band_rows: int) -> list[tuple[int, int]]:
    """(first, end) of each band of `band_rows` rows (>= 1) covering `rows` rows."""
    return [(r, min(r + band_rows, rows)) for r in range(0, rows, band_rows)]


def indices_to_image(net, indices: torch.Tensor, channels: int, height: int, width: int,
                     device: torch.device, *, band_rows: int | None = None) -> np.ndarray:
    """Decode indices (the quantizer's layout, any number of stages from stage 0) to a uint8
    array HxWx3 (HxW if `channels` is 1), cropped to height x width.

    The decoder runs on bands of latent rows, each with `decoder_halo` extra rows above and
    below (cropped off after decoding), so memory stays bounded and the pixels are those of
    the whole-image decode up to float rounding; a grid of at most `DECODE_BAND_POSITIONS`
    positions is decoded whole.

    Args:
        net: the image model.
        indices: [S', h, w] or [R', G, h, w].
        channels: 1 (grayscale) or 3.
        height, width: the picture's size (at most the latent grid's times the stride).
        device: where the decoder runs.
        band_rows: latent rows per band; None: as many as `DECODE_BAND_POSITIONS` allows.
    """
    grid_h, grid_w = indices.shape[-2:]
    if band_rows is None:
        band_rows = grid_h if grid_h * grid_w <= DECODE_BAND_POSITIONS else max(
            1, DECODE_BAND_POSITIONS // grid_w)
    if band_rows >= grid_h:
        return _to_array(net.decode(indices[None].to(device)), channels, height, width)
    stride, halo = net.config.stride, decoder_halo(net.decoder)
    out = np.empty((height, width) if channels == 1 else (height, width, 3), dtype=np.uint8)
    for first, end in _bands(grid_h, band_rows):
        top, bottom = max(0, first - halo), min(grid_h, end + halo)
        pixels = net.decode(indices[None, ..., top:bottom, :].to(device))
        rows = min(end * stride, height) - first * stride
        band = pixels[..., (first - top) * stride:, :]  # the halo above cropped off
        out[first * stride:first * stride + rows] = _to_array(band, channels, rows, width)
    return out


def image_to_indices(net, array: np.ndarray, stages: int, rd_lambda: float,
                     device: torch.device, *, band_rows: int | None = None) -> torch.Tensor:
    """Encode a uint8 image (HxW or HxWx3) to indices in the quantizer's layout ([S', h, w]
    or [R', G, h, w]) on the CPU.

    A block-wise encoder (no conv path: each stride x stride block's latent depends on that
    block alone, and so do its indices) runs on bands of block rows, each made float only
    when it is encoded, so memory stays bounded; the indices are those of the whole image. A
    conv encoder, or an image of at most `ENCODE_BAND_POSITIONS` latent positions, is
    encoded whole.

    Args:
        net: the image model.
        array: the image.
        stages, rd_lambda: the rate setting (`LoadedModel.rate_for_quality`).
        device: where the encoder runs.
        band_rows: latent rows per band; None: as many as `ENCODE_BAND_POSITIONS` allows.
    """
    stride = net.config.stride
    grid_h, grid_w = -(-array.shape[0] // stride), -(-array.shape[1] // stride)
    if band_rows is None:
        band_rows = grid_h if grid_h * grid_w <= ENCODE_BAND_POSITIONS else max(
            1, ENCODE_BAND_POSITIONS // grid_w)
    if net.config.autoencoder.encoder_conv or band_rows >= grid_h:
        return net.encode(image_to_tensor(array, stride, device), stages, rd_lambda)[0].cpu()
    out = None  # allocated once the first band gives the layout (no second copy to join)
    for first, end in _bands(grid_h, band_rows):
        # The last band's rows past the image are padded by image_to_tensor as the whole
        # image's would be (replicating its last row).
        x = image_to_tensor(array[first * stride:end * stride], stride, device)
        band = net.encode(x, stages, rd_lambda)[0].cpu()
        if out is None:
            out = torch.empty((*band.shape[:-2], grid_h, grid_w), dtype=band.dtype)
        out[..., first:end, :] = band
    return out


def compress_image(image, *, model: str | LoadedModel | None = None,
                   quality: int | None = None, device: str = "auto",
                   tile: int = IMAGE_TILE,
                   context_stages: int | None = IMAGE_CONTEXT_STAGES,
                   adapt: bool = True) -> ImageCompression:
    """Compress an image (PIL image or uint8 array HxW / HxWx3) into a `.vqc` file's bytes.

    Args:
        image: the image.
        model: shipped model name, model file path, or a loaded model; None: the default
            for the image's size (`zoo.registry.default_image_model`).
        quality: 1..N (more stages, more bits); default: the model's default. Qualities
            past the model's ladder (`LoadedModel.refined_qualities`) also code a refinement
            of the decoded picture (format version 8: version 6's, the refined picture
            deblocked and restored by the shipped refinement filter).
        device: "auto", "cpu" or "cuda".
        tile: the side, in latent positions, of the tiles a latent grid larger than one
            tile is coded in (1..65535; the file records it); default `IMAGE_TILE`.
        context_stages: code the stages from this one on in one pass each (faster, a few
            tenths of a percent larger; the file records it); None: every stage with the
            model's context schedule. Default `IMAGE_CONTEXT_STAGES`.
        adapt: with an exact prior, code every pass of every tile with its tables adapted
            to the codes already coded (`coding.latent_codec.ADAPTATION_WEIGHTS`: each
            pass's cheapest weight, or none, named in the stream; format version 5). The
            prior was trained over every rate; this adapts it to the file's.
    """
    if isinstance(tile, bool) or not isinstance(tile, int) or not 1 <= tile <= MAX_TILE:
        raise InputError(f"tile must be an integer 1 to {MAX_TILE}, got {tile!r}")
    if context_stages is not None and (isinstance(context_stages, bool)
                                       or not isinstance(context_stages, int)
                                       or context_stages < 0):
        raise InputError(f"context_stages must be an integer >= 0 or None, got "
                         f"{context_stages!r}")
    start = time.perf_counter()
    dev = resolve_device(device)
    array = as_image_array(image)
    height, width = array.shape[:2]
    if model is None:
        model = default_image_model(height * width)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device=dev)
    loaded.require_kind("image")
    net = loaded.model
    channels = 1 if array.ndim == 2 else 3
    quality = loaded.default_quality if quality is None else quality
    stages, rd_lambda = loaded.rate_for_quality(quality)
    step = loaded.refinement_step(quality)
    indices = image_to_indices(net, array, stages, rd_lambda, dev)
    context = stages if context_stages is None else min(context_stages, stages)
    latent_shape = tuple(indices.shape[-2:])
    tiled = max(latent_shape) > tile  # a grid that fits in one tile is coded untiled
    adapted = adapt and bool(getattr(file_codec(net), "portable", False))
    # One chunk per stage: a file cut after k chunks still decodes its first k stages.
    coded, portable, check = encode_indices(loaded, indices, stream_per_stage=True,
                                            tile=tile if tiled else None,
                                            context_stages=context, adapt=adapted)
    streams, nll_bits, payload_bits = list(coded.streams), coded.nll_bits, coded.payload_bits
    if step:
        # The refinement codes what the decoder's picture misses, so it needs that picture.
        base = indices_to_image(net, indices, channels, height, width, dev)
        stream, bits, _ = encode_refinement(array, base, step)
        streams.append(stream)
        nll_bits += bits
        payload_bits += 8 * len(stream)
    header = ContainerHeader(
        media_type=MediaType.IMAGE, model_id=loaded.name, weights_hash=loaded.weights_hash,
        num_stages=stages, shape=(channels, height, width), sample_rate=0,
        latent_shape=latent_shape, portable=portable, index_check=check,
        num_chunks=len(streams), tile=tile if tiled else 0, context_stages=context,
        adapted=adapted, refinement_step=step,
        # The oldest version that holds the file, so that earlier readers read it.
        version=FILTERED_VERSION if step else FORMAT_VERSION)
    data = pack_container(header, streams)
    return ImageCompression(data=data, header=header, payload_bytes=payload_bits // 8,
                            nll_bits=nll_bits, num_pixels=height * width,
                            seconds=time.perf_counter() - start)


def decompress_image(data: bytes, *, model: str | LoadedModel | None = None,
                     device: str = "auto", stages: int | None = None) -> np.ndarray:
    """Decode a `.vqc` file's bytes to a uint8 array (HxWx3, or HxW for grayscale).

    Args:
        data: the file's bytes.
        model: optional model name/path/loaded model; by default the one named in the file.
        device: "auto", "cpu" or "cuda".
        stages: decode only the first `stages` stages (rounds), a coarser picture, without
            a refined file's refinement; the stream stops being read after them, and a file
            (version 3 or later) cut after that many chunks suffices. None: all stages the
            file codes, and its refinement.
    """
    header, payload, loaded, dev = open_file(data, MediaType.IMAGE, model, device)
    net = loaded.model
    channels, height, width = header.shape
    stride = net.config.stride
    expected = (-(-height // stride), -(-width // stride))
    if (channels not in (1, 3) or tuple(header.latent_shape) != expected
            or header.num_stages > net.config.num_stages):
        raise ModelError("inconsistent .vqc header: shape, latent grid or stages do not fit the model")
    num_stages = stages_to_decode(header, payload, stages)
    refinement = refinement_held(header, payload) if stages is None else None
    if stages is None and header.refinement_step and refinement is None:
        raise ContainerError(f"truncated .vqc file: it holds the {header.num_stages} stages "
                             f"but not their refinement (decode those with --stages "
                             f"{header.num_stages})")
    indices = decode_indices(header, loaded, stage_payload(header, payload), num_stages,
                             *expected, complete=num_stages == header.num_stages,
                             tile=header.tile or None)
    picture = indices_to_image(net, indices, channels, height, width, dev)
    if refinement is None:
        return picture
    step = header.refinement_step
    refined = decode_refinement(refinement, step, picture,
                                deblocked=header.version >= DEBLOCKED_VERSION)
    if header.version < FILTERED_VERSION:
        return refined
    return restore_refined(refined, picture, step, dev)


def restore_refined(refined: np.ndarray, base: np.ndarray, step: float,
                    device: torch.device) -> np.ndarray:
    """A format version 8 decoder's picture: the refined, deblocked picture (uint8 HxWx3
    or HxW) restored by the shipped refinement filter, which also sees the base picture."""
    net, _ = load_refinement_filter(device=device)
    return restore_picture(net, refined, base, step, device)
