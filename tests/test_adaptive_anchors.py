"""Adapted anchors (`anchor_weight`, format version 4): stage 0's first pass sees nothing, so
exact codecs may mix its tables with the counts of the codes already coded. Every weight must
round-trip exactly and score as the teacher-forced NLL says; only that pass may change; the
encoder must keep the cheapest weight; the header must refuse what it cannot mean."""
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
from vqcodec.coding.latent_codec import AdaptiveCounts
from vqcodec.errors import ContainerError
from vqcodec.format import ContainerHeader, MediaType, pack_container, unpack_container
from vqcodec.nn.fixed_point import EXACT_LIMIT
from vqcodec.pipelines.image import (ANCHOR_WEIGHTS, compress_image, decompress_image,
                                     image_to_indices, indices_to_image)

from conftest import smooth_image

CPU = torch.device("cpu")


# A 10 x 11 latent grid: 55 anchors, so several parts of ANCHOR_PART positions (a first part
# alone is never adapted: nothing was coded before it).
SIZE = (160, 176)


def _indices(loaded, rng, quality=4):
    stages, lam = loaded.rate_for_quality(quality)
    return image_to_indices(loaded.model, smooth_image(rng, *SIZE), stages, lam, CPU)


def test_adaptive_counts_mix_count_and_halve():
    adaptive = AdaptiveCounts(groups=2, num_codes=3, weight=4)
    counts = torch.tensor([[1.0, 2.0, 5.0], [3.0, 3.0, 2.0]])  # one position, two groups
    assert torch.equal(adaptive.mix(counts), counts * 4)  # nothing seen yet
    adaptive.update(np.array([2, 0]))
    mixed = adaptive.mix(counts)  # 4 c + seen * sum(c)
    assert torch.equal(mixed, torch.tensor([[4.0, 8.0, 28.0], [20.0, 12.0, 8.0]]))
    adaptive.seen[0] = torch.tensor([0.0, 3.0, AdaptiveCounts.LIMIT])
    adaptive.update(np.array([1, 1]))
    assert torch.equal(adaptive.seen[0], torch.tensor([0.0, 2.0, AdaptiveCounts.LIMIT / 2]))
    # The largest mixed sum stays exact: weights to 2^15, counts to 2^22, 256 codes.
    assert 256 * (2 ** 15 * 2 ** 22 + (AdaptiveCounts.LIMIT + 1) * 256 * 2 ** 22) < EXACT_LIMIT


def test_every_weight_round_trips_and_changes_only_the_anchors(tiny_integer_grouped_model, rng):
    loaded = tiny_integer_grouped_model
    codec = file_codec(loaded.model)
    indices = _indices(loaded, rng)
    grid = indices.shape[-2:]
    plain = codec.compress(indices, stream_per_stage=True, context_stages=2)
    bits = codec.anchor_bits(indices, (2, 16, 1024), context_stages=2)
    base = -float(codec.forward(indices[None], context_stages=2).double().sum())
    assert base == pytest.approx(plain.nll_bits, rel=1e-9)
    for weight in (2, 16, 1024):
        coded = codec.compress(indices, stream_per_stage=True, context_stages=2,
                               anchor_weight=weight)
        assert coded.streams[1:] == plain.streams[1:]  # stages 1.. are untouched
        assert coded.nll_bits != plain.nll_bits
        assert torch.equal(codec.decompress(coded.streams, len(indices), *grid, context_stages=2,
                                            anchor_weight=weight), indices)
        nll = -float(codec.forward(indices[None], context_stages=2,
                                   anchor_weight=weight).double().sum())
        assert nll == pytest.approx(coded.nll_bits, rel=1e-9)
        # Only stage 0's first pass depends on the weight: anchor_bits tells the difference.
        assert base - nll == pytest.approx(bits[None] - bits[weight], rel=1e-9, abs=1e-6)


def test_files_keep_the_cheapest_weight(tiny_integer_grouped_model, rng, tmp_path):
    loaded = tiny_integer_grouped_model
    image = smooth_image(rng, *SIZE)
    stages, lam = loaded.rate_for_quality(4)
    indices = image_to_indices(loaded.model, image, stages, lam, CPU)
    bits = file_codec(loaded.model).anchor_bits(indices, ANCHOR_WEIGHTS, context_stages=2)
    result = compress_image(image, model=loaded, quality=4, device="cpu")
    assert result.header.anchor_weight == min(bits, key=bits.get)
    plain = compress_image(image, model=loaded, quality=4, device="cpu", adapt_anchors=False)
    assert plain.header.anchor_weight is None
    assert result.nll_bits == pytest.approx(plain.nll_bits - bits[None] + min(bits.values()))
    want = indices_to_image(loaded.model, indices, 3, *image.shape[:2], CPU)
    for data in (result.data, plain.data):
        assert np.array_equal(decompress_image(data, model=loaded, device="cpu"), want)
    path = tmp_path / "a.vqc"
    path.write_bytes(compress_image(image, model=loaded, quality=4, device="cpu").data)
    forced = pack_container(dataclasses.replace(unpack_container(path.read_bytes())[0],
                                                anchor_weight=64),
                            unpack_container(path.read_bytes())[1])
    path.write_bytes(forced)  # the header alone: info does not decode
    info = CliRunner().invoke(cli, ["info", str(path)])
    assert info.exit_code == 0 and "adapted anchors: weight 64" in info.output


def test_float_priors_do_not_adapt(tiny_grouped_model, rng):
    result = compress_image(smooth_image(rng, 40, 56), model=tiny_grouped_model, quality=4,
                            device="cpu")
    assert result.header.anchor_weight is None and not result.header.portable
    codec = file_codec(tiny_grouped_model.model)
    indices = _indices(tiny_grouped_model, rng)
    for call in (lambda: codec.compress(indices, anchor_weight=16),
                 lambda: codec.forward(indices[None], anchor_weight=16)):
        with pytest.raises(ValueError, match="exact integer prior"):
            call()


_HEADER = dict(media_type=MediaType.IMAGE, model_id="m", weights_hash=bytes(8), num_stages=3,
               shape=(3, 32, 48), sample_rate=0, latent_shape=(2, 3), index_check=7,
               num_chunks=3, portable=True)


@pytest.mark.parametrize("override", [{"anchor_weight": 3}, {"anchor_weight": 1},
                                      {"anchor_weight": 2 ** 16}, {"anchor_weight": 0},
                                      {"anchor_weight": 16, "version": 3},
                                      {"anchor_weight": 16, "portable": False}])
def test_bad_anchor_weights_are_refused(override):
    with pytest.raises(ContainerError, match="anchor"):
        ContainerHeader(**{**_HEADER, **override})


def test_anchor_weight_byte(tiny_integer_grouped_model, rng):
    header = ContainerHeader(**_HEADER, anchor_weight=1024)
    chunks = (b"ab", b"", b"cd")
    data = pack_container(header, chunks)
    assert unpack_container(data) == (header, chunks)
    at = data.index(bytes([3, 3, 10]))  # chunk count, context stages (all), log2 of 1024
    forged = bytearray(data)
    forged[at + 2] = 16  # 2^16: out of range, behind a valid CRC
    end = at + 3
    forged[end:end + 4] = struct.pack("<I", zlib.crc32(bytes(forged[:end])))
    with pytest.raises(ContainerError, match="anchor weight must be a power of two"):
        unpack_container(bytes(forged))
    # A real file whose weight was changed behind a valid CRC decodes to other indices: refused.
    loaded = tiny_integer_grouped_model
    result = compress_image(smooth_image(rng, *SIZE), model=loaded, quality=4, device="cpu",
                            adapt_anchors=False)
    h, payload = unpack_container(result.data)
    other = pack_container(dataclasses.replace(h, anchor_weight=2), payload)
    with pytest.raises(ContainerError, match="corrupted"):
        decompress_image(other, model=loaded, device="cpu")
