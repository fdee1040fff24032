"""The checks between a file and its decoder: the index check (CRC32 of the coded indices) and
the portable flag. A decoder must refuse, in one line, what it cannot decode faithfully."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from vqcodec.cli.main import cli
from vqcodec.coding import file_codec
from vqcodec.errors import CorruptPayloadError
from vqcodec.format import pack_container, unpack_container
from vqcodec.pipelines.audio import compress_audio, decompress_audio
from vqcodec.pipelines.image import compress_image, decompress_image


def _image(rng, h=24, w=32):
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def _rewrite(data: bytes, **changes) -> bytes:
    """The same file with header fields changed and a valid CRC: a forgery, not corruption."""
    import dataclasses
    header, payload = unpack_container(data)
    return pack_container(dataclasses.replace(header, **changes), payload)


@pytest.mark.parametrize("model_fixture", ["tiny_model", "tiny_grouped_model"])
def test_forged_index_check_is_refused(model_fixture, request, rng):
    model = request.getfixturevalue(model_fixture)
    data = compress_image(_image(rng), model=model, device="cpu").data
    header = unpack_container(data)[0]
    forged = _rewrite(data, index_check=header.index_check ^ 1)
    with pytest.raises(CorruptPayloadError, match="do not match the file's check"):
        decompress_image(forged, model=model, device="cpu")


def test_forged_portable_flag_is_refused(tiny_model, rng):
    data = compress_image(_image(rng), model=tiny_model, device="cpu").data
    assert unpack_container(data)[0].portable is False  # a float prior writes float files
    with pytest.raises(CorruptPayloadError, match="says its tables are exact"):
        decompress_image(_rewrite(data, portable=True), model=tiny_model, device="cpu")


def test_other_tables_are_refused_not_decoded(tiny_audio_model, monkeypatch):
    """What a float prior does on a machine whose kernels round differently: the stream still
    decodes, to other indices. The index check turns that into an error."""
    samples = (np.sin(np.arange(4800) / 7.0) * 0.3).astype(np.float32)
    data = compress_audio((samples, 24000), model=tiny_audio_model, device="cpu").data
    codec = file_codec(tiny_audio_model.model)
    real = codec.decompress
    monkeypatch.setattr(codec, "decompress", lambda *a: (real(*a) + 1) % 2)
    with pytest.raises(CorruptPayloadError, match="tables come from a float prior"):
        decompress_audio(data, model=tiny_audio_model, device="cpu")


def test_cli_reports_a_bad_check_in_one_line(tiny_model_path, tmp_path, rng):
    from vqcodec.zoo.registry import load_model
    model = load_model(tiny_model_path)
    data = compress_image(_image(rng), model=model, device="cpu").data
    bad = tmp_path / "bad.vqc"
    bad.write_bytes(_rewrite(data, index_check=(unpack_container(data)[0].index_check + 7) % 2**32))
    out = tmp_path / "out.png"
    result = CliRunner().invoke(cli, ["decompress", str(bad), str(out), "--model", tiny_model_path])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "check" in lines[0]
    assert not out.exists()  # no half-written output


def test_info_shows_version_and_portability(tiny_model, tmp_path, rng):
    path = tmp_path / "x.vqc"
    path.write_bytes(compress_image(_image(rng), model=tiny_model, device="cpu").data)
    result = CliRunner().invoke(cli, ["info", str(path)])
    assert result.exit_code == 0
    assert "format version: 5" in result.output and "portable: no" in result.output


def test_one_decompress_for_both_media(tiny_model, tiny_audio_model, rng):
    import vqcodec
    image = _image(rng)
    data = compress_image(image, model=tiny_model, device="cpu").data
    assert vqcodec.decompress(data, model=tiny_model, device="cpu").shape == image.shape
    samples = (np.sin(np.arange(4800) / 7.0) * 0.3).astype(np.float32)
    data = compress_audio((samples, 24000), model=tiny_audio_model, device="cpu").data
    out, rate = vqcodec.decompress(data, model=tiny_audio_model, device="cpu")
    assert rate == 24000 and out.shape == (1, 4800)
