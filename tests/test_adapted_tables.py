"""Adapted tables: exact codecs may mix a pass's count tables with the counts of the codes
already coded in it (`AdaptiveCounts`). Format version 4 adapts stage 0's first pass with one
weight (`anchor_weight`, still decoded); version 5 adapts every pass of every tile, each with
the weight its stream names before it (`adapt`). Every weight must round-trip exactly and
score as the teacher-forced NLL says; the encoder must keep the cheapest; the header must
refuse what it cannot mean, and a file whose record was changed must not decode to other
output."""
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
from vqcodec.coding.context import pass_masks
from vqcodec.coding.latent_codec import (ADAPTATION_WEIGHTS, CHOICE_BITS, AdaptiveCounts,
                                         adaptation_bits)
from vqcodec.errors import ContainerError
from vqcodec.format import ContainerHeader, MediaType, pack_container, unpack_container
from vqcodec.nn.fixed_point import EXACT_LIMIT
from vqcodec.pipelines.image import (compress_image, decompress_image, image_to_indices,
                                     indices_to_image)

from conftest import smooth_image

CPU = torch.device("cpu")


# A 10 x 11 latent grid: 55 anchors, so several parts of ANCHOR_PART positions (a first part
# alone is never adapted: nothing was coded before it).
SIZE = (160, 176)


def _indices(loaded, rng, quality=4, size=SIZE):
    stages, lam = loaded.rate_for_quality(quality)
    return image_to_indices(loaded.model, smooth_image(rng, *size), stages, lam, CPU)


def test_adaptive_counts_mix_count_and_halve():
    adaptive = AdaptiveCounts(groups=2, num_codes=3, weight=4)
    counts = np.array([[1.0, 2.0, 5.0], [3.0, 3.0, 2.0]])  # one position, two groups
    assert np.array_equal(adaptive.mix(counts), counts * 4)  # nothing seen yet
    adaptive.update(np.array([2, 0]))
    mixed = adaptive.mix(counts)  # 4 c + seen * sum(c)
    assert np.array_equal(mixed, [[4.0, 8.0, 28.0], [20.0, 12.0, 8.0]])
    assert np.array_equal(adaptive.mix(counts, counts.sum(1)), mixed)
    assert np.array_equal(adaptive.mixed_sums(counts.sum(1)), mixed.sum(1))
    adaptive.seen[0] = [0.0, 3.0, AdaptiveCounts.LIMIT]
    adaptive.update(np.array([1, 1]))
    assert np.array_equal(adaptive.seen[0], [0.0, 2.0, AdaptiveCounts.LIMIT / 2])
    # The largest mixed sum stays exact: weights to 2^15, counts to 2^22, 256 codes.
    assert 256 * (2 ** 15 * 2 ** 22 + (AdaptiveCounts.LIMIT + 1) * 256 * 2 ** 22) < EXACT_LIMIT
    assert max(w for w in ADAPTATION_WEIGHTS if w) <= 2 ** 15


def test_adaptation_bits_are_the_adapted_tables_bits(tiny_integer_grouped_model, rng):
    """The encoder's estimate of each weight's bits is what the mixed tables code."""
    codec = file_codec(tiny_integer_grouped_model.model)
    indices = _indices(tiny_integer_grouped_model, rng)
    tables = codec.tables(indices, context_stages=2)
    want = codec._to_walk_layout(indices)  # [S, H, W, G]
    g = want.shape[-1]
    counts = tables[1].double()  # stage 0's second pass: 55 positions
    mask = pass_masks("checkerboard", *want.shape[1:3])[1]
    symbols = want[0][mask]  # [P, G]
    flat = symbols.reshape(-1).numpy()
    estimate = adaptation_bits(counts, flat, g)
    for i, weight in enumerate(ADAPTATION_WEIGHTS):
        table = counts if weight is None else codec._adapted(
            counts.view(len(symbols), g, -1), symbols, weight).view(len(flat), -1)
        assert estimate[i] == pytest.approx(codec._nll_bits(table, flat), rel=1e-9)


def test_every_anchor_weight_round_trips_and_changes_only_stage_0(tiny_integer_grouped_model,
                                                                  rng):
    """Format version 4's adapted anchors, still decoded."""
    loaded = tiny_integer_grouped_model
    codec = file_codec(loaded.model)
    indices = _indices(loaded, rng)
    grid = indices.shape[-2:]
    plain = codec.compress(indices, stream_per_stage=True, context_stages=2)
    base = codec.forward(indices[None], context_stages=2)[0].double().flatten(1).sum(1)
    assert -float(base.sum()) == pytest.approx(plain.nll_bits, rel=1e-9)
    for weight in (2, 16, 1024):
        coded = codec.compress(indices, stream_per_stage=True, context_stages=2,
                               anchor_weight=weight)
        assert coded.streams[1:] == plain.streams[1:]  # stages 1.. are untouched
        assert coded.nll_bits != plain.nll_bits
        assert torch.equal(codec.decompress(coded.streams, len(indices), *grid, context_stages=2,
                                            anchor_weight=weight), indices)
        per_stage = codec.forward(indices[None], context_stages=2,
                                  anchor_weight=weight)[0].double().flatten(1).sum(1)
        assert -float(per_stage.sum()) == pytest.approx(coded.nll_bits, rel=1e-9)
        assert torch.equal(per_stage[1:], base[1:])


@pytest.mark.parametrize("tile", [None, 4])
def test_adapted_passes_round_trip_and_score_as_forward(tiny_integer_grouped_model, rng, tile):
    loaded = tiny_integer_grouped_model
    codec = file_codec(loaded.model)
    indices = _indices(loaded, rng, quality=2)
    grid = indices.shape[-2:]
    plain = codec.compress(indices, stream_per_stage=True, context_stages=2, tile=tile)
    coded = codec.compress(indices, stream_per_stage=True, context_stages=2, tile=tile,
                           adapt=True)
    assert torch.equal(codec.decompress(coded.streams, len(indices), *grid, context_stages=2,
                                        tile=tile, adapt=True), indices)
    # Read without adaptation, the streams decode to other indices (or fail).
    try:
        other = codec.decompress(coded.streams, len(indices), *grid, context_stages=2,
                                 tile=tile)
        assert not torch.equal(other, indices)
    except ValueError:
        pass
    passes = len(codec.tables(indices, context_stages=2))
    windows = 1 if tile is None else -(-grid[0] // tile) * -(-grid[1] // tile)
    # The cheapest weight or none, per pass: never more than the choices' bits above plain.
    assert coded.nll_bits <= plain.nll_bits + passes * windows * CHOICE_BITS + 1e-6
    if tile is None:
        nll = -float(codec.forward(indices[None], context_stages=2, adapt=True).double().sum())
        assert nll == pytest.approx(coded.nll_bits, rel=1e-9)
    with pytest.raises(ValueError, match="two formats"):
        codec.compress(indices, adapt=True, anchor_weight=16)


def test_adapted_passes_code_the_same_in_any_parts(tiny_integer_grouped_model, rng):
    codec = file_codec(tiny_integer_grouped_model.model)
    indices = _indices(tiny_integer_grouped_model, rng, quality=2)
    coded = codec.compress(indices, stream_per_stage=True, adapt=True)
    codec.SCORE_CHUNK = 5  # an instance attribute: scored five positions at a time
    try:
        assert codec.compress(indices, stream_per_stage=True, adapt=True).streams == coded.streams
    finally:
        del codec.SCORE_CHUNK


def test_sparse_rounds_gain_from_adaptation(tiny_integer_grouped_model, rng):
    """At the lowest rate later rounds are nearly all code 0, which the prior (trained over
    every rate) does not know: adapted, they cost less."""
    loaded = tiny_integer_grouped_model
    image = smooth_image(rng, *SIZE)
    q = 1
    adapted = compress_image(image, model=loaded, quality=q, device="cpu")
    plain = compress_image(image, model=loaded, quality=q, device="cpu", adapt=False)
    assert adapted.header.version == 5 and adapted.header.adapted
    assert not plain.header.adapted
    assert adapted.nll_bits < plain.nll_bits
    stages, lam = loaded.rate_for_quality(q)
    indices = image_to_indices(loaded.model, image, stages, lam, CPU)
    want = indices_to_image(loaded.model, indices, 3, *image.shape[:2], CPU)
    for data in (adapted.data, plain.data):
        assert np.array_equal(decompress_image(data, model=loaded, device="cpu"), want)


def test_tiled_files_adapt_each_tile(tiny_integer_grouped_model, rng):
    loaded = tiny_integer_grouped_model
    image = smooth_image(rng, *SIZE)
    result = compress_image(image, model=loaded, quality=2, device="cpu", tile=4)
    assert result.header.tile == 4 and result.header.adapted
    stages, lam = loaded.rate_for_quality(2)
    want = indices_to_image(loaded.model, image_to_indices(loaded.model, image, stages, lam, CPU),
                            3, *image.shape[:2], CPU)
    assert np.array_equal(decompress_image(result.data, model=loaded, device="cpu"), want)


def test_info_shows_the_adaptation(tiny_integer_grouped_model, rng, tmp_path):
    loaded = tiny_integer_grouped_model
    path = tmp_path / "a.vqc"
    path.write_bytes(compress_image(smooth_image(rng, *SIZE), model=loaded, quality=4,
                                    device="cpu").data)
    info = CliRunner().invoke(cli, ["info", str(path)])
    assert info.exit_code == 0 and "adapted tables: every pass" in info.output
    header, payload = unpack_container(path.read_bytes())
    v4 = dataclasses.replace(header, version=4, adapted=False, anchor_weight=64)
    path.write_bytes(pack_container(v4, payload))  # the header alone: info does not decode
    info = CliRunner().invoke(cli, ["info", str(path)])
    assert info.exit_code == 0 and "adapted anchors: weight 64" in info.output


def test_float_priors_do_not_adapt(tiny_grouped_model, rng):
    result = compress_image(smooth_image(rng, 40, 56), model=tiny_grouped_model, quality=4,
                            device="cpu")
    assert not result.header.adapted and not result.header.portable
    codec = file_codec(tiny_grouped_model.model)
    indices = _indices(tiny_grouped_model, rng)
    for call in (lambda: codec.compress(indices, anchor_weight=16),
                 lambda: codec.compress(indices, adapt=True),
                 lambda: codec.forward(indices[None], adapt=True)):
        with pytest.raises(ValueError, match="exact integer prior"):
            call()


_HEADER = dict(media_type=MediaType.IMAGE, model_id="m", weights_hash=bytes(8), num_stages=3,
               shape=(3, 32, 48), sample_rate=0, latent_shape=(2, 3), index_check=7,
               num_chunks=3, portable=True)


@pytest.mark.parametrize("override", [{"anchor_weight": 3}, {"anchor_weight": 1},
                                      {"anchor_weight": 2 ** 16}, {"anchor_weight": 0},
                                      {"anchor_weight": 16, "version": 3},
                                      {"anchor_weight": 16, "version": 5},
                                      {"anchor_weight": 16, "portable": False}])
def test_bad_anchor_weights_are_refused(override):
    with pytest.raises(ContainerError, match="anchor"):
        ContainerHeader(**{**_HEADER, "version": 4, **override})


@pytest.mark.parametrize("override", [{"version": 4}, {"portable": False}, {"adapted": 1},
                                      {"media_type": MediaType.AUDIO, "sample_rate": 8000,
                                       "num_chunks": 1, "latent_shape": (5,)}])
def test_bad_adaptation_is_refused(override):
    with pytest.raises(ContainerError, match="adapt"):
        ContainerHeader(**{**_HEADER, "adapted": True, **override})


def _adaptation_byte(data: bytes) -> int:
    """Offset of the byte after the context stages (versions 4, 5): index check 7, chunk
    count 3, context stages 3 (all), then this one."""
    return data.index(struct.pack("<I", 7) + bytes([3, 3])) + 6


def _with_crc(data: bytes, end: int) -> bytes:
    """`data` with its header CRC (at `end`) recomputed: a faulty writer, not a transfer."""
    out = bytearray(data)
    out[end:end + 4] = struct.pack("<I", zlib.crc32(bytes(out[:end])))
    return bytes(out)


def test_the_header_bytes(tiny_integer_grouped_model, rng):
    for header in (ContainerHeader(**_HEADER, version=4, anchor_weight=1024),
                   ContainerHeader(**_HEADER, adapted=True)):
        chunks = (b"ab", b"", b"cd")
        data = pack_container(header, chunks)
        assert unpack_container(data) == (header, chunks)
        at = _adaptation_byte(data)
        assert data[at] == (10 if header.version == 4 else 1)  # log2 of 1024; adapted
        forged = bytearray(data)
        forged[at] = 16 if header.version == 4 else 2  # out of range, behind a valid CRC
        with pytest.raises(ContainerError, match="power of two|must be 0 or 1"):
            unpack_container(_with_crc(bytes(forged), at + 1))


@pytest.mark.parametrize("change", ["anchors", "adapted"])
def test_a_changed_record_is_refused(tiny_integer_grouped_model, rng, change):
    """A real file whose adaptation record was changed behind a valid CRC decodes to other
    indices: the index check refuses it."""
    loaded = tiny_integer_grouped_model
    result = compress_image(smooth_image(rng, *SIZE), model=loaded, quality=4, device="cpu",
                            adapt=change == "adapted", context_stages=None)
    h, payload = unpack_container(result.data)
    other = (dataclasses.replace(h, version=4, anchor_weight=2) if change == "anchors"
             else dataclasses.replace(h, adapted=False))
    with pytest.raises(ContainerError, match="corrupted"):
        decompress_image(pack_container(other, payload), model=loaded, device="cpu")
