"""Stages coded in one pass (`context_stages`, format version 4): the stages from k on are
coded with one prior evaluation each, predicted from the earlier stages only. Every k must
round-trip exactly, score as the teacher-forced NLL says, be recorded in the file, and a file
whose record was changed must be refused, not decoded to other output."""
from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vqcodec.cli.main import cli
from vqcodec.coding import file_codec
from vqcodec.coding.context import stage_schedules
from vqcodec.errors import ContainerError, InputError
from vqcodec.format import ContainerHeader, MediaType, pack_container, unpack_container
from vqcodec.pipelines.image import (IMAGE_CONTEXT_STAGES, compress_image, decompress_image,
                                     image_to_indices, indices_to_image)

from conftest import smooth_image

CPU = torch.device("cpu")


def test_stage_schedules():
    assert stage_schedules("checkerboard", 3) == ["checkerboard"] * 3
    assert stage_schedules("checkerboard", 4, 1) == ["checkerboard", "single", "single", "single"]
    assert stage_schedules("quad", 2, 5) == ["quad", "quad"]
    assert stage_schedules("checkerboard", 2, 0) == ["single", "single"]
    with pytest.raises(ValueError, match="at least 0"):
        stage_schedules("checkerboard", 2, -1)


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_grouped_model",
                                     "tiny_integer_grouped_model"])
def test_every_context_stage_count_round_trips(fixture, request, rng):
    loaded = request.getfixturevalue(fixture)
    net, codec = loaded.model, file_codec(loaded.model)
    stages, lam = loaded.rate_for_quality(4)
    indices = image_to_indices(net, smooth_image(rng, 40, 56), stages, lam, CPU)
    grid = indices.shape[-2:]
    full = codec.compress(indices, stream_per_stage=True)
    exact = bool(getattr(codec, "portable", False))
    for k in range(stages + 1):
        coded = codec.compress(indices, stream_per_stage=True, context_stages=k)
        assert torch.equal(codec.decompress(coded.streams, stages, *grid, context_stages=k),
                           indices)
        # Stages before k are coded as before: the same bytes.
        assert coded.streams[:k] == full.streams[:k]
        # The walk's NLL is the teacher-forced one (the same integers for an exact prior).
        with torch.no_grad():
            nll = -float(codec.forward(indices[None], context_stages=k).double().sum())
        assert nll == pytest.approx(coded.nll_bits, rel=1e-9 if exact else 1e-3)
    assert codec.compress(indices, stream_per_stage=True,
                          context_stages=stages).streams == full.streams
    # One-pass stages must be decoded as one-pass stages.
    one_pass = codec.compress(indices, stream_per_stage=True, context_stages=0)
    assert one_pass.streams[1:] != full.streams[1:]


def test_one_pass_stages_take_one_prior_evaluation(tiny_integer_grouped_model, rng):
    loaded = tiny_integer_grouped_model
    codec = file_codec(loaded.model)
    stages, lam = loaded.rate_for_quality(4)
    indices = image_to_indices(loaded.model, smooth_image(rng, 40, 56), stages, lam, CPU)
    for k in range(stages + 1):
        tables = codec.tables(indices, context_stages=k)
        assert len(tables) == 2 * k + (stages - k)  # checkerboard: two passes
        assert sum(len(t) for t in tables) == indices.numel()  # every symbol, once


def test_files_record_their_context_stages(tiny_integer_grouped_model, rng, tmp_path):
    loaded = tiny_integer_grouped_model
    image = smooth_image(rng, 40, 56)
    stages, lam = loaded.rate_for_quality(4)
    assert stages > IMAGE_CONTEXT_STAGES
    indices = image_to_indices(loaded.model, image, stages, lam, CPU)
    want = indices_to_image(loaded.model, indices, 3, *image.shape[:2], CPU)
    default = compress_image(image, model=loaded, quality=4, device="cpu")
    assert default.header.version == 5 and default.header.context_stages == IMAGE_CONTEXT_STAGES
    for k in (None, 0, 1, stages, stages + 3):
        result = compress_image(image, model=loaded, quality=4, device="cpu", context_stages=k)
        recorded = None if k is None or k >= stages else k
        assert unpack_container(result.data)[0].context_stages == recorded
        assert np.array_equal(decompress_image(result.data, model=loaded, device="cpu"), want)
    path = tmp_path / "a.vqc"
    path.write_bytes(default.data)
    info = CliRunner().invoke(cli, ["info", str(path)])
    assert f"stages with spatial context: {IMAGE_CONTEXT_STAGES}" in info.output
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(InputError, match="context_stages must be"):
            compress_image(image, model=loaded, context_stages=bad)


def _context_byte_offset(header: ContainerHeader) -> int:
    """Where versions 4 and 5 keep the context stages: right after the chunk count."""
    return (4 + 1 + 1 + 1 + 1 + len(header.model_id) + 8 + 1 + 1 + 4 * len(header.shape) + 4
            + 1 + 4 * len(header.latent_shape) + 4 + 1)


def _with_header_crc(data: bytes, header_end: int) -> bytes:
    """`data` with its header CRC recomputed (a faulty writer, not a transfer error), and each
    chunk CRC after it too (each covers every byte before it)."""
    out = bytearray(data)
    out[header_end:header_end + 4] = struct.pack("<I", zlib.crc32(bytes(out[:header_end])))
    pos = header_end + 4
    while pos < len(out):
        length = struct.unpack("<I", out[pos:pos + 4])[0]
        pos += 4 + length
        out[pos:pos + 4] = struct.pack("<I", zlib.crc32(bytes(out[:pos])))
        pos += 4
    return bytes(out)


def test_a_changed_context_stage_count_is_refused(tiny_integer_grouped_model, rng):
    loaded = tiny_integer_grouped_model
    data = compress_image(smooth_image(rng, 40, 56), model=loaded, quality=4, device="cpu").data
    header = unpack_container(data)[0]
    at = _context_byte_offset(header)
    assert data[at] == header.context_stages
    changed = bytearray(data)
    changed[at] = header.context_stages - 1
    with pytest.raises(ContainerError, match="header CRC mismatch"):
        decompress_image(bytes(changed), model=loaded, device="cpu")
    # Behind a valid CRC (a faulty writer), the index check catches the other schedule.
    forged = _with_header_crc(bytes(changed), at + 2)  # after the adaptation byte
    assert unpack_container(forged)[0].context_stages == header.context_stages - 1
    with pytest.raises(ContainerError, match="corrupted"):
        decompress_image(forged, model=loaded, device="cpu")
    too_many = bytearray(data)
    too_many[at] = header.num_stages + 1
    with pytest.raises(ContainerError, match="context stages must be 0 to num_stages"):
        unpack_container(_with_header_crc(bytes(too_many), at + 2))


def test_version_3_files_code_every_stage_with_the_schedule(tiny_integer_grouped_model, rng):
    loaded = tiny_integer_grouped_model
    image = smooth_image(rng, 40, 56)
    result = compress_image(image, model=loaded, quality=4, device="cpu", context_stages=None,
                            adapt=False)
    header, chunks = unpack_container(result.data)
    v3 = pack_container(dataclasses.replace(header, version=3), chunks)
    assert len(v3) == len(result.data) - 2  # no context-stages and adaptation bytes
    assert np.array_equal(decompress_image(v3, model=loaded, device="cpu"),
                          decompress_image(result.data, model=loaded, device="cpu"))
    with pytest.raises(ContainerError, match="format versions 4 to 6"):
        ContainerHeader(media_type=MediaType.IMAGE, model_id="m", weights_hash=bytes(8),
                        num_stages=3, shape=(3, 8, 8), sample_rate=0, latent_shape=(1, 1),
                        version=3, num_chunks=3, context_stages=1)


def test_parts_of_a_pass_write_the_same_stream(tiny_integer_grouped_model, rng, monkeypatch):
    """The exact codec scores and codes a pass in parts of `SCORE_CHUNK` positions: the part
    size must not change the stream."""
    loaded = tiny_integer_grouped_model
    codec = file_codec(loaded.model)
    stages, lam = loaded.rate_for_quality(4)
    indices = image_to_indices(loaded.model, smooth_image(rng, 40, 56), stages, lam, CPU)
    want = codec.compress(indices, stream_per_stage=True, context_stages=1)
    tables = codec.tables(indices, context_stages=1)
    monkeypatch.setattr(type(codec), "SCORE_CHUNK", 5)  # a 3 x 4 grid: parts of 5, 5, 2
    got = codec.compress(indices, stream_per_stage=True, context_stages=1)
    assert got.streams == want.streams and got.nll_bits == pytest.approx(want.nll_bits)
    assert all(torch.equal(a, b) for a, b in zip(codec.tables(indices, context_stages=1), tables))
    assert torch.equal(codec.decompress(got.streams, stages, *indices.shape[-2:],
                                        context_stages=1), indices)
