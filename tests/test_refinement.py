"""The refinement layer (format version 6): qualities past a grouped model's ladder code the
decoded picture's error in pixels, exactly, in a chunk of its own."""
from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from vqcodec.cli.main import cli
from vqcodec.coding import refinement
from vqcodec.coding.refinement import (BLOCK, decode_refinement, encode_refinement,
                                       forward_transform, inverse_transform)
from vqcodec.errors import ContainerError, CorruptPayloadError, ModelError
from vqcodec.format import (FILTERED_VERSION, REFINED_VERSION, ContainerHeader, MediaType,
                            pack_container,
                            refinement_held, stages_held, unpack_container)
from vqcodec.pipelines.image import compress_image, decompress_image
from vqcodec.zoo.registry import (IMAGE_LADDER_RUNGS, IMAGE_REFINEMENT_BASE,
                                  IMAGE_REFINEMENT_BASE_STAGES,
                                  IMAGE_REFINEMENT_STEPS)

from conftest import assert_one_line_error, smooth_image

HEADER = ContainerHeader(media_type=MediaType.IMAGE, model_id="m", weights_hash=bytes(8),
                         num_stages=3, shape=(3, 32, 48), sample_rate=0, latent_shape=(2, 3),
                         index_check=7, num_chunks=4, refinement_step=12.5,
                         version=REFINED_VERSION)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / ((a.astype(np.float64) - b) ** 2).mean()))


# --- the refinement codec ---------------------------------------------------------------------

def test_transform_is_orthonormal_and_inverts():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 20, (16, 24, 3))
    c = forward_transform(x)
    assert c.shape == (3, 2, 3, BLOCK, BLOCK)
    assert np.isclose((c ** 2).sum(), (x ** 2).sum())  # same squared error in both domains
    assert np.allclose(inverse_transform(c), x)


def _pair(seed: int, h: int = 37, w: int = 53, sigma: float = 12.0):
    """An original and a 'decoded' picture that misses some of it, uint8."""
    rng = np.random.default_rng(seed)
    original = smooth_image(rng, h, w)
    picture = np.clip(original + rng.normal(0, sigma, original.shape), 0, 255).astype(np.uint8)
    return original, picture


@pytest.mark.parametrize("step", [1.0, 6.25, 30.0])
def test_round_trip_is_exact(step):
    # Odd sizes (padded to blocks and cropped back), large errors (escapes at step 1).
    original, picture = _pair(1)
    picture[5, 7] = 255 - original[5, 7]
    stream, bits, refined = encode_refinement(original, picture, step)
    decoded = decode_refinement(stream, step, picture)
    assert decoded.shape == original.shape and decoded.dtype == np.uint8
    assert np.array_equal(decoded, refined)
    # The stream is the ideal length of the adaptive tables to within the coder's flush.
    assert abs(8 * len(stream) - bits) <= 64
    if step == 1.0:  # nearly lossless
        assert _psnr(refined, original) > 50


def test_bands_give_the_same_stream(monkeypatch):
    original, picture = _pair(5, 70, 90)
    whole = encode_refinement(original, picture, 6.0)
    monkeypatch.setattr(refinement, "BAND_BLOCKS", 3)  # bands of one block row
    banded = encode_refinement(original, picture, 6.0)
    assert banded[0] == whole[0] and np.array_equal(banded[2], whole[2])
    assert np.array_equal(decode_refinement(whole[0], 6.0, picture), whole[2])


def test_finer_steps_cost_more_and_err_less():
    original, picture = _pair(2, 32, 32, 10.0)
    results = [encode_refinement(original, picture, s) for s in (40.0, 20.0, 10.0)]
    sizes = [len(r[0]) for r in results]
    errors = [-_psnr(r[2], original) for r in results]
    assert sizes == sorted(sizes) and errors == sorted(errors, reverse=True)


def test_gray_pictures_stay_gray():
    original, picture = _pair(6)
    gray, gray_picture = original[..., 0], picture[..., 0]
    stream, _, refined = encode_refinement(gray, gray_picture, 4.0)
    assert refined.shape == gray.shape
    assert np.array_equal(decode_refinement(stream, 4.0, gray_picture), refined)
    assert _psnr(refined, gray) > _psnr(gray_picture, gray) + 5


def test_bad_step_and_corrupt_stream_are_refused():
    original, picture = _pair(3, 16, 16, 30.0)
    with pytest.raises(ValueError, match="at least"):
        encode_refinement(original, picture, 0.5)
    stream, _, _ = encode_refinement(original, picture, 4.0)
    with pytest.raises(CorruptPayloadError):
        decode_refinement(stream[:-3], 4.0, picture)  # not a whole number of words


def test_tables_do_not_depend_on_the_float_transform():
    # The decoder sees only integers: the same quantized coefficients give the same stream,
    # whatever the transform's rounding; and quantize() is all the float the encoder uses.
    rng = np.random.default_rng(4)
    levels = rng.integers(-3, 4, (3, 2, 2, BLOCK, BLOCK)) * 8.0
    residual = inverse_transform(levels)
    noisy = residual + rng.normal(0, 1e-6, residual.shape)
    assert np.array_equal(refinement.quantize(forward_transform(residual), 8.0),
                          refinement.quantize(forward_transform(noisy), 8.0))


# --- deblocking (format version 7) ------------------------------------------------------------

def test_deblock_smooths_small_steps_at_block_edges_only():
    flat = np.full((16, 24, 3), 100, dtype=np.uint8)
    assert np.array_equal(refinement.deblock(flat, 40.0), flat)
    stepped = flat.copy()
    stepped[:, 8:16] += 4  # a 4-level step at the edges between columns 7|8 and 15|16
    out = refinement.deblock(stepped, 40.0)  # clip 2 levels at the edge, 1 one further out
    assert out[0, 6:10, 0].tolist() == [101, 102, 102, 103]
    assert np.array_equal(out[:, :5], stepped[:, :5])  # away from the edges: untouched
    assert np.array_equal(out[:, 10:14], stepped[:, 10:14])
    # Steps that large against the refinement's step are edges of the picture: kept.
    assert np.array_equal(refinement.deblock(stepped, 4.0), stepped)
    edge = stepped.copy()
    edge[:, 8:16] = 200
    assert np.array_equal(refinement.deblock(edge, 40.0), edge)
    # Rows like columns; a gray picture like one colour.
    assert np.array_equal(refinement.deblock(stepped.transpose(1, 0, 2), 40.0),
                          out.transpose(1, 0, 2))
    assert np.array_equal(refinement.deblock(stepped[..., 0], 40.0), out[..., 0])


def test_deblock_in_bands_is_the_whole_picture(monkeypatch):
    rng = np.random.default_rng(7)
    picture = rng.integers(0, 256, (45, 37, 3), dtype=np.uint8) // 8 + 100
    whole = refinement.deblock(picture, 30.0)
    assert not np.array_equal(whole, picture)
    for rows in (1, 3, 8, 16):
        monkeypatch.setattr(refinement, "DEBLOCK_ROWS", rows)
        assert np.array_equal(refinement.deblock(picture, 30.0), whole)


def test_deblocked_refinement_is_version_6_deblocked():
    original, picture = _pair(8, 40, 48, 20.0)
    stream, _, plain = encode_refinement(original, picture, 24.0, deblocked=False)
    stream7, _, refined = encode_refinement(original, picture, 24.0)
    assert stream7 == stream  # the stream does not change, only the picture
    assert np.array_equal(refined, refinement.deblock(plain, 24.0))
    assert np.array_equal(decode_refinement(stream, 24.0, picture, deblocked=False), plain)
    assert np.array_equal(decode_refinement(stream, 24.0, picture), refined)


def test_part_size_grows_with_the_image():
    assert refinement.refinement_part_size(10) == refinement.MIN_PART
    assert refinement.refinement_part_size(10 ** 6) == -(-10 ** 6 // refinement.PARTS_PER_PASS)


# --- the container ----------------------------------------------------------------------------

def test_version_6_header_round_trip():
    chunks = (b"abcd", b"", b"0123", b"ref!")
    data = pack_container(HEADER, chunks)
    assert data[4] == REFINED_VERSION
    header, payload = unpack_container(data)
    assert header == HEADER and payload == chunks
    assert header.stage_chunks == 3 and header.chunk_per_stage
    assert refinement_held(header, payload) == b"ref!"
    # Cut before the refinement chunk: every stage is held, the refinement is not.
    cut = data[:len(data) - (4 + 4 + 4)]
    header, payload = unpack_container(cut, allow_truncation=True)
    assert stages_held(header, payload) == 3 and refinement_held(header, payload) is None


@pytest.mark.parametrize("change, message", [
    (dict(refinement_step=0.3), "multiple of 0.25"),
    (dict(refinement_step=12.3), "multiple of 0.25"),
    (dict(refinement_step=255.25), "multiple of 0.25 from 1 to 255"),
    (dict(num_chunks=3), "one for the refinement"),
    (dict(version=5), "version 6"),
])
def test_bad_refinement_headers_are_refused(change, message):
    with pytest.raises(ContainerError, match=message):
        dataclasses.replace(HEADER, **change)


@pytest.mark.parametrize("quarters", [2, 1021, 0xFFFF])
def test_a_refinement_step_out_of_range_is_refused(quarters):
    data = bytearray(pack_container(HEADER, (b"", b"", b"", b"")))
    # The step (u16, 12.5 levels = 50 quarters) is the last field before the header CRC,
    # which ends the header: 48 bytes of fields shared with version 2 for this model id,
    # then the chunk count, context stages, adaptation bytes and the step.
    at = 48 + 3
    assert data[at:at + 2] == (50).to_bytes(2, "little")
    data[at:at + 2] = quarters.to_bytes(2, "little")
    data[at + 2:at + 6] = zlib.crc32(bytes(data[:at + 2])).to_bytes(4, "little")
    with pytest.raises(ContainerError, match="refinement step"):
        unpack_container(bytes(data))


def test_a_step_above_63_levels_round_trips():
    header = dataclasses.replace(HEADER, refinement_step=72.0)
    assert unpack_container(pack_container(header, (b"", b"", b"", b"")))[0] == header


# --- through the pipeline and the CLI ---------------------------------------------------------

@pytest.fixture(scope="module")
def crop():
    image = Image.open("examples/kodim23.png").convert("RGB")
    return np.ascontiguousarray(np.asarray(image)[64:160, 48:176])


def test_ladder_extends_grouped_models_only(shipped, tiny_model):
    n = shipped.ladder_qualities
    assert n == min(IMAGE_LADDER_RUNGS, len(shipped.qualities))
    assert shipped.num_qualities == n + len(IMAGE_REFINEMENT_STEPS)
    assert shipped.refinement_step(n) == 0.0
    assert shipped.refinement_step(n + 1) == IMAGE_REFINEMENT_STEPS[0]
    stages, rd_lambda = shipped.rate_for_quality(IMAGE_REFINEMENT_BASE)
    assert shipped.rate_for_quality(n + 1) == (min(stages, IMAGE_REFINEMENT_BASE_STAGES),
                                               rd_lambda)
    assert tiny_model.num_qualities == tiny_model.ladder_qualities == len(tiny_model.qualities)
    with pytest.raises(ModelError, match="quality must be 1..19"):
        shipped.rate_for_quality(20)


def test_refined_qualities_climb_and_decode_exactly(shipped, crop):
    n = shipped.ladder_qualities
    top = compress_image(crop, model=shipped, quality=n, device="cpu")
    assert top.header.version == 5 and not top.header.refinement_step
    last_psnr, last_size = _psnr(decompress_image(top.data, model=shipped), crop), len(top.data)
    for quality in (n + 1, n + 4, shipped.num_qualities):
        result = compress_image(crop, model=shipped, quality=quality, device="cpu")
        h = result.header
        assert h.version == FILTERED_VERSION and h.num_chunks == h.num_stages + 1
        assert h.refinement_step == shipped.refinement_step(quality)
        out = decompress_image(result.data, model=shipped)
        psnr = _psnr(out, crop)
        assert psnr > last_psnr and len(result.data) > last_size
        last_psnr, last_size = psnr, len(result.data)
        # Every stream is within its flush (at most 32 bits each) of the ideal length.
        assert -1 < result.payload_bytes * 8 - result.nll_bits < 32 * h.num_chunks
    assert last_psnr > 38


def test_refined_file_previews_and_truncation(shipped, crop):
    n = shipped.ladder_qualities
    refined = compress_image(crop, model=shipped, quality=n + 2, device="cpu")
    base = compress_image(crop, model=shipped, quality=IMAGE_REFINEMENT_BASE, device="cpu")
    stages = refined.header.num_stages
    # The stages alone are the base quality's first stages' picture.
    assert stages == min(base.header.num_stages, IMAGE_REFINEMENT_BASE_STAGES)
    preview = decompress_image(refined.data, model=shipped, stages=stages)
    assert np.array_equal(preview, decompress_image(base.data, model=shipped, stages=stages))
    # Without its last chunk the file still decodes the stages, and says what is missing.
    _, chunks = unpack_container(refined.data)
    cut = refined.data[:len(refined.data) - len(chunks[-1]) - 8]
    assert np.array_equal(decompress_image(cut, model=shipped, stages=stages), preview)
    with pytest.raises(ContainerError, match=f"not their refinement.*--stages {stages}"):
        decompress_image(cut, model=shipped)
    # A changed refinement byte is caught by the chunk's CRC.
    bad = bytearray(refined.data)
    bad[-6] ^= 0x40
    with pytest.raises(ContainerError, match="CRC"):
        decompress_image(bytes(bad), model=shipped)


def test_refined_grayscale(shipped, crop):
    gray = np.asarray(Image.fromarray(crop).convert("L"))
    n = shipped.ladder_qualities
    out = decompress_image(compress_image(gray, model=shipped, quality=n + 3).data,
                           model=shipped)
    assert out.shape == gray.shape and _psnr(out, gray) > 34


def test_cli_refined_quality_and_info(tmp_path, shipped, crop):
    src = tmp_path / "crop.png"
    Image.fromarray(crop).save(src)
    n = shipped.num_qualities
    runner = CliRunner()
    result = runner.invoke(cli, ["compress", str(src), str(tmp_path / "a.vqc"), "-q", str(n)])
    assert result.exit_code == 0, result.output
    info = runner.invoke(cli, ["info", str(tmp_path / "a.vqc")])
    assert info.exit_code == 0 and "refinement: step 14" in info.output
    result = runner.invoke(cli, ["decompress", str(tmp_path / "a.vqc"), str(tmp_path / "a.png")])
    assert result.exit_code == 0, result.output
    assert _psnr(np.asarray(Image.open(tmp_path / "a.png")), crop) > 38
    result = runner.invoke(cli, ["compress", str(src), str(tmp_path / "b.vqc"), "-q",
                                 str(n + 1)])
    assert_one_line_error(result, f"quality must be 1..{n}")
    assert not (tmp_path / "b.vqc").exists()


def test_contexts_see_the_activity_of_the_block_and_its_neighbours():
    """Blocks of a 3x3 grid with no coded neighbours in frequency: only activity tells them
    apart (the busy centre, its four neighbours, the corners)."""
    q = np.zeros((3, 9, BLOCK, BLOCK), dtype=np.int16)
    activity = np.zeros(9, dtype=np.int64)
    activity[4] = 20
    ctx = refinement._contexts(q, 5, 1, activity, 3)
    assert len({ctx[4], ctx[1], ctx[0]}) == 3
    assert ctx[1] == ctx[3] == ctx[5] == ctx[7] and ctx[0] == ctx[2] == ctx[6] == ctx[8]
    assert ctx.max() < refinement.NUM_CONTEXTS


def test_info_says_whether_a_refined_file_is_deblocked():
    from pathlib import Path
    golden = Path(__file__).resolve().parent / "golden"
    lines = {}
    for version in (6, 7):
        r = CliRunner().invoke(cli, ["info", str(golden / f"vqimage-v3i-q16-v{version}.vqc")])
        assert r.exit_code == 0, r.output
        lines[version] = [x for x in r.output.splitlines() if x.startswith("refinement:")]
    assert lines[6] == ["refinement: step 26 (8-bit levels), its own chunk"]
    assert lines[7] == ["refinement: step 26 (8-bit levels), its own chunk, deblocked"]
