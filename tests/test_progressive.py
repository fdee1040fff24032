"""Progressive decoding: a file decodes from its first r stages, and a file of version 3 or
later (one chunk per stage, each with its own CRC) cut after k chunks still decodes its first k stages."""
from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vqcodec.cli.main import cli
from vqcodec.coding import file_codec
from vqcodec.errors import ContainerError, InputError
from vqcodec.format import (ContainerHeader, MediaType, pack_container, read_header,
                            stages_held, unpack_container)
from vqcodec.pipelines.audio import compress_audio, decode_channel, decompress_audio
from vqcodec.pipelines.file import decode_indices
from vqcodec.pipelines.image import compress_image, decompress_image, indices_to_image

HEADER = ContainerHeader(media_type=MediaType.IMAGE, model_id="m", weights_hash=bytes(8),
                         num_stages=3, shape=(3, 32, 48), sample_rate=0, latent_shape=(2, 3),
                         index_check=7, num_chunks=3)
from conftest import assert_one_line_error, chunk_ends, smooth_image

CHUNKS = (b"abcd", b"", b"0123456789ab")


def _image(rng, h=40, w=56):
    return smooth_image(rng, h, w)




# --- the container ------------------------------------------------------------------------

def test_chunked_round_trip_and_layout():
    data = pack_container(HEADER, CHUNKS)
    assert data[4] == 5 and unpack_container(data) == (HEADER, CHUNKS)
    v3 = dataclasses.replace(HEADER, version=3)
    assert unpack_container(pack_container(v3, CHUNKS)) == (v3, CHUNKS)
    # Every CRC32 is the CRC of all the bytes before it: the header's, then one per chunk.
    ends = chunk_ends(data)
    header_end = ends[0] - 8 - len(CHUNKS[0])
    for end in [header_end, *ends]:
        assert struct.unpack("<I", data[end - 4:end])[0] == zlib.crc32(data[:end - 4])
    assert ends[-1] == len(data)


def test_one_chunk_and_version_2_still_written():
    one = dataclasses.replace(HEADER, num_chunks=1)
    assert unpack_container(pack_container(one, b"xyz")) == (one, (b"xyz",))
    v2 = dataclasses.replace(HEADER, num_chunks=1, version=2)
    assert unpack_container(pack_container(v2, b"xyz")) == (v2, b"xyz")
    with pytest.raises(ContainerError, match="declares 3 chunk"):
        pack_container(HEADER, b"xyz")


def test_truncation_keeps_the_complete_chunks():
    data = pack_container(HEADER, CHUNKS)
    ends = chunk_ends(data)
    header_end = ends[0] - 8 - len(CHUNKS[0])
    for cut in range(header_end, len(data)):
        with pytest.raises(ContainerError, match="truncated"):
            unpack_container(data[:cut])
        header, chunks = unpack_container(data[:cut], allow_truncation=True)
        complete = sum(end <= cut for end in ends)
        assert chunks == CHUNKS[:complete] and stages_held(header, chunks) == complete
    for cut in range(header_end):  # the header itself must be whole
        with pytest.raises(ContainerError):
            unpack_container(data[:cut], allow_truncation=True)
    with pytest.raises(ContainerError, match="trailing data"):
        unpack_container(data + b"\0", allow_truncation=True)


def test_every_single_byte_change_is_refused():
    data = pack_container(HEADER, CHUNKS)
    for pos in range(len(data)):
        for value in (data[pos] ^ 0x01, data[pos] ^ 0x80):
            with pytest.raises(ContainerError):
                unpack_container(data[:pos] + bytes([value]) + data[pos + 1:])


def test_corrupted_chunk_and_header_messages():
    data = bytearray(pack_container(HEADER, CHUNKS))
    ends = chunk_ends(bytes(data))
    bad = data.copy()
    bad[ends[2] - 6] ^= 0xFF  # a byte of chunk 3's stream
    with pytest.raises(ContainerError, match=r"^corrupted \.vqc file \(CRC mismatch in chunk 3 of 3\)$"):
        unpack_container(bytes(bad), allow_truncation=True)  # refused, truncation allowed or not
    bad = data.copy()
    bad[9] ^= 0x01  # a byte of the weights hash
    with pytest.raises(ContainerError):
        unpack_container(bytes(bad))
    bad = data.copy()
    bad[ends[0] - 8 - len(CHUNKS[0]) - 5] ^= 0x01  # the chunk count, under the header CRC
    with pytest.raises(ContainerError, match="header CRC mismatch"):
        unpack_container(bytes(bad))


@pytest.mark.parametrize("override", [{"num_chunks": 2}, {"num_chunks": 0},
                                      {"version": 2}])
def test_chunk_count_must_be_one_or_the_stages(override):
    with pytest.raises(ContainerError):
        dataclasses.replace(HEADER, **override)


# --- images -------------------------------------------------------------------------------

@pytest.mark.parametrize("model_fixture", ["tiny_model", "tiny_grouped_model",
                                           "tiny_integer_grouped_model"])
def test_first_r_stages_decode_to_the_image_of_those_indices(model_fixture, request, rng):
    loaded = request.getfixturevalue(model_fixture)
    net = loaded.model
    image = _image(rng)
    data = compress_image(image, model=loaded, quality=4, device="cpu").data
    header, chunks = unpack_container(data)
    assert header.version == 5 and header.num_chunks == header.num_stages == len(chunks) > 1
    assert header.context_stages == 2  # stages 2 and 3 in one pass
    full = decode_indices(header, loaded, chunks, header.num_stages, *header.latent_shape)
    cpu = torch.device("cpu")
    for r in range(1, header.num_stages + 1):
        want = indices_to_image(net, full[:r], 3, *image.shape[:2], cpu)
        assert np.array_equal(decompress_image(data, model=loaded, device="cpu", stages=r), want)
        # The same from the first r chunks alone, and from one stream (a version-2 file).
        cut = data[:chunk_ends(data)[r - 1]]
        assert np.array_equal(decompress_image(cut, model=loaded, device="cpu", stages=r), want)
        assert torch.equal(file_codec(net).decompress(chunks[:r], r, *header.latent_shape,
                                                      context_stages=2, adapt=header.adapted),
                           full[:r])
    v2 = pack_container(dataclasses.replace(header, version=2, num_chunks=1, context_stages=None,
                                            adapted=False),
                        file_codec(net).compress(full).payload)
    assert np.array_equal(decompress_image(v2, model=loaded, device="cpu"),
                          decompress_image(data, model=loaded, device="cpu"))
    assert np.array_equal(decompress_image(v2, model=loaded, device="cpu", stages=1),
                          decompress_image(data, model=loaded, device="cpu", stages=1))


def test_stages_out_of_range_and_cut_files_are_refused(tiny_grouped_model, rng):
    data = compress_image(_image(rng), model=tiny_grouped_model, quality=4, device="cpu").data
    total = read_header(data).num_stages
    for bad in (0, -1, total + 1):
        with pytest.raises(InputError, match=f"must be 1 to {total} for this file"):
            decompress_image(data, model=tiny_grouped_model, device="cpu", stages=bad)
    ends = chunk_ends(data)
    cut = data[:ends[0] + 3]  # one whole chunk and the start of the next
    with pytest.raises(ContainerError, match=f"holds only the first 1 of its {total} stages"):
        decompress_image(cut, model=tiny_grouped_model, device="cpu")
    with pytest.raises(ContainerError, match="holds only the first 1"):
        decompress_image(cut, model=tiny_grouped_model, device="cpu", stages=2)
    with pytest.raises(ContainerError, match="ends inside its first chunk"):
        decompress_image(data[:ends[0] - 1], model=tiny_grouped_model, device="cpu", stages=1)


def test_index_check_still_guards_a_full_decode(tiny_grouped_model, rng):
    data = compress_image(_image(rng), model=tiny_grouped_model, quality=4, device="cpu").data
    header, chunks = unpack_container(data)
    forged = pack_container(dataclasses.replace(header, index_check=header.index_check ^ 1),
                            chunks)
    with pytest.raises(ContainerError, match="do not match the file's check"):
        decompress_image(forged, model=tiny_grouped_model, device="cpu")
    # Fewer stages than coded: the check (over all stages) cannot apply, the chunk CRCs do.
    decompress_image(forged, model=tiny_grouped_model, device="cpu", stages=1)


# --- audio --------------------------------------------------------------------------------

def test_audio_decodes_from_its_first_stages(tiny_integer_audio_model):
    loaded = tiny_integer_audio_model
    samples = (np.sin(np.arange(3000) / 5.0) * 0.4).astype(np.float32)
    data = compress_audio((samples, 8000), model=loaded, bitrate=None, device="cpu").data
    header, chunks = unpack_container(data)
    assert header.version == 5 and header.num_chunks == 1 and header.num_stages > 1
    assert header.context_stages is None  # all stages: audio has no passes
    full = decode_indices(header, loaded, chunks, 1, header.num_stages, header.latent_shape[1])
    clip = decompress_audio(data, model=loaded, device="cpu", stages=1)
    want = decode_channel(loaded.model, full[0, :1]).numpy()[:3000]
    assert np.allclose(clip.samples[0], np.clip(want, -1, 1), atol=1e-6)
    assert not np.allclose(clip.samples, decompress_audio(data, model=loaded, device="cpu").samples)
    with pytest.raises(InputError, match="must be 1 to"):
        decompress_audio(data, model=loaded, device="cpu", stages=header.num_stages + 1)
    with pytest.raises(ContainerError, match="ends inside its first chunk"):
        decompress_audio(data[:-1], model=loaded, device="cpu", stages=1)


# --- the command line ---------------------------------------------------------------------

def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])




def test_cli_stages_on_whole_cut_and_corrupted_files(tiny_grouped_model_path, tmp_path, rng):
    photo = tmp_path / "photo.png"
    Image.fromarray(_image(rng)).save(photo)
    vqc = tmp_path / "a.vqc"
    assert _run("compress", photo, vqc, "--model", tiny_grouped_model_path, "-q", "4").exit_code == 0
    data = vqc.read_bytes()
    total = read_header(data).num_stages
    info = _run("info", vqc)
    assert "format version: 5" in info.output

    out = tmp_path / "preview.png"
    result = _run("decompress", vqc, out, "--stages", 1, "--model", tiny_grouped_model_path)
    assert result.exit_code == 0, result.output
    preview = np.asarray(Image.open(out))

    cut = tmp_path / "cut.vqc"
    cut.write_bytes(data[:chunk_ends(data)[0]])
    out2 = tmp_path / "cut.png"
    result = _run("decompress", cut, out2, "--stages", 1, "--model", tiny_grouped_model_path)
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(out2)), preview)

    for args, message in [(("--stages", 2), "holds only the first 1"),
                          ((), "holds only the first 1"),
                          (("--stages", 0), f"must be 1 to {total}"),
                          (("--stages", total + 1), f"must be 1 to {total}")]:
        target = tmp_path / "refused.png"
        src = vqc if args and args[1] in (0, total + 1) else cut
        assert_one_line_error(_run("decompress", src, target, *args, "--model",
                             tiny_grouped_model_path), message)
        assert not target.exists()

    bad = bytearray(data)
    bad[chunk_ends(data)[1] - 6] ^= 0xFF  # inside chunk 2
    corrupted = tmp_path / "bad.vqc"
    corrupted.write_bytes(bytes(bad))
    target = tmp_path / "bad.png"
    assert_one_line_error(_run("decompress", corrupted, target, "--stages", 1, "--model",
                         tiny_grouped_model_path), "CRC mismatch in chunk 2")
    assert not target.exists()


def test_public_decompress_takes_stages(tiny_grouped_model, rng):
    import vqcodec
    data = compress_image(_image(rng), model=tiny_grouped_model, quality=4, device="cpu").data
    cut = data[:chunk_ends(data)[0]]
    assert np.array_equal(vqcodec.decompress(cut, model=tiny_grouped_model, device="cpu", stages=1),
                          decompress_image(data, model=tiny_grouped_model, device="cpu", stages=1))
