"""Tests for the `.vqc` container: round trips, and refusal of every malformed input.

Most of these run on version-2 files (one payload, one CRC at the end), which vqcodec still
reads and can write; the version-3 layout (one chunk per stage) is tested in
`test_progressive.py`."""
from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import torch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vqcodec.format import (
    FORMAT_VERSION,
    MAGIC,
    FLAG_PORTABLE,
    ContainerError,
    ContainerHeader,
    MediaType,
    pack_container,
    index_check,
    read_header,
    unpack_container,
    weights_hash,
)

IMAGE_HEADER = ContainerHeader(
    media_type=MediaType.IMAGE,
    model_id="img-v1",
    weights_hash=weights_hash(b"image weights"),
    num_stages=4,
    shape=(3, 480, 640),
    sample_rate=0,
    latent_shape=(60, 80),
    index_check=0x1234_5678,
    version=2,
)
AUDIO_HEADER = ContainerHeader(
    media_type=MediaType.AUDIO,
    model_id="audio-24k",
    weights_hash=weights_hash(b"audio weights"),
    num_stages=8,
    shape=(1, 24_000),
    sample_rate=24_000,
    latent_shape=(75,),
    portable=True,
    index_check=0xFFFF_FFFF,
    version=2,
)
SMALL = pack_container(IMAGE_HEADER, b"\x01\x02\x03\x04\x05")


def _with_crc(body: bytes) -> bytes:
    """Append a valid CRC, to reach the checks that run after it."""
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("header", [IMAGE_HEADER, AUDIO_HEADER])
@pytest.mark.parametrize("payload", [b"", b"\x00", bytes(range(256)) * 3])
def test_round_trip(header: ContainerHeader, payload: bytes) -> None:
    data = pack_container(header, payload)
    assert unpack_container(data) == (header, payload)
    assert read_header(data) == header
    assert data.startswith(MAGIC) and data[4] == 2


def test_documented_header_size() -> None:
    # docs/format.md works this example through: version 2, 57 header bytes, payload, 4 CRC
    # bytes; version 3, 58 header bytes (CRC included), 4 + 3 + 4 chunk bytes; versions 4 and
    # 5, two bytes more (the context stages, then the anchor weight or the adaptation).
    assert len(pack_container(IMAGE_HEADER, b"xyz")) == 57 + 3 + 4
    v3 = dataclasses.replace(IMAGE_HEADER, version=3)
    assert len(pack_container(v3, b"xyz")) == 58 + 4 + 3 + 4
    for version in (4, FORMAT_VERSION):
        v4 = dataclasses.replace(IMAGE_HEADER, version=version)
        assert len(pack_container(v4, b"xyz")) == 60 + 4 + 3 + 4
    assert FORMAT_VERSION == 5


def test_weights_hash() -> None:
    digest = weights_hash(b"abc")
    assert digest == bytes.fromhex("ba7816bf8f01cfea")  # first 8 bytes of SHA-256("abc")
    assert weights_hash(b"abd") != digest


def test_header_normalises_integer_like_values() -> None:
    header = ContainerHeader(
        media_type=1,  # type: ignore[arg-type]
        model_id="m",
        weights_hash=bytearray(8),  # type: ignore[arg-type]
        num_stages=np.int64(2),  # type: ignore[arg-type]
        shape=np.array([3, 4, 5]).tolist(),  # type: ignore[arg-type]
        sample_rate=0,
        latent_shape=(np.int32(2), 3),  # type: ignore[arg-type]
    )
    assert header.media_type is MediaType.IMAGE
    assert header.weights_hash == bytes(8) and type(header.weights_hash) is bytes
    assert header.shape == (3, 4, 5) and header.latent_shape == (2, 3)
    assert all(type(d) is int for d in header.latent_shape)


def test_every_single_byte_change_is_refused() -> None:
    for pos in range(len(SMALL)):
        for value in range(256):
            if value == SMALL[pos]:
                continue
            corrupted = SMALL[:pos] + bytes([value]) + SMALL[pos + 1 :]
            with pytest.raises(ContainerError):
                unpack_container(corrupted)


def test_every_truncation_is_refused() -> None:
    for end in range(len(SMALL)):
        with pytest.raises(ContainerError):
            unpack_container(SMALL[:end])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"VQ", "truncated .vqc file: only 2 bytes"),
        (MAGIC, "truncated .vqc file: header ends inside the format version"),
        (SMALL[:10], "truncated .vqc file: header ends inside the model id"),
        (SMALL[:-5], "truncated .vqc file: expected 5 payload bytes, found 4"),
        (SMALL[:50], "truncated .vqc file: header ends inside the index check"),
        (SMALL[:55], "truncated .vqc file: header ends inside the payload length"),
        (SMALL[:-2], "truncated .vqc file: checksum missing"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "not a .vqc file (bad magic)"),
        (b"x", "not a .vqc file (bad magic)"),
        (SMALL + b"\x00", "trailing data after .vqc payload"),
        (SMALL[:-1] + bytes([SMALL[-1] ^ 1]), "corrupted .vqc file (CRC mismatch)"),
    ],
)
def test_error_messages(data: bytes, message: str) -> None:
    with pytest.raises(ContainerError) as info:
        unpack_container(data)
    assert str(info.value) == message


def test_unknown_version() -> None:
    data = MAGIC + bytes([9]) + SMALL[5:]
    with pytest.raises(ContainerError, match=r"^unsupported \.vqc format version 9 \(this vqcodec reads versions 1, 2, 3, 4, 5, 6, 7, 8; a newer vqcodec may read it\)$"):
        unpack_container(data)


def test_unknown_media_type_before_crc() -> None:
    data = SMALL[:6] + bytes([9]) + SMALL[7:]  # after magic, version and flags
    with pytest.raises(ContainerError, match="^unknown media type 9 in .vqc header$"):
        unpack_container(data)


def test_bad_field_value_with_valid_crc() -> None:
    # A faulty writer: num_stages = 0 behind a correct CRC.
    body = bytearray(SMALL[:-4])
    body[8 + len(IMAGE_HEADER.model_id) + 8] = 0
    with pytest.raises(ContainerError, match="^invalid .vqc header: num_stages must be 1 to 255, got 0$"):
        unpack_container(_with_crc(bytes(body)))


def test_non_ascii_model_id_with_valid_crc() -> None:
    body = bytearray(SMALL[:-4])
    body[8] = 0xE9
    with pytest.raises(ContainerError, match="model id is not ASCII"):
        unpack_container(_with_crc(bytes(body)))


def test_huge_declared_lengths_do_not_over_read() -> None:
    # ndim 255 and payload length 2**32-1 must fail on bounds, not allocate or index past the end.
    body = bytearray(SMALL[:-4])
    body[8 + len(IMAGE_HEADER.model_id) + 9] = 255  # the ndim byte
    with pytest.raises(ContainerError, match="truncated"):
        unpack_container(bytes(body))
    head = pack_container(IMAGE_HEADER, b"")[:-8]
    with pytest.raises(ContainerError, match=f"expected {2**32 - 1} payload bytes, found 4"):
        unpack_container(head + struct.pack("<I", 2**32 - 1) + bytes(4))


def test_not_bytes_is_container_error() -> None:
    with pytest.raises(ContainerError):
        unpack_container("VQC")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    with pytest.raises(ContainerError):
        unpack_container(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_after_valid_prefix(tail: bytes) -> None:
    # Get past magic and version so the fuzzer exercises the field parsing.
    try:
        unpack_container(MAGIC + bytes([FORMAT_VERSION]) + tail)
    except ContainerError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(SMALL) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_mutations(edits: list[tuple[int, int]]) -> None:
    data = bytearray(SMALL)
    for pos, value in edits:
        data[pos] = value
    if bytes(data) == SMALL:
        return
    with pytest.raises(ContainerError):
        unpack_container(bytes(data))


@settings(max_examples=100, deadline=None)
@given(
    media=st.sampled_from(MediaType),
    model_id=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=64),
    digest=st.binary(min_size=8, max_size=8),
    stages=st.integers(1, 255),
    shape=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4),
    rate=st.integers(1, 2**32 - 1),
    latent=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3),
    payload=st.binary(max_size=64),
    portable=st.booleans(),
    check=st.integers(0, 2**32 - 1),
)
def test_fuzz_round_trip(
    media: MediaType,
    model_id: str,
    digest: bytes,
    stages: int,
    shape: list[int],
    rate: int,
    latent: list[int],
    payload: bytes,
    portable: bool,
    check: int,
) -> None:
    header = ContainerHeader(
        media_type=media,
        model_id=model_id,
        weights_hash=digest,
        num_stages=stages,
        shape=tuple(shape),
        sample_rate=0 if media is MediaType.IMAGE else rate,
        latent_shape=tuple(latent),
        portable=portable,
        index_check=check,
        version=2,
    )
    assert unpack_container(pack_container(header, payload)) == (header, payload)


_VALID = dict(
    media_type=MediaType.IMAGE,
    model_id="m",
    weights_hash=bytes(8),
    num_stages=1,
    shape=(3, 2, 2),
    sample_rate=0,
    latent_shape=(1, 1),
)


@pytest.mark.parametrize(
    "override",
    [
        {"media_type": 3},
        {"media_type": "IMAGE"},
        {"model_id": ""},
        {"model_id": "x" * 65},
        {"model_id": "modèle"},
        {"model_id": "a\nb"},
        {"model_id": b"m"},
        {"weights_hash": bytes(7)},
        {"weights_hash": bytes(9)},
        {"weights_hash": "12345678"},
        {"num_stages": 0},
        {"num_stages": 256},
        {"num_stages": 1.0},
        {"num_stages": True},
        {"shape": ()},
        {"shape": (1, 2, 3, 4, 5)},
        {"shape": (3, -1, 2)},
        {"shape": (3, 2**32, 2)},
        {"shape": "abc"},
        {"shape": 3},
        {"shape": (3.0, 2, 2)},
        {"latent_shape": ()},
        {"latent_shape": (1, 1, 1, 1)},
        {"latent_shape": (-1,)},
        {"sample_rate": 16_000},
        {"sample_rate": -1},
        {"media_type": MediaType.AUDIO, "sample_rate": 0},
        {"media_type": MediaType.AUDIO, "sample_rate": 2**32},
        {"portable": 1},
        {"index_check": -1},
        {"index_check": 2**32},
        {"version": 9},
        {"num_chunks": 2},
        {"adapted": True, "portable": True, "version": 4},  # adapted tables: version 5
        {"adapted": True},  # not portable
        {"context_stages": -1},
        {"context_stages": 4},  # more than num_stages
        {"num_stages": 2, "context_stages": 1, "version": 3},  # one-pass stages: version 4
        {"context_stages": 0, "version": 4, "media_type": MediaType.AUDIO, "sample_rate": 8000},
        {"version": 2, "num_stages": 2, "num_chunks": 2},
    ],
)
def test_invalid_header_fields(override: dict) -> None:
    with pytest.raises(ContainerError):
        ContainerHeader(**{**_VALID, **override})


def test_header_is_frozen() -> None:
    with pytest.raises(AttributeError):
        IMAGE_HEADER.num_stages = 2  # type: ignore[misc]


def test_pack_rejects_non_header() -> None:
    with pytest.raises(TypeError):
        pack_container(object(), b"")  # type: ignore[arg-type]


def _version_1_file(header: ContainerHeader, payload: bytes) -> bytes:
    """A file as vqcodec 0.1 wrote it: no flags byte, no index check."""
    model_id = header.model_id.encode()
    body = b"".join([
        MAGIC, bytes([1, header.media_type, len(model_id)]), model_id, header.weights_hash,
        bytes([header.num_stages, len(header.shape)]),
        *(struct.pack("<I", d) for d in header.shape), struct.pack("<I", header.sample_rate),
        bytes([len(header.latent_shape)]), *(struct.pack("<I", d) for d in header.latent_shape),
        struct.pack("<I", len(payload)), payload])
    return _with_crc(body)


def test_version_1_files_are_still_read() -> None:
    data = _version_1_file(IMAGE_HEADER, b"abcd")
    header, payload = unpack_container(data)
    assert payload == b"abcd" and header.version == 1
    assert header.index_check is None and header.portable is False
    assert header.shape == IMAGE_HEADER.shape and header.model_id == IMAGE_HEADER.model_id


def test_version_2_layout() -> None:
    data = pack_container(AUDIO_HEADER, b"")
    assert data[4] == 2 and data[5] == FLAG_PORTABLE  # version, then flags
    assert read_header(data).portable and read_header(SMALL).portable is False


def test_unknown_flags_and_versions_are_refused() -> None:
    body = pack_container(IMAGE_HEADER, b"")[:-4]
    with pytest.raises(ContainerError, match="unknown flags 0x02"):
        unpack_container(_with_crc(body[:5] + b"\x02" + body[6:]))
    with pytest.raises(ContainerError, match="unsupported .vqc format version 9"):
        unpack_container(_with_crc(body[:4] + b"\x09" + body[5:]))


def test_writing_needs_an_index_check() -> None:
    header = ContainerHeader(**_VALID)
    with pytest.raises(ContainerError, match="index check"):
        pack_container(header, b"")


def test_index_check_is_the_crc_of_int32_indices() -> None:
    indices = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert index_check(indices) == zlib.crc32(indices.astype("<i4").tobytes())
    assert index_check(torch.from_numpy(indices)) == index_check(indices)
    changed = indices.copy()
    changed[2, 3] += 1
    assert index_check(changed) != index_check(indices)
