"""Large images: the prior codes the latent grid in independent tiles (recorded in the file),
the block-wise encoder runs in bands of block rows, the decoder in bands of latent rows with a
halo. Tiny models and tiny tiles, so tiling triggers on images of a few dozen pixels."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vqcodec.cli.main import cli
from vqcodec.coding import file_codec
from vqcodec.coding.latent_codec import tile_windows
from vqcodec.errors import ContainerError, InputError
from vqcodec.format import (FLAG_TILED, ContainerHeader, MediaType, pack_container,
                            read_header, unpack_container)
from vqcodec.pipelines.file import encode_indices
from vqcodec.pipelines.image import (IMAGE_CONTEXT_STAGES, compress_image, decompress_image, image_to_indices,
                                     indices_to_image)

from conftest import assert_one_line_error, chunk_ends, smooth_image

CPU = torch.device("cpu")
TILE = 2  # latent positions: a 96x80 image (6x5 positions) has 3x3 tiles


def _image(rng, h=96, w=80):
    return smooth_image(rng, h, w)




def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])




def test_tile_windows_cover_the_grid_once_in_raster_order():
    assert tile_windows(5, 7, None) == tile_windows(5, 7, 7) == [(slice(0, 5), slice(0, 7))]
    windows = tile_windows(5, 7, 3)
    assert [(r.start, c.start) for r, c in windows] == [(0, 0), (0, 3), (0, 6), (3, 0),
                                                        (3, 3), (3, 6)]
    seen = torch.zeros(5, 7, dtype=torch.int64)
    for r, c in windows:
        seen[r, c] += 1
    assert bool((seen == 1).all())


@pytest.mark.parametrize("fixture", ["tiny_integer_grouped_model", "tiny_grouped_model"])
def test_tiled_round_trip_is_exact(fixture, request, rng):
    loaded = request.getfixturevalue(fixture)
    net = loaded.model
    indices = image_to_indices(net, _image(rng), 3, 0.01, CPU)
    codec = file_codec(net)
    coded = codec.compress(indices, stream_per_stage=True, tile=TILE)
    assert torch.equal(codec.decompress(coded.streams, 3, *indices.shape[-2:], tile=TILE),
                       indices)
    untiled = codec.compress(indices, stream_per_stage=True)
    assert coded.streams != untiled.streams  # the tiles' context differs at their borders
    # Whole stages stay separable: the first stream alone decodes stage 0 of every tile.
    first = codec.decompress(coded.streams[:1], 1, *indices.shape[-2:], tile=TILE)
    assert torch.equal(first, indices[:1])
    with pytest.raises(ValueError, match="one stream per stage"):
        codec.compress(indices, tile=TILE)


def test_tiled_file_decodes_to_its_indices(tiny_integer_grouped_model, rng):
    loaded, image = tiny_integer_grouped_model, _image(rng)
    result = compress_image(image, model=loaded, quality=4, device="cpu", tile=TILE)
    header = result.header
    assert header.tile == TILE and header.version == 5 and result.data[5] & FLAG_TILED
    assert read_header(result.data).tile == TILE
    stages, lam = loaded.rate_for_quality(4)
    indices = image_to_indices(loaded.model, image, stages, lam, CPU)
    # The file's index check passes only if the decoded indices are the coded ones.
    got = decompress_image(result.data, model=loaded, device="cpu")
    want = indices_to_image(loaded.model, indices, 3, *image.shape[:2], CPU)
    assert np.array_equal(got, want)


def test_single_tile_images_code_exactly_as_untiled(tiny_integer_grouped_model, rng):
    loaded, image = tiny_integer_grouped_model, _image(rng)  # a 6x5 grid
    data = compress_image(image, model=loaded, quality=4, device="cpu").data
    assert compress_image(image, model=loaded, quality=4, device="cpu", tile=6).data == data
    header = read_header(data)
    assert header.tile == 0 and not data[5] & FLAG_TILED
    # The untiled path as it was: indices of the whole image, one walk over the whole grid.
    stages, lam = loaded.rate_for_quality(4)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    indices = loaded.model.encode(x, stages, lam)[0]
    coded, _, _ = encode_indices(loaded, indices, stream_per_stage=True,
                                 context_stages=IMAGE_CONTEXT_STAGES, adapt=True)
    assert unpack_container(data)[1] == coded.streams


def test_banded_encoder_gives_the_whole_image_indices(tiny_grouped_model, rng):
    net, image = tiny_grouped_model.model, _image(rng, 83, 70)  # rows padded in the last band
    whole = image_to_indices(net, image, 3, 0.01, CPU, band_rows=99)
    for rows in (1, 2, 4):
        assert torch.equal(image_to_indices(net, image, 3, 0.01, CPU, band_rows=rows), whole)


@pytest.mark.parametrize("fixture", ["tiny_grouped_model", "tiny_model"])
def test_banded_decoder_has_no_seams(fixture, request, rng):
    net = request.getfixturevalue(fixture).model
    h, w = 83, 70
    x = torch.from_numpy(_image(rng, 96, 80)).permute(2, 0, 1)[None].float() / 255
    indices = net.encode(x, 3)[0]
    whole = indices_to_image(net, indices, 3, h, w, CPU, band_rows=99).astype(int)
    for rows in (1, 2, 4):
        banded = indices_to_image(net, indices, 3, h, w, CPU, band_rows=rows).astype(int)
        assert banded.shape == whole.shape and np.abs(banded - whole).max() <= 1
    gray = indices_to_image(net, indices, 1, h, w, CPU, band_rows=1).astype(int)
    assert gray.shape == (h, w)
    assert np.abs(gray - indices_to_image(net, indices, 1, h, w, CPU).astype(int)).max() <= 1


def test_stages_and_truncation_of_tiled_files(tiny_integer_grouped_model, rng):
    loaded, image = tiny_integer_grouped_model, _image(rng)
    data = compress_image(image, model=loaded, quality=4, device="cpu", tile=TILE).data
    stages, lam = loaded.rate_for_quality(4)
    indices = image_to_indices(loaded.model, image, stages, lam, CPU)
    ends = chunk_ends(data)
    for r in range(1, stages + 1):
        want = indices_to_image(loaded.model, indices[:r], 3, *image.shape[:2], CPU)
        assert np.array_equal(decompress_image(data[:ends[r - 1]], model=loaded, device="cpu",
                                               stages=r), want)
    with pytest.raises(ContainerError, match="holds only the first 1"):
        decompress_image(data[:ends[0] + 5], model=loaded, device="cpu")
    bad = bytearray(data)
    bad[ends[0] - 6] ^= 0x10
    with pytest.raises(ContainerError, match="CRC mismatch in chunk 1"):
        decompress_image(bytes(bad), model=loaded, device="cpu", stages=1)


def test_cli_on_tiled_files(tiny_integer_grouped_model, tiny_integer_grouped_model_path,
                            tmp_path, rng):
    loaded = tiny_integer_grouped_model
    data = compress_image(_image(rng), model=loaded, quality=4, device="cpu", tile=TILE).data
    vqc = tmp_path / "a.vqc"
    vqc.write_bytes(data)
    assert f"tiles: {TILE}x{TILE}" in _run("info", vqc).output
    out = tmp_path / "a.png"
    result = _run("decompress", vqc, out, "--model", tiny_integer_grouped_model_path)
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(out)),
                          decompress_image(data, model=loaded, device="cpu"))
    cut = tmp_path / "cut.vqc"
    cut.write_bytes(data[:chunk_ends(data)[0]])
    preview = tmp_path / "preview.png"
    result = _run("decompress", cut, preview, "--stages", 1, "--model",
                  tiny_integer_grouped_model_path)
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(preview)),
                          decompress_image(data, model=loaded, device="cpu", stages=1))
    target = tmp_path / "refused.png"
    assert_one_line_error(_run("decompress", cut, target, "--model", tiny_integer_grouped_model_path),
                    "holds only the first 1")
    assert not target.exists()
    bad = bytearray(data)
    bad[chunk_ends(data)[1] - 6] ^= 0xFF
    vqc.write_bytes(bytes(bad))
    assert_one_line_error(_run("decompress", vqc, target, "--model", tiny_integer_grouped_model_path),
                    "CRC mismatch in chunk 2")
    assert not target.exists()


HEADER = ContainerHeader(media_type=MediaType.IMAGE, model_id="m", weights_hash=bytes(8),
                         num_stages=2, shape=(3, 96, 80), sample_rate=0, latent_shape=(6, 5),
                         index_check=7, num_chunks=2, tile=TILE)


def test_tile_field_layout_and_checks():
    data = pack_container(HEADER, (b"ab", b"cd"))
    untiled = pack_container(dataclasses.replace(HEADER, tile=0), (b"ab", b"cd"))
    assert len(data) == len(untiled) + 2 and data[5] == FLAG_TILED
    assert unpack_container(data) == (HEADER, (b"ab", b"cd"))
    for changes, message in [({"tile": 6}, "fits in one tile"),
                             ({"tile": 70000}, "tile must be 0 to 65535"),
                             ({"num_chunks": 1}, "one chunk per stage"),
                             ({"version": 2, "num_chunks": 1}, "format versions 3 to 6")]:
        with pytest.raises(ContainerError, match=message):
            dataclasses.replace(HEADER, **changes)
    with pytest.raises(InputError, match="tile must be an integer"):
        compress_image(np.zeros((16, 16, 3), np.uint8), tile=0)


def test_a_changed_tile_size_is_refused():
    data = bytearray(pack_container(HEADER, (b"ab", b"cd")))
    tile_at = len(data) - 2 * (4 + 2 + 4) - 4 - 2  # the u16 before the header CRC
    assert data[tile_at] == TILE
    data[tile_at] = 1
    with pytest.raises(ContainerError, match="header CRC mismatch"):
        unpack_container(bytes(data))
