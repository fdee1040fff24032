"""The command line: round trips, one-line errors, non-zero exits, no partial outputs."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from vqcodec.cli.main import cli


@pytest.fixture
def photo(tmp_path, rng):
    yy, xx = np.mgrid[0:45, 0:70]
    img = (128 + 100 * np.sin(xx / 9)[..., None] * np.cos(yy / 6)[..., None]
           + rng.normal(0, 5, (45, 70, 3))).clip(0, 255).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(img).save(path)
    return path


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def assert_one_line_error(result, pattern):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert pattern in lines[0], lines[0]


def test_round_trip(tmp_path, photo, tiny_model_path):
    vqc, out = tmp_path / "a.vqc", tmp_path / "a.png"
    r = run("compress", photo, vqc, "--model", tiny_model_path, "--quality", "2", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "bpp" in r.output and "stages" in r.output
    r = run("decompress", vqc, out, "--model", tiny_model_path, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (70, 45)
    r = run("info", vqc)
    assert r.exit_code == 0 and "model: tiny-test" in r.output and "70x45" in r.output
    assert "stages coded: 2" in r.output


def test_grayscale_stays_grayscale(tmp_path, photo, tiny_model_path):
    gray = tmp_path / "g.png"
    Image.open(photo).convert("L").save(gray)
    run("compress", gray, tmp_path / "g.vqc", "--model", tiny_model_path)
    r = run("decompress", tmp_path / "g.vqc", tmp_path / "g2.png", "--model", tiny_model_path)
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "g2.png").mode == "L"


def test_missing_input(tmp_path, tiny_model_path):
    out = tmp_path / "x.vqc"
    assert_one_line_error(run("compress", tmp_path / "nope.png", out, "--model", tiny_model_path),
                          "no such file")
    assert not out.exists()


def test_not_an_image(tmp_path, tiny_model_path):
    bad = tmp_path / "bad.png"
    bad.write_text("hello")
    out = tmp_path / "x.vqc"
    assert_one_line_error(run("compress", bad, out, "--model", tiny_model_path), "not an image")
    assert not out.exists()


def test_empty_input(tmp_path, tiny_model_path):
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    assert_one_line_error(run("compress", empty, tmp_path / "x.vqc", "--model", tiny_model_path),
                          "empty")
    empty_vqc = tmp_path / "e.vqc"
    empty_vqc.write_bytes(b"")
    assert_one_line_error(run("decompress", empty_vqc, tmp_path / "x.png"), "empty")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("cut", [1, 10, 30, -1])
def test_truncated_vqc(tmp_path, photo, tiny_model_path, cut):
    vqc = tmp_path / "a.vqc"
    run("compress", photo, vqc, "--model", tiny_model_path)
    data = vqc.read_bytes()
    bad = tmp_path / "t.vqc"
    bad.write_bytes(data[:cut])
    out = tmp_path / "t.png"
    assert_one_line_error(run("decompress", bad, out, "--model", tiny_model_path), "truncated")
    assert not out.exists()


def test_corrupted_vqc(tmp_path, photo, tiny_model_path):
    vqc = tmp_path / "a.vqc"
    run("compress", photo, vqc, "--model", tiny_model_path)
    data = bytearray(vqc.read_bytes())
    data[len(data) // 2] ^= 0xFF
    vqc.write_bytes(bytes(data))
    out = tmp_path / "c.png"
    assert_one_line_error(run("decompress", vqc, out, "--model", tiny_model_path), "CRC")
    assert not out.exists()


def test_wrong_magic(tmp_path, photo):
    bad = tmp_path / "m.vqc"
    bad.write_bytes(photo.read_bytes())
    assert_one_line_error(run("decompress", bad, tmp_path / "m.png"), "magic")
    assert_one_line_error(run("info", bad), "magic")


def test_unknown_model(tmp_path, photo):
    assert_one_line_error(run("compress", photo, tmp_path / "x.vqc", "--model", "no-such-model"),
                          "unknown model")
    assert not (tmp_path / "x.vqc").exists()


def test_model_file_is_not_a_model(tmp_path, photo):
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x00" * 100)
    assert_one_line_error(run("compress", photo, tmp_path / "x.vqc", "--model", fake),
                          "not a vqcodec model file")


def test_image_too_large_refused(tmp_path, tiny_model_path, monkeypatch):
    import vqcodec.io.image as image_io
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(big)
    monkeypatch.setattr(image_io, "MAX_PIXELS", 1000)
    monkeypatch.setattr(image_io.load_image, "__kwdefaults__", {"max_pixels": 1000})
    assert_one_line_error(run("compress", big, tmp_path / "x.vqc", "--model", tiny_model_path),
                          "too large")


def test_bad_quality(tmp_path, photo, tiny_model_path):
    out = tmp_path / "x.vqc"
    assert_one_line_error(run("compress", photo, out, "--model", tiny_model_path, "-q", "0"),
                          "quality")
    assert not out.exists()


def test_cuda_without_cuda(tmp_path, photo, tiny_model_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert_one_line_error(run("compress", photo, tmp_path / "x.vqc", "--model", tiny_model_path,
                              "--device", "cuda"), "CUDA is not available")


def test_unwritable_output_format(tmp_path, photo, tiny_model_path):
    vqc = tmp_path / "a.vqc"
    run("compress", photo, vqc, "--model", tiny_model_path)
    out = tmp_path / "a.xyz"
    r = run("decompress", vqc, out, "--model", tiny_model_path)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_help():
    for cmd in ([], ["compress"], ["decompress"], ["info"]):
        r = run(*cmd, "--help")
        assert r.exit_code == 0 and "Usage" in r.output


@pytest.fixture
def speech(tmp_path):
    import soundfile
    t = np.arange(12000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    path = tmp_path / "talk.wav"
    soundfile.write(path, np.stack([x, 0.5 * x], 1), 16000)
    return path


def test_audio_round_trip(tmp_path, speech, tiny_audio_model_path):
    import soundfile
    vqc = tmp_path / "talk.vqc"
    r = run("compress", speech, vqc, "--model", tiny_audio_model_path, "--bitrate", "1.6",
            "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "kbps" in r.output and "2 ch at 16000 Hz" in r.output
    for suffix in (".wav", ".flac"):
        out = tmp_path / f"out{suffix}"
        r = run("decompress", vqc, out, "--model", tiny_audio_model_path)
        assert r.exit_code == 0, r.output
        info = soundfile.info(out)
        assert (info.samplerate, info.channels, info.frames) == (16000, 2, 12000)
    r = run("info", vqc)
    assert r.exit_code == 0, r.output
    assert "media: audio" in r.output and "2 channel(s), 12000 samples at 16000 Hz" in r.output


def test_audio_errors(tmp_path, speech, tiny_audio_model_path, tiny_model_path, photo):
    vqc = tmp_path / "talk.vqc"
    assert_one_line_error(run("compress", speech, vqc, "--model", tiny_audio_model_path,
                              "--quality", "2"), "--quality is for images")
    assert_one_line_error(run("compress", photo, vqc, "--model", tiny_model_path,
                              "--bitrate", "6"), "--bitrate is for audio")
    assert_one_line_error(run("compress", speech, vqc, "--model", tiny_audio_model_path,
                              "--bitrate", "7"), "bitrate must be one of")
    assert_one_line_error(run("compress", speech, vqc, "--model", tiny_model_path),
                          "not an audio model")
    fake = tmp_path / "fake.wav"
    fake.write_text("not audio at all")
    assert_one_line_error(run("compress", fake, vqc, "--model", tiny_audio_model_path), "")
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    assert_one_line_error(run("compress", empty, vqc, "--model", tiny_audio_model_path), "")
    assert not vqc.exists()
    assert run("compress", speech, vqc, "--model", tiny_audio_model_path).exit_code == 0
    data = vqc.read_bytes()
    (tmp_path / "cut.vqc").write_bytes(data[: len(data) // 2])
    assert_one_line_error(run("decompress", tmp_path / "cut.vqc", tmp_path / "o.wav",
                              "--model", tiny_audio_model_path), "")
    assert_one_line_error(run("decompress", vqc, tmp_path / "o.xyz",
                              "--model", tiny_audio_model_path), "")
    assert not (tmp_path / "o.wav").exists() and not (tmp_path / "o.xyz").exists()
