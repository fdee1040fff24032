"""Tests for safe audio input/output: round trips, layouts, resampling, refusals, atomic writes."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vqcodec.io import audio as audio_io
from vqcodec.io.media import AUDIO_SUFFIXES
from vqcodec.io.audio import (
    SAVE_EXTENSIONS, AudioClip, AudioReader, InputError, WindowedResampler, as_audio_clip,
    is_audio_path, load_audio, open_audio_writer, resample, save_audio,
)

RATE = 16000


def _sweep(seconds: float = 0.5, rate: int = RATE, channels: int = 1) -> np.ndarray:
    """Float32 [channels, n]: a 100 Hz -> 4 kHz sweep per channel (different phase each)."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * (100 * t + (4000 - 100) * t**2 / (2 * seconds))
    return np.stack([0.8 * np.sin(phase + c) for c in range(channels)]).astype(np.float32)


def _write(path: Path, samples: np.ndarray, rate: int = RATE, **kwargs) -> Path:
    """Write [channels, n] samples with soundfile directly (its layout is [n, channels])."""
    sf.write(str(path), samples.T, rate, **kwargs)
    return path


def _peak_hz(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return float(np.fft.rfftfreq(signal.size, 1 / rate)[np.argmax(spectrum)])


# --- round trips --------------------------------------------------------------------------------


def test_wav_round_trip_within_one_16_bit_step(tmp_path):
    x = _sweep()
    x[0, :3] = [1.0, -1.0, 0.0]  # full scale both ways
    save_audio(tmp_path / "a.wav", x, RATE)
    clip = load_audio(tmp_path / "a.wav")
    assert clip.samples.dtype == np.float32 and clip.samples.flags.c_contiguous
    assert clip.samples.shape == x.shape and clip.sample_rate == RATE
    assert np.abs(clip.samples - x).max() <= 1 / 32768
    assert sf.info(str(tmp_path / "a.wav")).subtype == "PCM_16"


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_load_save_load_is_bit_exact(tmp_path, suffix):
    # libsndfile's own float -> 16-bit scaling (x 32767) would move values near full scale.
    x = np.linspace(-1, 1, 65536, dtype=np.float32)[None]
    _write(tmp_path / f"in{suffix}", x, subtype="PCM_16")
    first = load_audio(tmp_path / f"in{suffix}")
    save_audio(tmp_path / f"again{suffix}", first)
    second = load_audio(tmp_path / f"again{suffix}")
    assert np.array_equal(first.samples, second.samples)
    # Every 16-bit value, including -32768 and 32767, survives.
    ints, _ = sf.read(str(tmp_path / f"again{suffix}"), dtype="int16")
    assert ints.min() == -32768 and ints.max() == 32767


def test_flac_round_trip(tmp_path):
    x = _sweep(channels=2)
    save_audio(tmp_path / "a.flac", x, 44100)
    clip = load_audio(tmp_path / "a.flac")
    assert sf.info(str(tmp_path / "a.flac")).format == "FLAC"
    assert clip.sample_rate == 44100 and clip.channels == 2
    assert np.abs(clip.samples - x).max() <= 1 / 32768


def test_stereo_keeps_channel_order(tmp_path):
    left = np.full(1000, 0.25, dtype=np.float32)
    right = np.full(1000, -0.5, dtype=np.float32)
    _write(tmp_path / "s.wav", np.stack([left, right]), subtype="FLOAT")
    clip = load_audio(tmp_path / "s.wav")
    assert clip.channels == 2 and clip.num_samples == 1000
    assert np.all(clip.samples[0] == 0.25) and np.all(clip.samples[1] == -0.5)
    save_audio(tmp_path / "out.wav", clip)
    raw, _ = sf.read(str(tmp_path / "out.wav"), dtype="float32", always_2d=True)
    assert raw.shape == (1000, 2) and raw[0, 0] == 0.25 and raw[0, 1] == -0.5


def test_ogg_vorbis_round_trip(tmp_path):
    if ".ogg" not in SAVE_EXTENSIONS:
        pytest.skip("this libsndfile has no Vorbis encoder")
    t = np.arange(RATE) / RATE
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    save_audio(tmp_path / "a.ogg", x, RATE)
    info = sf.info(str(tmp_path / "a.ogg"))
    assert (info.format, info.subtype) == ("OGG", "VORBIS")
    clip = load_audio(tmp_path / "a.ogg")
    assert clip.num_samples == x.shape[1]
    assert abs(_peak_hz(clip.samples[0], RATE) - 440) <= 1
    assert np.mean((clip.samples - x) ** 2) < 1e-3 * np.mean(x**2)  # lossy but > 30 dB SNR


def test_int16_arrays_are_scaled_by_1_over_32768(tmp_path):
    ints = np.array([[-32768, -1, 0, 1, 16384, 32767]], dtype=np.int16)
    clip = as_audio_clip(ints, RATE)
    assert clip.samples.dtype == np.float32
    assert np.array_equal(clip.samples, ints.astype(np.float32) / 32768)
    save_audio(tmp_path / "i.wav", ints, RATE)
    back, _ = sf.read(str(tmp_path / "i.wav"), dtype="int16", always_2d=True)
    assert np.array_equal(back.T, ints)


def test_save_clips_to_full_scale_and_rounds_to_nearest_step(tmp_path):
    step = 1 / 32768
    x = np.array([1.7, -3.0, 0.5, 0.5 + 0.6 * step, -0.5 - 0.6 * step, 0.5 + 0.4 * step])
    save_audio(tmp_path / "loud.wav", x, RATE)
    back, _ = sf.read(str(tmp_path / "loud.wav"), dtype="int16")
    # (libsndfile's own conversion would truncate 0.5 + 0.6 step to 16384)
    assert back.tolist() == [32767, -32768, 16384, 16385, -16385, 16384]


def test_load_float_file_clips_small_overshoot_and_refuses_large(tmp_path):
    _write(tmp_path / "over.wav", np.array([[0.5, 1.25, -1.5]], np.float32), subtype="FLOAT")
    assert load_audio(tmp_path / "over.wav").samples.tolist() == [[0.5, 1.0, -1.0]]
    _write(tmp_path / "raw.wav", np.array([[0.5, 300.0]], np.float32), subtype="FLOAT")
    with pytest.raises(InputError, match="outside"):
        load_audio(tmp_path / "raw.wav")
    _write(tmp_path / "nan.wav", np.array([[0.5, np.nan]], np.float32), subtype="FLOAT")
    with pytest.raises(InputError, match="NaN"):
        load_audio(tmp_path / "nan.wav")


def test_reads_ogg_opus_when_available(tmp_path):
    if ".opus" not in AUDIO_SUFFIXES:
        pytest.skip("this libsndfile cannot read Opus")
    _write(tmp_path / "a.opus", _sweep(rate=48000), 48000, format="OGG", subtype="OPUS")
    clip = load_audio(tmp_path / "a.opus")
    assert clip.sample_rate == 48000 and clip.channels == 1 and clip.num_samples > 0


# --- AudioClip and as_audio_clip ------------------------------------------------------------------


def test_clip_properties_and_immutability():
    clip = as_audio_clip(np.zeros((2, 24000), np.float32), 48000)
    assert (clip.channels, clip.num_samples, clip.seconds) == (2, 24000, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        clip.sample_rate = 8000  # type: ignore[misc]


def test_as_audio_clip_layouts():
    mono = as_audio_clip(np.linspace(-1, 1, 100), RATE)  # float64, 1-D
    assert mono.samples.shape == (1, 100) and mono.samples.dtype == np.float32
    x = np.zeros((2, 100), np.float32)
    assert as_audio_clip(x, np.int64(RATE)).samples is x  # no copy when already right
    assert type(as_audio_clip(x, np.int64(RATE)).sample_rate) is int


@pytest.mark.parametrize(
    ("samples", "rate", "message"),
    [
        (np.zeros(10, np.int32), RATE, "float or int16"),
        (np.zeros((1, 2, 10), np.float32), RATE, "float or int16"),
        ([0.0, 0.1], RATE, "numpy array"),
        (np.zeros(0, np.float32), RATE, "no samples"),
        (np.zeros((2, 0), np.float32), RATE, "no samples"),
        (np.zeros((9, 100), np.float32), RATE, "too many channels: 9"),
        (np.zeros((1000, 2), np.float32), RATE, "transpose"),
        (np.array([0.5, 1.01]), RATE, "outside"),
        (np.array([0.5, np.inf]), RATE, "NaN or infinite"),
        (np.zeros(10, np.float32), 100, "unsupported sample rate 100 Hz"),
        (np.zeros(10, np.float32), 400_000, "unsupported sample rate"),
        (np.zeros(10, np.float32), 44100.5, "integer"),
        (np.zeros(10, np.float32), True, "integer"),
    ],
)
def test_as_audio_clip_refusals(samples, rate, message):
    with pytest.raises(InputError, match=message):
        as_audio_clip(samples, rate)


def test_as_audio_clip_duration_limit():
    with pytest.raises(InputError, match="too long"):
        as_audio_clip(np.zeros(2000, np.float32), 1000, max_seconds=1.5)
    assert audio_io.MAX_SECONDS == 4 * 3600


def test_audio_clip_constructor_checks_layout():
    with pytest.raises(InputError):
        AudioClip(np.zeros(10, np.float32), RATE)
    with pytest.raises(InputError):
        AudioClip(np.zeros((1, 10), np.float64), RATE)


# --- resample -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), [(44100, 16000), (16000, 48000), (48000, 22050)])
def test_resample_keeps_frequency_and_duration(src, dst):
    t = np.arange(src) / src  # one second
    x = np.stack([np.sin(2 * np.pi * 1000 * t), 0.5 * np.sin(2 * np.pi * 3000 * t)])
    y = resample(x.astype(np.float32), src, dst)
    assert y.dtype == np.float32 and y.shape == (2, dst)
    assert abs(_peak_hz(y[0], dst) - 1000) <= 1 and abs(_peak_hz(y[1], dst) - 3000) <= 1
    # Amplitude is kept (band-limited filter, both tones far below the new Nyquist).
    middle = slice(dst // 10, -dst // 10)
    assert np.abs(y[0, middle]).max() == pytest.approx(1.0, abs=0.02)


def test_resample_identity_and_mono():
    x = np.linspace(-1, 1, 101)
    same = resample(x, 8000, 8000)
    assert same.dtype == np.float32 and np.array_equal(same, x.astype(np.float32))
    assert resample(x.astype(np.float32), 8000, 16000).shape == (202,)


# --- load_audio refusals ------------------------------------------------------------------------


def test_refuses_missing_directory_and_empty(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(InputError, match="not a file"):
        load_audio(tmp_path)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        load_audio(tmp_path / "empty.wav")


def test_refuses_text_named_wav(tmp_path):
    (tmp_path / "notes.wav").write_text("these are not samples\n" * 20)
    with pytest.raises(InputError, match="not audio"):
        load_audio(tmp_path / "notes.wav")


def test_refuses_truncated_wav(tmp_path):
    # libsndfile itself reads the first half without complaint; the header's data size tells.
    path = _write(tmp_path / "full.wav", _sweep(), subtype="PCM_16")
    data = path.read_bytes()
    (tmp_path / "half.wav").write_bytes(data[: len(data) // 2])
    assert sf.info(str(tmp_path / "half.wav")).frames > 0  # the behaviour worked around
    with pytest.raises(InputError, match="truncated"):
        load_audio(tmp_path / "half.wav")
    # Cut inside the header: libsndfile refuses it on its own.
    (tmp_path / "head.wav").write_bytes(data[:30])
    with pytest.raises(InputError):
        load_audio(tmp_path / "head.wav")


def test_wav_with_streaming_size_or_trailing_chunk_is_accepted(tmp_path):
    path = _write(tmp_path / "a.wav", _sweep(), subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data += b"LIST\x04\x00\x00\x00abcd"  # metadata after the samples
    (tmp_path / "trailing.wav").write_bytes(bytes(data))
    assert load_audio(tmp_path / "trailing.wav").num_samples == int(0.5 * RATE)
    at = data.index(b"data") + 4
    data[at:at + 4] = b"\xff\xff\xff\xff"  # size unknown when written (a stream)
    (tmp_path / "stream.wav").write_bytes(bytes(data))
    assert load_audio(tmp_path / "stream.wav").num_samples >= int(0.5 * RATE)


def test_refuses_truncated_flac(tmp_path):
    path = _write(tmp_path / "full.flac", _sweep(channels=2), subtype="PCM_16")
    data = path.read_bytes()
    (tmp_path / "half.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupted"):
        load_audio(tmp_path / "half.flac")


def test_ogg_damage(tmp_path):
    if ".ogg" not in SAVE_EXTENSIONS:
        pytest.skip("this libsndfile has no Vorbis encoder")
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 48000)).astype(np.float32)
    path = _write(tmp_path / "full.ogg", noise, 48000, format="OGG", subtype="VORBIS")
    data = path.read_bytes()
    # Bytes zeroed mid-stream: the decoder loses sync and stops early, without an error.
    damaged = bytearray(data)
    damaged[len(data) // 2: len(data) // 2 + 200] = bytes(200)
    (tmp_path / "damaged.ogg").write_bytes(bytes(damaged))
    with pytest.raises(InputError, match="truncated or corrupted.*of 48000 samples"):
        load_audio(tmp_path / "damaged.ogg")
    # Cut short: libsndfile reads up to the last complete page and nothing tells it was cut, so
    # it is accepted, shorter (documented in the module).
    (tmp_path / "half.ogg").write_bytes(data[: len(data) // 2])
    assert 0 < load_audio(tmp_path / "half.ogg").num_samples < 48000


def test_refuses_zero_length_wav(tmp_path):
    _write(tmp_path / "zero.wav", np.zeros((1, 0), np.float32), subtype="PCM_16")
    with pytest.raises(InputError, match="no samples"):
        load_audio(tmp_path / "zero.wav")


@pytest.mark.parametrize("rate", [100, 500_000])
def test_refuses_absurd_sample_rate(tmp_path, rate):
    _write(tmp_path / "odd.wav", np.zeros((1, 50), np.float32), rate, subtype="PCM_16")
    assert sf.info(str(tmp_path / "odd.wav")).samplerate == rate
    with pytest.raises(InputError, match=f"unsupported sample rate {rate} Hz"):
        load_audio(tmp_path / "odd.wav")


def test_refuses_too_many_channels(tmp_path):
    _write(tmp_path / "nine.wav", np.zeros((9, 10), np.float32), subtype="PCM_16")
    with pytest.raises(InputError, match="too many channels: 9"):
        load_audio(tmp_path / "nine.wav")
    _write(tmp_path / "eight.wav", np.zeros((8, 10), np.float32), subtype="PCM_16")
    assert load_audio(tmp_path / "eight.wav").channels == 8


def test_too_long_is_refused_before_decoding(tmp_path, monkeypatch):
    path = _write(tmp_path / "long.wav", np.zeros((1, 3000), np.float32), 1000, subtype="PCM_16")

    def must_not_read(*args, **kwargs):
        raise AssertionError("samples were decoded before the length check")

    monkeypatch.setattr(audio_io.sf, "read", must_not_read)
    with pytest.raises(InputError, match="too long: 3 s"):
        load_audio(path, max_seconds=2)


# --- save_audio refusals and atomicity -----------------------------------------------------------


def test_refuses_unknown_or_missing_suffix(tmp_path):
    x = _sweep()
    with pytest.raises(InputError, match=r"'\.mp3'.*\.flac.*\.wav"):
        save_audio(tmp_path / "out.mp3", x, RATE)
    with pytest.raises(InputError, match="without a file suffix"):
        save_audio(tmp_path / "out", x, RATE)
    with pytest.raises(InputError, match="no such folder"):
        save_audio(tmp_path / "nope" / "out.wav", x, RATE)
    with pytest.raises(InputError, match="sample rate is needed"):
        save_audio(tmp_path / "out.wav", x)
    with pytest.raises(InputError, match="differs"):
        save_audio(tmp_path / "out.wav", as_audio_clip(x, RATE), 8000)
    assert list(tmp_path.iterdir()) == []


def test_refuses_vorbis_rate_that_would_crash_libsndfile(tmp_path):
    if ".ogg" not in SAVE_EXTENSIONS:
        pytest.skip("this libsndfile has no Vorbis encoder")
    with pytest.raises(InputError, match="Vorbis cannot hold 384000 Hz"):
        save_audio(tmp_path / "hi.ogg", np.zeros(1000, np.float32), 384000)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file_and_keeps_old_one(tmp_path, monkeypatch):
    target = tmp_path / "out.wav"

    class HalfWritten:  # opens, writes a little, then fails
        def __init__(self, file, *args, **kwargs):
            Path(file).write_bytes(b"RIFF partial")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise sf.LibsndfileError(0, prefix="simulated failure: ")

    monkeypatch.setattr(audio_io.sf, "SoundFile", HalfWritten)
    with pytest.raises(InputError, match="cannot write WAV"):
        save_audio(target, _sweep(), RATE)
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file

    target.write_bytes(b"previous contents")
    with pytest.raises(InputError):
        save_audio(target, _sweep(), RATE)
    assert target.read_bytes() == b"previous contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


# --- extensions ---------------------------------------------------------------------------------


def test_audio_extensions():
    assert {".wav", ".flac"} <= AUDIO_SUFFIXES
    assert SAVE_EXTENSIONS <= AUDIO_SUFFIXES
    assert is_audio_path("song.WAV") and is_audio_path(Path("a/b.flac"))
    assert not is_audio_path("photo.png") and not is_audio_path("noext")
    if "OGG" in sf.available_formats():
        assert {".ogg", ".oga"} <= AUDIO_SUFFIXES


# --- reading and writing window by window ----------------------------------------------------

def test_reader_windows_equal_the_whole_file(tmp_path):
    path = tmp_path / "a.flac"
    save_audio(path, _sweep(1.0, channels=2), RATE)
    whole = load_audio(path).samples
    with AudioReader(path) as reader:
        assert (reader.channels, reader.num_samples, reader.sample_rate) == (2, RATE, RATE)
        for start in range(0, RATE + 1000, 1500):  # overlapping, forward, past the end
            got = reader.read(max(0, start - 400), start + 1100)
            assert np.array_equal(got, whole[:, max(0, start - 400):start + 1100])
        with pytest.raises(ValueError, match="forward"):
            reader.read(0, 10)


def test_reader_refuses_a_bad_block_late_in_the_file(tmp_path):
    x = _sweep(1.0) * 0.5
    x[0, -10] = 3.0  # far outside [-1, 1], in the last block only
    path = tmp_path / "loud.wav"
    sf.write(str(path), x.T, RATE, subtype="FLOAT")
    with AudioReader(path) as reader:  # the header is fine
        reader.read(0, RATE // 2)
        with pytest.raises(InputError, match="far outside"):
            reader.read(RATE // 2, RATE)


def test_writer_appends_blocks_atomically(tmp_path):
    x = _sweep(1.0, channels=2)
    target = tmp_path / "out.flac"
    with open_audio_writer(target, 2, RATE) as writer:
        for start in range(0, x.shape[1], 3000):
            writer.write(x[:, start:start + 3000])
        assert not target.exists()  # only on success
    save_audio(tmp_path / "whole.flac", x, RATE)
    assert np.array_equal(load_audio(target).samples, load_audio(tmp_path / "whole.flac").samples)
    with pytest.raises(RuntimeError, match="boom"):
        with open_audio_writer(tmp_path / "failed.wav", 2, RATE) as writer:
            writer.write(x[:, :100])
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.flac", "whole.flac"]


@pytest.mark.parametrize("rates", [(44100, 24000), (48000, 24000), (8000, 24000),
                                   (22050, 8000), (24000, 24000)])
def test_windowed_resampler_equals_resampling_the_whole_signal(rates):
    from_rate, to_rate = rates
    g = np.random.default_rng(0)
    x = (0.1 * g.standard_normal((2, 20011))).astype(np.float32)
    whole = resample(x, from_rate, to_rate)
    resampler = WindowedResampler(AudioClip(x, from_rate), from_rate, to_rate)
    assert resampler.num_samples == whole.shape[1]
    cuts = sorted({0, whole.shape[1] + 57, *g.integers(1, whole.shape[1], 7).tolist()})
    got = np.concatenate([resampler.read(a, b) for a, b in zip(cuts, cuts[1:])], axis=1)
    assert got.shape[1] == whole.shape[1] + 57
    assert np.abs(got[:, :whole.shape[1]] - whole).max() < 1e-5
    assert not got[:, whole.shape[1]:].any()  # zeros past the end, as the model's padding
