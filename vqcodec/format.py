"""The `.vqc` container: a small self-describing header, the entropy-coded payload, a CRC32.

This module is the single place that knows the byte layout (documented in `docs/format.md`).
Everything is little-endian. Version 5 (written):

    magic (4) | version u8 | flags u8 | media type u8 | model id length u8 | model id bytes
    | weights hash (8) | num_stages u8 | ndim u8 | shape dims u32 each | sample_rate u32
    | latent ndim u8 | latent dims u32 each | index check u32 | chunk count u8
    | context stages u8 | adapted tables u8 | [tile u16, only with the tiled flag]
    | header CRC32 u32 | chunk count x (chunk length u32 | chunk bytes | CRC32 u32)

Version 6 (written for refined images only) has a refinement step (u16) after the adapted
tables byte, and one chunk more than the stages: the refinement's stream.

Version 4 (still read and writable) has the anchor weight's log2 where version 5 has the
adapted-tables byte (0 or 1): it adapts stage 0's first pass only, with one weight. Version 3
(still read and writable) has neither byte nor the context stages: every stage is coded with
the model's context schedule, nothing adapted.

Every CRC32 is zlib.crc32 of all the file's bytes before it, so a file cut after any chunk is
still a verified prefix: with one chunk per stage (images), the first k chunks decode the first
k stages. Version 2 (still read and writable) has one payload (length u32, bytes) and one CRC32
at the end, after the index check; version 1 (read only) has no flags byte and no index check.

`unpack_container` treats its input as untrusted: it never indexes past the end of the data and
raises nothing but `ContainerError`, whose message is one line meant for the user.
"""
from __future__ import annotations

import enum
import hashlib
import operator
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ContainerError

__all__ = [
    "FLAG_PORTABLE",
    "FORMAT_VERSION",
    "MAGIC",
    "READABLE_VERSIONS",
    "ContainerError",
    "ContainerHeader",
    "MediaType",
    "Payload",
    "pack_container",
    "stages_held",
    "index_check",
    "read_header",
    "refinement_held",
    "stage_payload",
    "unpack_container",
    "weights_hash",
]

# The 0x89 byte (as in PNG) makes the magic non-ASCII, so text tools and transfers that
# mangle 8-bit data are caught by the very first check.
MAGIC = b"VQC\x89"
FORMAT_VERSION = 5
# Version 6 adds the refinement step (images past the quantizer's ladder); vqcodec writes it
# only for refined images, so every other file stays readable by a vqcodec that reads 5.
# Version 7 has version 6's layout; its decoder deblocks the refined picture
# (`coding.refinement.deblock`), so a reader of 6 would return other pixels: vqcodec writes
# 7 for refined images.
# Version 8 has version 6's layout too; its decoder also restores the deblocked picture with
# the shipped refinement filter (`zoo.filters`, `nn.refinement_filter`): vqcodec writes 8 for
# refined images.
REFINED_VERSION = 6
DEBLOCKED_VERSION = 7
FILTERED_VERSION = 8
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8)
WRITABLE_VERSIONS = (2, 3, 4, 5, 6, 7, 8)

# What a payload is: one range-coder stream (versions 1, 2) or a tuple of separately coded
# chunks (versions 3 to 5).
Payload = bytes | tuple[bytes, ...]

FLAG_PORTABLE = 0x01  # tables come from an exact integer prior: decodes on any machine
# Versions 3 to 5: the image's latent grid is coded in independent tiles, whose side (in
# latent positions) a u16 after the chunk count (versions 4, 5: after the adaptation byte)
# gives.
FLAG_TILED = 0x02
_KNOWN_FLAGS = {1: 0, 2: FLAG_PORTABLE, 3: FLAG_PORTABLE | FLAG_TILED,
                4: FLAG_PORTABLE | FLAG_TILED, 5: FLAG_PORTABLE | FLAG_TILED,
                6: FLAG_PORTABLE | FLAG_TILED, 7: FLAG_PORTABLE | FLAG_TILED,
                8: FLAG_PORTABLE | FLAG_TILED}
MAX_TILE = 0xFFFF
MAX_ANCHOR_WEIGHT_LOG2 = 15  # anchor weights are 2^1 .. 2^15
# Version 6: the refinement step in quarters of an 8-bit level, 1.0 .. 255.0 (0: none), u16.
MIN_REFINEMENT_QUARTERS = 4
MAX_REFINEMENT_QUARTERS = 4 * 255

MAX_MODEL_ID_LENGTH = 64
WEIGHTS_HASH_SIZE = 8
MAX_U8 = 0xFF
MAX_U32 = 0xFFFF_FFFF
MAX_SHAPE_NDIM = 4
MAX_LATENT_NDIM = 3

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_CRC_SIZE = _U32.size


class MediaType(enum.IntEnum):
    """What the container holds; decides how `shape` and `sample_rate` are read."""

    IMAGE = 1
    AUDIO = 2


def _as_int(value: object, name: str) -> int:
    """`value` as a plain int (numpy/torch integers accepted, bools and floats refused)."""
    if isinstance(value, bool):
        raise ContainerError(f"{name} must be an integer, got a bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ContainerError(f"{name} must be an integer, got {type(value).__name__}") from None


def _as_dims(value: object, name: str, *, max_ndim: int) -> tuple[int, ...]:
    """`value` as a tuple of 1..max_ndim u32 dimensions."""
    if isinstance(value, (str, bytes)):
        raise ContainerError(f"{name} must be a tuple of integers, got {type(value).__name__}")
    try:
        dims = tuple(_as_int(d, f"{name} dimension") for d in value)  # type: ignore[union-attr]
    except TypeError:
        raise ContainerError(f"{name} must be a tuple of integers, got {type(value).__name__}") from None
    if not 1 <= len(dims) <= max_ndim:
        raise ContainerError(f"{name} must have 1 to {max_ndim} dimensions, got {len(dims)}")
    for d in dims:
        if not 0 <= d <= MAX_U32:
            raise ContainerError(f"{name} dimension {d} out of range 0..{MAX_U32}")
    return dims


@dataclass(frozen=True)
class ContainerHeader:
    """Everything a decoder needs besides the payload.

    Fields are validated on construction (`ContainerError` on bad values); integer-like values
    (e.g. numpy integers, `torch.Size`) are normalised to `int` / `tuple[int, ...]`.

    Args:
        media_type: image or audio.
        model_id: name of the model that coded the payload; printable ASCII, 1..64 characters.
        weights_hash: first 8 bytes of the SHA-256 of the model weights (see `weights_hash()`),
            so a payload is never decoded with different weights than it was coded with.
        num_stages: the rate setting, i.e. how many residual quantizer stages are coded (1..255).
        shape: original media shape, image (channels, height, width) or audio
            (channels, num_samples); 1..4 dimensions, each 0..2**32-1.
        sample_rate: audio sample rate in Hz (u32, > 0); must be 0 for images.
        latent_shape: shape of the index grid coded per stage, e.g. (h, w) for images or
            (frames,) for audio; 1..3 dimensions, each 0..2**32-1.
        portable: the payload's tables come from an exact integer prior, so the file decodes
            identically on every machine (flag bit 0).
        index_check: CRC32 of the coded indices (see `index_check`), which the decoder compares
            with what it decoded; None for version-1 files, which carry none.
        version: the format version the header was read from, or is to be written in (default:
            the current one).
        num_chunks: how many separately coded chunks the payload has (versions 3 to 5): 1
            (every stage in one stream) or `num_stages` (chunk i holds stage i, so a file cut
            after k chunks still decodes its first k stages). Always 1 before version 3.
        tile: images of versions 3 to 5: the side, in latent positions, of the tiles the
            latent grid was coded in (independent windows in raster order within each stage's
            chunk), 1..65535; 0: one window, the whole grid. A tiled image has one chunk per
            stage, and a grid that fits in one tile is written untiled.
        context_stages: images of versions 4, 5: how many leading stages were coded with the
            model's context schedule, 0..num_stages; the later ones were coded in one pass
            each (`coding.context.stage_schedules`). None (the default): all of them (written
            as `num_stages`, which reads back as None), as always before version 4 and for
            audio.
        anchor_weight: images of version 4 with a portable prior: stage 0's first pass was
            coded with its tables adapted to the codes coded before (`coding.latent_codec.
            AdaptiveCounts`) with this weight, a power of two 2..2^15; None: not adapted.
        adapted: images of versions 5, 6 with a portable prior: every pass of every tile was
            coded with its tables adapted, with the weight its stream names before it
            (`coding.latent_codec.ADAPTATION_WEIGHTS`); False: nothing adapted.
        refinement_step: images of versions 6 to 8: the step, in 8-bit levels (a multiple of 1/4,
            1 to 255), of the refinement (`coding.refinement`) whose stream is the chunk
            after the stages' (so `num_chunks` is `num_stages + 1`); 0: none.
    """

    media_type: MediaType
    model_id: str
    weights_hash: bytes
    num_stages: int
    shape: tuple[int, ...]
    sample_rate: int
    latent_shape: tuple[int, ...]
    portable: bool = False
    index_check: int | None = None
    version: int = FORMAT_VERSION
    num_chunks: int = 1
    tile: int = 0
    context_stages: int | None = None
    anchor_weight: int | None = None
    adapted: bool = False
    refinement_step: float = 0.0

    def __post_init__(self) -> None:
        # Frozen dataclass: normalise through object.__setattr__.
        set_field = object.__setattr__

        try:
            media_type = MediaType(self.media_type)
        except ValueError:
            raise ContainerError(f"unknown media type {self.media_type!r}") from None
        set_field(self, "media_type", media_type)

        if not isinstance(self.model_id, str):
            raise ContainerError(f"model id must be a str, got {type(self.model_id).__name__}")
        # Printable ASCII only: the id ends up in user-facing messages and file listings.
        if not self.model_id.isascii() or not self.model_id.isprintable():
            raise ContainerError(f"model id must be printable ASCII, got {self.model_id!r}")
        if not 1 <= len(self.model_id) <= MAX_MODEL_ID_LENGTH:
            raise ContainerError(
                f"model id must be 1 to {MAX_MODEL_ID_LENGTH} characters, got {len(self.model_id)}"
            )

        if not isinstance(self.weights_hash, (bytes, bytearray, memoryview)):
            raise ContainerError(
                f"weights hash must be bytes, got {type(self.weights_hash).__name__}"
            )
        digest = bytes(self.weights_hash)
        if len(digest) != WEIGHTS_HASH_SIZE:
            raise ContainerError(
                f"weights hash must be {WEIGHTS_HASH_SIZE} bytes, got {len(digest)}"
            )
        set_field(self, "weights_hash", digest)

        num_stages = _as_int(self.num_stages, "num_stages")
        if not 1 <= num_stages <= MAX_U8:
            raise ContainerError(f"num_stages must be 1 to {MAX_U8}, got {num_stages}")
        set_field(self, "num_stages", num_stages)

        set_field(self, "shape", _as_dims(self.shape, "shape", max_ndim=MAX_SHAPE_NDIM))
        set_field(
            self,
            "latent_shape",
            _as_dims(self.latent_shape, "latent shape", max_ndim=MAX_LATENT_NDIM),
        )

        sample_rate = _as_int(self.sample_rate, "sample_rate")
        if not 0 <= sample_rate <= MAX_U32:
            raise ContainerError(f"sample_rate {sample_rate} out of range 0..{MAX_U32}")
        if media_type is MediaType.IMAGE and sample_rate != 0:
            raise ContainerError(f"sample_rate must be 0 for images, got {sample_rate}")
        if media_type is MediaType.AUDIO and sample_rate == 0:
            raise ContainerError("sample_rate must be positive for audio")
        set_field(self, "sample_rate", sample_rate)

        if not isinstance(self.portable, bool):
            raise ContainerError(f"portable must be a bool, got {type(self.portable).__name__}")
        if self.index_check is not None:
            check = _as_int(self.index_check, "index check")
            if not 0 <= check <= MAX_U32:
                raise ContainerError(f"index check {check} out of range 0..{MAX_U32}")
            set_field(self, "index_check", check)
        if self.version not in READABLE_VERSIONS:
            raise ContainerError(f"unsupported .vqc format version {self.version}")
        step = self.refinement_step
        if isinstance(step, bool) or not isinstance(step, (int, float)):
            raise ContainerError(f"refinement step must be a number, got {step!r}")
        step = float(step)
        if step and not (MIN_REFINEMENT_QUARTERS <= step * 4 <= MAX_REFINEMENT_QUARTERS
                         and step * 4 == int(step * 4)):
            raise ContainerError(f"refinement step must be a multiple of 0.25 from 1 to "
                                 f"{MAX_REFINEMENT_QUARTERS // 4}, got {step:g}")
        if step and (self.version < REFINED_VERSION or media_type is not MediaType.IMAGE):
            raise ContainerError("only images of format version 6 or later are refined")
        set_field(self, "refinement_step", step)
        num_chunks = _as_int(self.num_chunks, "num_chunks")
        if step and num_chunks != num_stages + 1:
            raise ContainerError(f"a refined image has one chunk per stage and one for the "
                                 f"refinement ({num_stages + 1}), got {num_chunks}")
        if not step and num_chunks not in (1, num_stages):
            raise ContainerError(
                f"num_chunks must be 1 or num_stages ({num_stages}), got {num_chunks}")
        if self.version < 3 and num_chunks != 1:
            raise ContainerError(f"format version {self.version} has one payload, not "
                                 f"{num_chunks} chunks")
        set_field(self, "num_chunks", num_chunks)
        tile = _as_int(self.tile, "tile")
        if not 0 <= tile <= MAX_TILE:
            raise ContainerError(f"tile must be 0 to {MAX_TILE}, got {tile}")
        if tile:
            if self.version < 3 or media_type is not MediaType.IMAGE:
                raise ContainerError("only images of format versions 3 to 6 are tiled")
            if self.stage_chunks != num_stages:
                raise ContainerError("a tiled image has one chunk per stage")
            if len(self.latent_shape) != 2 or max(self.latent_shape) <= tile:
                raise ContainerError(f"tile {tile} for a latent grid of "
                                     f"{'x'.join(map(str, self.latent_shape))}: a grid that "
                                     "fits in one tile is written untiled")
        set_field(self, "tile", tile)
        context = None if self.context_stages is None else _as_int(
            self.context_stages, "context stages")
        if context is not None and not 0 <= context <= num_stages:
            raise ContainerError(f"context stages must be 0 to num_stages ({num_stages}), "
                                 f"got {context}")
        if context == num_stages:
            context = None  # all stages: one meaning, one value
        if context is not None and (self.version < 4 or media_type is not MediaType.IMAGE):
            raise ContainerError("only images of format versions 4 to 6 code stages in one "
                                 "pass")
        set_field(self, "context_stages", context)
        anchor = None if self.anchor_weight is None else _as_int(self.anchor_weight,
                                                                  "anchor weight")
        if anchor is not None:
            if not (2 <= anchor <= 2 ** MAX_ANCHOR_WEIGHT_LOG2 and anchor & (anchor - 1) == 0):
                raise ContainerError(f"anchor weight must be a power of two 2 to "
                                     f"{2 ** MAX_ANCHOR_WEIGHT_LOG2}, got {anchor}")
            if self.version != 4 or media_type is not MediaType.IMAGE or not self.portable:
                raise ContainerError("only portable images of format version 4 adapt anchors")
        set_field(self, "anchor_weight", anchor)
        if not isinstance(self.adapted, bool):
            raise ContainerError(f"adapted must be a bool, got {type(self.adapted).__name__}")
        if self.adapted and (self.version < 5 or media_type is not MediaType.IMAGE
                             or not self.portable):
            raise ContainerError("only portable images of format versions 5, 6 adapt their "
                                 "tables")

    @property
    def stage_chunks(self) -> int:
        """How many chunks hold stages (all but a refined image's last)."""
        return self.num_chunks - (1 if self.refinement_step else 0)

    @property
    def chunk_per_stage(self) -> bool:
        """Chunk i holds stage i (so the file is truncatable stage by stage)."""
        return self.stage_chunks == self.num_stages


def index_check(indices) -> int:
    """CRC32 of code indices as the file's index check: the indices as little-endian int32 in
    C order of the codec's layout ([S', H, W] or [R', G, H, W] for images, [C, S', F] for
    audio). A decoder that gets other indices than were coded (a corrupted payload, or tables
    that differ from the encoder's) finds a mismatch instead of returning other output.

    Args:
        indices: an integer tensor or array.
    """
    import numpy as np

    array = indices.cpu().numpy() if hasattr(indices, "cpu") else np.asarray(indices)
    return zlib.crc32(np.ascontiguousarray(array, dtype="<i4").tobytes())


def weights_hash(data: bytes) -> bytes:
    """Fingerprint of a model file: the first 8 bytes of its SHA-256.

    Args:
        data: the raw bytes of the weights file.
    """
    return hashlib.sha256(data).digest()[:WEIGHTS_HASH_SIZE]


def _encode_header(header: ContainerHeader) -> bytes:
    """Header bytes up to and including the index check (what versions 2 and 3 share)."""
    model_id = header.model_id.encode("ascii")
    if header.index_check is None:
        raise ContainerError("a written .vqc file needs the index check of its indices")
    parts = [
        MAGIC,
        _U8.pack(header.version),
        _U8.pack((FLAG_PORTABLE if header.portable else 0) | (FLAG_TILED if header.tile else 0)),
        _U8.pack(header.media_type),
        _U8.pack(len(model_id)),
        model_id,
        header.weights_hash,
        _U8.pack(header.num_stages),
        _U8.pack(len(header.shape)),
        *(_U32.pack(d) for d in header.shape),
        _U32.pack(header.sample_rate),
        _U8.pack(len(header.latent_shape)),
        *(_U32.pack(d) for d in header.latent_shape),
        _U32.pack(header.index_check),
    ]
    return b"".join(parts)


def pack_container(header: ContainerHeader, payload: bytes | Sequence[bytes]) -> bytes:
    """Serialise a header and its payload into `.vqc` bytes, in `header.version` (2 to 5).

    Args:
        header: the (already validated) container header.
        payload: versions 3 to 5: the `header.num_chunks` chunks (one range-coder stream each; a
            single `bytes` is one chunk); version 2: the one stream. Each at most 2**32-1 bytes.

    Returns:
        The complete file contents, CRC32s included.
    """
    if not isinstance(header, ContainerHeader):
        raise TypeError(f"header must be a ContainerHeader, got {type(header).__name__}")
    if header.version not in WRITABLE_VERSIONS:
        raise ContainerError(f"vqcodec writes .vqc format versions "
                             f"{', '.join(map(str, WRITABLE_VERSIONS))}, not {header.version}")
    chunks = ((bytes(payload),) if isinstance(payload, (bytes, bytearray, memoryview))
              else tuple(bytes(chunk) for chunk in payload))
    if len(chunks) != header.num_chunks:
        raise ContainerError(f"the header declares {header.num_chunks} chunk(s), "
                             f"got {len(chunks)}")
    for chunk in chunks:
        if len(chunk) > MAX_U32:
            raise ContainerError(f"payload too large for a .vqc file: {len(chunk)} bytes")
    if header.version == 2:
        body = _encode_header(header) + _U32.pack(len(chunks[0])) + chunks[0]
        return body + _U32.pack(zlib.crc32(body))
    # Versions 3 to 5: each CRC32 covers every byte of the file before it (the running CRC).
    body = _encode_header(header) + _U8.pack(header.num_chunks)
    if header.version >= 4:
        body += _U8.pack(header.num_stages if header.context_stages is None
                         else header.context_stages)
    if header.version == 4:
        body += _U8.pack(0 if header.anchor_weight is None
                         else header.anchor_weight.bit_length() - 1)
    elif header.version >= 5:
        body += _U8.pack(int(header.adapted))
    if header.version >= REFINED_VERSION:
        body += _U16.pack(round(header.refinement_step * 4))
    if header.tile:
        body += _U16.pack(header.tile)
    crc = zlib.crc32(body)
    parts = [body, _U32.pack(crc)]
    for chunk in chunks:
        piece = _U32.pack(len(chunk)) + chunk
        crc = zlib.crc32(piece, zlib.crc32(parts[-1], crc))  # the previous CRC field, the chunk
        parts += [piece, _U32.pack(crc)]
    return b"".join(parts)


def stages_held(header: ContainerHeader, payload: Payload) -> int:
    """How many stages, from stage 0, `payload` (as `unpack_container` returned it, possibly
    truncated) holds: all of them in a complete file, the complete chunks' count in a file
    with one chunk per stage, else 0.

    Args:
        header: the file's header.
        payload: its payload.
    """
    if isinstance(payload, bytes) or len(payload) >= header.stage_chunks:
        return header.num_stages
    return len(payload) if header.chunk_per_stage else 0


def stage_payload(header: ContainerHeader, payload: Payload) -> Payload:
    """The part of `payload` that holds stages: all of it but a refined image's last chunk."""
    if isinstance(payload, bytes) or not header.refinement_step:
        return payload
    return payload[:header.stage_chunks]


def refinement_held(header: ContainerHeader, payload: Payload) -> bytes | None:
    """A refined image's refinement stream, if `payload` (possibly truncated) holds it."""
    if not header.refinement_step or isinstance(payload, bytes):
        return None
    return payload[header.stage_chunks] if len(payload) > header.stage_chunks else None


class _Reader:
    """Bounds-checked cursor over untrusted bytes: every short read is a `ContainerError`."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise ContainerError(f"truncated .vqc file: header ends inside the {what}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(_U32.size, what))[0]


def unpack_container(data: bytes, *, allow_truncation: bool = False
                     ) -> tuple[ContainerHeader, Payload]:
    """Parse and verify `.vqc` bytes.

    Checks run in this order: empty or too short, magic, format version, the bounds of every
    header field, media type, then (versions 1, 2) payload length (exactly the bytes before
    the CRC) and CRC32, or (versions 3 to 5) the header CRC32; then the header field values; then
    (versions 3 to 5) each chunk's bounds and CRC32, and nothing after the last chunk.

    Args:
        data: the complete file contents (untrusted).
        allow_truncation: accept a version-3 to -5 file cut short: the complete chunks are returned
            (possibly none) and an incomplete last one is dropped; `stages_held` says how many
            stages they hold. A chunk whose CRC does not match is refused all the same.

    Returns:
        The header and the payload: the stream's bytes (versions 1, 2), or the tuple of the
        chunks' bytes (versions 3 to 5).

    Raises:
        ContainerError: for anything that is not a valid container, and nothing else.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ContainerError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ContainerError("empty file")

    # A short file that starts like the magic is a cut-off .vqc; anything else is not one at all.
    head = data[: len(MAGIC)]
    if head != MAGIC[: len(head)]:
        raise ContainerError("not a .vqc file (bad magic)")
    if len(data) < len(MAGIC):
        raise ContainerError(f"truncated .vqc file: only {len(data)} bytes")

    reader = _Reader(data)
    reader.take(len(MAGIC), "magic")
    version = reader.u8("format version")
    if version not in READABLE_VERSIONS:
        raise ContainerError(
            f"unsupported .vqc format version {version} (this vqcodec reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; a newer vqcodec may read it)"
        )
    flags = reader.u8("flags") if version >= 2 else 0

    media_type = reader.u8("media type")
    model_id_len = reader.u8("model id length")
    model_id_raw = reader.take(model_id_len, "model id")
    digest = reader.take(WEIGHTS_HASH_SIZE, "weights hash")
    num_stages = reader.u8("stage count")
    ndim = reader.u8("shape")
    shape = tuple(reader.u32("shape") for _ in range(ndim))
    sample_rate = reader.u32("sample rate")
    latent_ndim = reader.u8("latent shape")
    latent_shape = tuple(reader.u32("latent shape") for _ in range(latent_ndim))
    check = reader.u32("index check") if version >= 2 else None
    if version >= 3:
        num_chunks = reader.u8("chunk count")
        context_stages = reader.u8("context stages") if version >= 4 else None
        anchor_log2 = reader.u8("anchor weight") if version == 4 else 0
        if anchor_log2 > MAX_ANCHOR_WEIGHT_LOG2:
            anchor_log2 = MAX_ANCHOR_WEIGHT_LOG2 + 1  # refused below, as 2^16
        adapted = reader.u8("adapted tables") if version >= 5 else 0
        refinement = (_U16.unpack(reader.take(_U16.size, "refinement step"))[0]
                      if version >= REFINED_VERSION else 0)
        tile = _U16.unpack(reader.take(_U16.size, "tile size"))[0] if flags & FLAG_TILED else 0
        crc_offset = reader.pos
        stored_crc = reader.u32("header checksum")
        if media_type not in MediaType._value2member_map_:
            raise ContainerError(f"unknown media type {media_type} in .vqc header")
        if zlib.crc32(data[:crc_offset]) != stored_crc:
            raise ContainerError("corrupted .vqc file (header CRC mismatch)")
    else:
        num_chunks, adapted, refinement = 1, 0, 0
        payload_len = reader.u32("payload length")
        if media_type not in MediaType._value2member_map_:
            raise ContainerError(f"unknown media type {media_type} in .vqc header")
        payload = _read_single_payload(reader, payload_len)

    # The header bytes are intact; a bad value past this point comes from a faulty writer.
    if flags & ~_KNOWN_FLAGS[version]:
        raise ContainerError(f"invalid .vqc header: unknown flags 0x{flags:02x}")
    if adapted > 1:
        raise ContainerError(f"invalid .vqc header: the adapted-tables byte must be 0 or 1, "
                             f"got {adapted}")
    try:
        model_id = model_id_raw.decode("ascii")
    except UnicodeDecodeError:
        raise ContainerError("invalid .vqc header: model id is not ASCII") from None
    try:
        header = ContainerHeader(
            media_type=MediaType(media_type),
            model_id=model_id,
            weights_hash=digest,
            num_stages=num_stages,
            shape=shape,
            sample_rate=sample_rate,
            latent_shape=latent_shape,
            portable=bool(flags & FLAG_PORTABLE),
            index_check=check,
            version=version,
            num_chunks=num_chunks,
            tile=tile if version >= 3 else 0,
            context_stages=context_stages if version >= 4 else None,
            anchor_weight=2 ** anchor_log2 if version == 4 and anchor_log2 else None,
            adapted=version >= 5 and adapted == 1,
            refinement_step=refinement / 4,
        )
    except ContainerError as exc:
        raise ContainerError(f"invalid .vqc header: {exc}") from None
    if version >= 3:
        payload = _read_chunks(reader, num_chunks, stored_crc, allow_truncation)
    return header, payload


def _read_single_payload(reader: _Reader, payload_len: int) -> bytes:
    """Versions 1, 2: the payload of `payload_len` bytes and the file's CRC32 after it."""
    available = reader.remaining
    if available < payload_len:
        raise ContainerError(
            f"truncated .vqc file: expected {payload_len} payload bytes, found {available}"
        )
    if available < payload_len + _CRC_SIZE:
        raise ContainerError("truncated .vqc file: checksum missing")
    if available > payload_len + _CRC_SIZE:
        raise ContainerError("trailing data after .vqc payload")
    payload = reader.take(payload_len, "payload")
    crc_offset = reader.pos
    (stored_crc,) = _U32.unpack(reader.take(_CRC_SIZE, "checksum"))
    if zlib.crc32(reader.data[:crc_offset]) != stored_crc:
        raise ContainerError("corrupted .vqc file (CRC mismatch)")
    return payload


def _read_chunks(reader: _Reader, num_chunks: int, crc: int,
                 allow_truncation: bool) -> tuple[bytes, ...]:
    """Versions 3, 4: the chunks after the header, each checked against its CRC32 (the running
    CRC of the file up to it; `crc` is the header's).

    Args:
        reader: positioned after the header CRC.
        num_chunks: how many chunks the header declares.
        crc: the running CRC32 so far (the header CRC's value).
        allow_truncation: return the complete chunks of a file cut short instead of refusing it.
    """
    crc = zlib.crc32(_U32.pack(crc), crc)  # the header CRC field is covered too
    chunks = []
    for i in range(num_chunks):
        head = reader.data[reader.pos:reader.pos + _U32.size]
        length = _U32.unpack(head)[0] if len(head) == _U32.size else None
        if length is None or reader.remaining < _U32.size + length + _CRC_SIZE:
            if allow_truncation:  # an incomplete last chunk is dropped, like a missing one
                break
            found = (f" (expected {length} bytes and a checksum, found "
                     f"{reader.remaining - _U32.size})" if length is not None else "")
            raise ContainerError(
                f"truncated .vqc file: it ends inside chunk {i + 1} of {num_chunks}{found}")
        reader.take(_U32.size, "chunk length")
        chunk = reader.take(length, "chunk")
        crc = zlib.crc32(chunk, zlib.crc32(head, crc))
        stored = reader.u32("chunk checksum")
        if stored != crc:
            raise ContainerError(f"corrupted .vqc file (CRC mismatch in chunk {i + 1} of "
                                 f"{num_chunks})")
        crc = zlib.crc32(_U32.pack(stored), crc)
        chunks.append(chunk)
    else:
        if reader.remaining:
            raise ContainerError("trailing data after .vqc payload")
    return tuple(chunks)


def read_header(data: bytes, *, allow_truncation: bool = False) -> ContainerHeader:
    """Parse and verify `.vqc` bytes, returning only the header (the whole file is checked).

    Args:
        data: the complete file contents (untrusted).
        allow_truncation: accept a version-3 to -5 file cut short (see `unpack_container`).
    """
    header, _ = unpack_container(data, allow_truncation=allow_truncation)
    return header
