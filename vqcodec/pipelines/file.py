"""What the image and audio pipelines share: coding indices into a file's payload and back,
with the checks that keep a decoder from returning other output than was coded."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..coding import file_codec
from ..device import resolve_device
from ..errors import ContainerError, CorruptPayloadError, InputError, ModelError
from ..format import (ContainerHeader, MediaType, Payload, index_check, stages_held,
                      unpack_container)
from ..zoo.registry import LoadedModel, model_for_header


@dataclass
class Compression:
    """What a compress call produced and measured (`ImageCompression`, `AudioCompression` add
    what their rates are counted per)."""

    data: bytes  # the whole .vqc file
    header: ContainerHeader
    payload_bytes: int
    nll_bits: float  # the prior's ideal payload size
    seconds: float  # time taken


def open_file(data: bytes, media_type: MediaType, model: str | LoadedModel | None,
              device: str) -> tuple[ContainerHeader, Payload, LoadedModel, torch.device]:
    """Verify a `.vqc` file's container and find the model that wrote it.

    A file (version 3 or later) cut short is accepted here, its complete chunks returned:
    `stages_to_decode` then says whether they hold the stages asked for.

    Args:
        data: the file's bytes (untrusted).
        media_type: what the caller decodes; another media type is refused.
        model: optional model name/path/loaded model; by default the one the file names.
        device: "auto", "cpu" or "cuda".

    Returns:
        (header, payload, the model on `device`, the device).
    """
    header, payload = unpack_container(data, allow_truncation=True)
    if header.media_type != media_type:
        wanted = "an image" if media_type == MediaType.IMAGE else "audio"
        raise ModelError(f"this .vqc file holds {header.media_type.name.lower()}, not {wanted}")
    dev = resolve_device(device)
    return header, payload, model_for_header(header, model, dev), dev


def encode_indices(loaded: LoadedModel, indices: torch.Tensor, **options):
    """Code indices with the model's file codec.

    Args:
        loaded: the model.
        indices: in the codec's layout.
        options: for the codec's `compress` (images: `stream_per_stage`, `tile`,
            `context_stages`, `adapt`).

    Returns:
        (coded, portable, check): the `CompressedIndices` (streams, NLL), whether the tables
        came from an exact integer prior, and the indices' CRC32 for the header.
    """
    codec = file_codec(loaded.model)
    return (codec.compress(indices, **options), bool(getattr(codec, "portable", False)),
            index_check(indices))


def stages_to_decode(header: ContainerHeader, payload: Payload, stages: int | None) -> int:
    """How many stages to decode: `stages` (None: all the file codes), if the file holds them.

    Args:
        header: the file's header.
        payload: its payload as `unpack_container` returned it (possibly truncated).
        stages: how many stages, from stage 0, the caller asks for; 1..`header.num_stages`.

    Raises:
        InputError: `stages` out of range for the file.
        ContainerError: the file was cut short before the stages asked for.
    """
    total = header.num_stages
    if stages is not None:
        if isinstance(stages, bool) or not isinstance(stages, int):
            raise InputError(f"stages must be an integer, got {type(stages).__name__}")
        if not 1 <= stages <= total:
            raise InputError(f"--stages must be 1 to {total} for this file (it codes {total} "
                             f"stage{'s' if total > 1 else ''}), got {stages}")
    wanted = total if stages is None else stages
    held = stages_held(header, payload)
    if wanted > held:
        if held == 0:
            raise ContainerError("truncated .vqc file: it ends inside its first chunk, so no "
                                 "stage can be decoded")
        raise ContainerError(f"truncated .vqc file: it holds only the first {held} of its "
                             f"{total} stages (decode those with --stages {held})")
    return wanted


def decode_indices(header: ContainerHeader, loaded: LoadedModel, payload: Payload,
                   *shape: int, complete: bool = True, **options) -> torch.Tensor:
    """Decode a payload to indices and check them against the header's index check.

    Args:
        header: the file's (verified) header.
        loaded: the model the header names (weights hash already checked).
        payload: the range-coder stream, or the chunks (one stream each) of a version-3/4 file.
        shape: what the codec's `decompress` takes after the payload.
        complete: every coded stage is decoded, so the index check applies (it covers the
            indices of all stages); False when fewer stages are asked for.
        options: for the codec's `decompress` (images: `tile`); an image's `context_stages`,
            `anchor_weight` (version 4) and `adapt` (version 5) come from the header.

    Raises:
        CorruptPayloadError: the payload does not decode, or decodes to other indices than
            were coded (corruption, a forged header, or float tables that round differently
            on this machine than on the writer's).
    """
    codec = file_codec(loaded.model)
    portable = bool(getattr(codec, "portable", False))
    if header.version >= 2 and header.portable != portable:
        # The weights hash matched, so the writer used this very model: a flag that disagrees
        # was changed after writing.
        raise CorruptPayloadError(
            f"invalid .vqc header: the file says its tables are "
            f"{'exact (portable)' if header.portable else 'float'}, but model "
            f"{loaded.name!r} has a{'n exact integer' if portable else ' float'} prior")
    if header.media_type == MediaType.IMAGE:
        options.setdefault("context_stages", header.context_stages)
        options.setdefault("anchor_weight", header.anchor_weight)
        options.setdefault("adapt", header.adapted)
    try:
        indices = codec.decompress(payload, *shape, **options)
    except CorruptPayloadError:
        raise
    except (AssertionError, ValueError) as e:  # constriction: a stream that does not fit
        raise CorruptPayloadError(f"corrupted .vqc payload ({type(e).__name__})") from None
    if complete and header.index_check is not None and index_check(indices) != header.index_check:
        if portable:
            raise CorruptPayloadError(
                "corrupted .vqc payload: decoded indices do not match the file's check")
        raise CorruptPayloadError(
            "decoded indices do not match the file's check: its tables come from a float "
            "prior, which decodes only where the CPU kernels round as the writer's did "
            "(the file is corrupted, or was written on another kind of machine)")
    return indices
