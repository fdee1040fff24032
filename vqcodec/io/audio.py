"""Reading and writing user audio safely.

Everything the codec sees is an `AudioClip`: C-contiguous float32 samples, [channels,
num_samples], in [-1, 1], with an integer sample rate. Untrusted files are sized from their
header and refused before any sample is decoded when too long; every failure becomes an
`InputError` with a one-line message for the user.

Reading goes through soundfile (libsndfile), so any format it reads is accepted. Two of its
behaviours matter here: a WAV cut short is read without complaint up to where it ends (we compare
the header's data size with the file size to refuse it), and a truncated Ogg file (Vorbis/Opus)
is read up to its last complete page with no way to tell from the outside (accepted, shorter).
"""
from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import InputError
from .atomic import atomic_output
from .image import check_input_file
from .media import is_audio_path

__all__ = [
    "MAX_CHANNELS", "MAX_SAMPLE_RATE", "MAX_SECONDS", "MIN_SAMPLE_RATE",
    "SAVE_EXTENSIONS", "AudioClip", "AudioReader", "InputError", "WindowedResampler",
    "as_audio_clip", "check_audio_target", "is_audio_path", "load_audio", "open_audio_writer",
    "resample", "save_audio",
]

MAX_SECONDS = 4 * 60 * 60
"""Longest audio accepted (4 hours), checked on the file header before decoding samples.

Four hours of 48 kHz stereo is about 5.1 GiB as float32 (twice that at the peak of
`load_audio`, which transposes soundfile's [num_samples, channels] array); the CLI reads it in
windows (`AudioReader`), holding only the indices whole (as int64, 16 stages at 75 frames/s:
about 0.13 GiB per channel for four hours).
"""

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
"""Sample rates outside 1 kHz..384 kHz (the highest any common interface records) are refused."""

MAX_CHANNELS = 8
"""Up to 7.1 surround."""

# Output suffix -> (soundfile format, subtype). 16-bit PCM for the lossless containers, which we
# quantise ourselves (see `_to_int16`).
_SAVE_FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
}
if "VORBIS" in sf.available_subtypes("OGG"):
    _SAVE_FORMATS[".ogg"] = ("OGG", "VORBIS")

# libsndfile's Vorbis encoder crashes the process (segfault, not an error) above 200 kHz
# (libsndfile 1.2.2), so such rates are refused before it is called.
_VORBIS_MAX_RATE = 200_000

SAVE_EXTENSIONS = frozenset(_SAVE_FORMATS)
"""Suffixes `save_audio` writes (.ogg only where this libsndfile has Vorbis)."""


# Peak beyond which a decoded file is refused rather than clipped: lossy decoders overshoot
# full scale by a few dB on loud material, but a float file peaking above +6 dBFS was never
# normalised audio (for instance 16-bit values stored as floats).
_MAX_FILE_PEAK = 2.0


@dataclass(frozen=True, eq=False)
class AudioClip:
    """Audio as the codec sees it.

    Args:
        samples: C-contiguous float32 array [channels, num_samples], values in [-1, 1].
        sample_rate: samples per second and channel.

    Construction checks the dtype, shape, channel count and sample rate but not the values (a
    full pass over the samples); `as_audio_clip` and `load_audio` check those too.

    Raises:
        InputError: (on construction) wrong dtype or shape, no samples, or a sample rate or
            channel count outside the limits.
    """

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        s = self.samples
        if not isinstance(s, np.ndarray) or s.dtype != np.float32 or s.ndim != 2:
            raise InputError("AudioClip samples must be a float32 array [channels, num_samples]")
        _check_format(s.shape[0], s.shape[1], self.sample_rate, max_seconds=None)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def num_samples(self) -> int:
        """Samples per channel."""
        return int(self.samples.shape[1])

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [channels, n] of [start, stop) (clipped to the clip): the same interface
        as `AudioReader.read`, so a clip and a file are coded alike."""
        return self.samples[:, max(0, start):max(0, min(stop, self.num_samples))]


def _check_format(channels: int, num_samples: int, sample_rate: int,
                  max_seconds: float | None) -> None:
    """Refuse layouts and lengths the codec does not take (before any sample is read)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise InputError(f"sample rate must be an integer, got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise InputError(f"unsupported sample rate {sample_rate} Hz "
                         f"(accepted: {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz)")
    if channels < 1:
        raise InputError("audio has no channels")
    if channels > MAX_CHANNELS:
        raise InputError(f"too many channels: {channels} (limit {MAX_CHANNELS})")
    if num_samples <= 0:
        raise InputError("audio has no samples (zero length)")
    if max_seconds is not None and num_samples / sample_rate > max_seconds:
        raise InputError(f"audio too long: {num_samples / sample_rate:.0f} s "
                         f"(limit {max_seconds:.0f} s)")


def _as_float_samples(samples: np.ndarray) -> np.ndarray:
    """A 1-D or [channels, n] float or int16 array as float32 [channels, n] (int16 / 32768).

    Only the dtype and shape are checked here; channel count, length and values are not.
    """
    if not isinstance(samples, np.ndarray):
        raise InputError(f"expected a numpy array of samples, got {type(samples).__name__}")
    if samples.ndim not in (1, 2) or not (
            samples.dtype == np.int16 or np.issubdtype(samples.dtype, np.floating)):
        raise InputError("expected a float or int16 array of shape [num_samples] or "
                         f"[channels, num_samples], got {samples.dtype} {tuple(samples.shape)}")
    if samples.ndim == 1:
        samples = samples[None, :]
    if samples.shape[0] > MAX_CHANNELS and samples.shape[1] <= MAX_CHANNELS:
        # The most likely mistake: soundfile's own [num_samples, channels] layout.
        raise InputError(f"too many channels: {samples.shape[0]} (limit {MAX_CHANNELS}); "
                         f"the layout is [channels, num_samples]: transpose the array")
    if samples.dtype == np.int16:
        return np.ascontiguousarray(samples, dtype=np.float32) / np.float32(32768)
    return np.ascontiguousarray(samples, dtype=np.float32)


def _check_finite(samples: np.ndarray) -> None:
    if not np.isfinite(samples).all():
        raise InputError("audio contains NaN or infinite samples")


def as_audio_clip(samples: np.ndarray, sample_rate: int, *,
                  max_seconds: float = MAX_SECONDS) -> AudioClip:
    """Validate an in-memory signal and wrap it as an `AudioClip`.

    Args:
        samples: 1-D (mono) or [channels, num_samples] array; float (any precision, values in
            [-1, 1]) or int16 (scaled by 1/32768). A C-contiguous float32 array is used as is,
            not copied.
        sample_rate: samples per second, an integer in 1000..384000.
        max_seconds: longest duration accepted.

    Raises:
        InputError: another type, dtype or shape; no samples; too many channels; NaN/inf or
            float values outside [-1, 1] (clip them first: silently clipping would lose data);
            a sample rate or duration outside the limits.
    """
    data = _as_float_samples(samples)
    _check_format(data.shape[0], data.shape[1], sample_rate, max_seconds)
    _check_finite(data)
    peak = float(np.abs(data).max())
    if peak > 1.0:
        raise InputError(f"samples outside [-1, 1] (peak {peak:.3g}): scale or clip them first")
    return AudioClip(data, int(sample_rate))


def _wav_is_truncated(path: Path) -> bool:
    """True when a RIFF/WAVE file is shorter than its data chunk says.

    libsndfile reads such a file up to where it ends without an error, so a cut-off download
    would otherwise be coded as if it were complete. Streaming writers that leave the size at
    0 or 0xFFFFFFFF are given the benefit of the doubt.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False  # RF64, RIFX, W64: leave them to libsndfile
        offset = 12
        for _ in range(64):  # a real file has a handful of chunks before "data"
            f.seek(offset)
            chunk = f.read(8)
            if len(chunk) < 8:
                return False
            chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            offset += 8
            if chunk_id == b"data":
                return chunk_size not in (0, 0xFFFFFFFF) and offset + chunk_size > size
            offset += chunk_size + (chunk_size & 1)  # chunks are padded to even sizes
    return False


def _open_checked(path: str | Path, max_seconds: float) -> tuple[Path, object]:
    """(path, soundfile info) of an audio file that passed every check possible before
    decoding: exists, readable, a format soundfile reads, channels, rate and length within
    limits, a WAV not cut short."""
    path = check_input_file(path)
    try:
        with open(path, "rb"):
            pass  # libsndfile reports a denied read as a generic "System error"
    except PermissionError:
        raise InputError(f"permission denied: {path}") from None

    try:
        info = sf.info(str(path))
    except RuntimeError:  # soundfile.LibsndfileError is one
        raise InputError(f"not audio soundfile can read, or corrupted: {path}") from None
    _check_format(info.channels, info.frames, info.samplerate, max_seconds)  # before decoding
    if info.format in ("WAV", "WAVEX") and _wav_is_truncated(path):
        raise InputError(f"truncated audio file: {path}")
    return path, info


class AudioReader:
    """An audio file read forward in windows, so that memory does not grow with its length.

    Opening runs every check `load_audio` runs before decoding; each block read is checked as
    it arrives (NaN/inf, peak above 2.0 refused, above 1.0 clipped), and a file that ends
    before the length its header gives is refused. Use as a context manager.

    Args:
        path: the audio file.
        max_seconds: longest duration accepted; checked on the header.

    Raises:
        InputError: as `load_audio`; from `read` when a block is bad or missing.
    """

    def __init__(self, path: str | Path, *, max_seconds: float = MAX_SECONDS) -> None:
        self.path, info = _open_checked(path, max_seconds)
        self.channels, self.num_samples = int(info.channels), int(info.frames)
        self.sample_rate = int(info.samplerate)
        try:
            self._file = sf.SoundFile(str(self.path))
        except RuntimeError:
            raise InputError(f"not audio soundfile can read, or corrupted: {self.path}") from None
        self._buffer = np.zeros((self.channels, 0), dtype=np.float32)
        self._start = 0  # file position of the buffer's first sample

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [channels, n] (float32, in [-1, 1]) of [start, stop), clipped to the file.

        Reads go forward: `start` may not be before the previous read's `start` (the samples
        before it are let go)."""
        start, stop = max(0, start), max(0, min(stop, self.num_samples))
        if start < self._start:
            raise ValueError("AudioReader reads forward only")
        end = self._start + self._buffer.shape[1]
        keep = min(start, end)  # the buffer's new first sample
        self._buffer = self._buffer[:, keep - self._start:]
        if stop > end:
            self._buffer = np.concatenate([self._buffer, self._decode(stop - end)], axis=1)
        self._start = keep
        return self._buffer[:, start - keep:stop - keep]

    def _decode(self, frames: int) -> np.ndarray:
        try:
            data = self._file.read(frames, dtype="float32", always_2d=True)
        except RuntimeError:
            raise InputError(f"truncated or corrupted audio file: {self.path}") from None
        if data.shape[0] < frames:
            # A decoder that loses sync part-way stops early without an error (seen with Ogg).
            got = self._start + self._buffer.shape[1] + data.shape[0]  # samples decoded
            if not got:
                raise InputError(f"audio has no samples (zero length): {self.path}")
            raise InputError(f"truncated or corrupted audio file: {self.path} "
                             f"({got} of {self.num_samples} samples decoded)")
        block = np.ascontiguousarray(data.T)
        _check_finite(block)
        peak = float(np.abs(block).max()) if block.size else 0.0
        if peak > _MAX_FILE_PEAK:
            raise InputError(f"samples far outside [-1, 1] (peak {peak:.3g}): not normalised "
                             f"audio: {self.path}")
        if peak > 1.0:
            np.clip(block, -1.0, 1.0, out=block)
        return block

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "AudioReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_audio(path: str | Path, *, max_seconds: float = MAX_SECONDS) -> AudioClip:
    """Read a whole audio file (anything soundfile reads: WAV, FLAC, Ogg Vorbis/Opus, MP3, ...).

    Samples become float32 in [-1, 1]: integer PCM is scaled by 1/32768 (16-bit) and so on;
    float and lossy files may overshoot full scale a little and are clipped to [-1, 1] (files
    peaking above 2.0 are refused as not normalised). `AudioReader` reads in windows.

    Args:
        path: the audio file.
        max_seconds: longest duration accepted; checked on the header, before decoding.

    Raises:
        InputError: missing, empty, unreadable, truncated or corrupted files; no samples; a
            sample rate outside 1000..384000 Hz; more than 8 channels; too long; NaN/inf samples.
    """
    with AudioReader(path, max_seconds=max_seconds) as reader:
        samples = np.ascontiguousarray(reader.read(0, reader.num_samples))
        return AudioClip(samples, reader.sample_rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Change the sample rate of a signal (band-limited sinc interpolation, torchaudio).

    The new length is ceil(num_samples * to_rate / from_rate). The filter's size grows with
    from_rate / gcd(from_rate, to_rate), so rates with a small common divisor (44100 -> 44101)
    are slow.

    Args:
        samples: float array, [num_samples] or [channels, num_samples].
        from_rate: its sample rate.
        to_rate: the rate wanted.

    Returns:
        float32 array of the same number of dimensions (the input, as float32, when the rates
        are equal).
    """
    samples = np.asarray(samples, dtype=np.float32)
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate:
        return samples
    # Imported here so that reading and writing audio (and the CLI's checks) need no torch.
    import torch
    import torchaudio

    out = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(samples)),
                                         int(from_rate), int(to_rate))
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


# torchaudio's resampling kernel (its defaults): each output sample depends on the input
# within this many zero crossings of the sinc, at a cutoff of ROLLOFF times the lower Nyquist.
_LOWPASS_FILTER_WIDTH, _ROLLOFF = 6, 0.99


class WindowedResampler:
    """`resample` of a long signal, window by window, without holding it.

    Reads from `source` (anything with `num_samples` and `read(start, stop)` -> [channels, n],
    forward: an `AudioClip`, an `AudioReader`, a decoder) only the input a window needs: its
    blocks of from_rate/g input samples (g = gcd of the rates; each block makes to_rate/g output
    samples, so a window starting on a block is in phase with the whole signal's resampling)
    and a margin beyond the kernel's reach. Away from rounding it equals resampling the whole
    signal: same length, ceil(num_samples * to_rate / from_rate), and the zeros beyond the ends.

    Args:
        source: the signal.
        from_rate, to_rate: its rate and the rate wanted.
    """

    def __init__(self, source, from_rate: int, to_rate: int) -> None:
        self.source, self.from_rate, self.to_rate = source, int(from_rate), int(to_rate)
        g = math.gcd(self.from_rate, self.to_rate)
        self._block_in, self._block_out = self.from_rate // g, self.to_rate // g
        width = math.ceil(_LOWPASS_FILTER_WIDTH * self._block_in
                          / (min(self._block_in, self._block_out) * _ROLLOFF))
        self._margin_blocks = 2 + math.ceil(width / self._block_in)  # kernel reach + 1 block
        self.num_samples = -(-source.num_samples * self._block_out // self._block_in)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Output samples [channels, stop - start] of [start, stop) (zeros past the end)."""
        stop = max(stop, start)
        if self._block_in == self._block_out:
            x = self.source.read(start, stop)
        else:
            first = max(0, start // self._block_out - self._margin_blocks)
            last = -(-stop // self._block_out) + self._margin_blocks
            lo = first * self._block_in
            hi = min(self.source.num_samples, last * self._block_in)
            y = resample(self.source.read(lo, hi), self.from_rate, self.to_rate)
            offset = start - first * self._block_out
            x = y[:, max(0, offset):max(0, stop - first * self._block_out)]
        if x.shape[1] < stop - start:
            x = np.pad(x, ((0, 0), (0, stop - start - x.shape[1])))
        return x


def _to_int16(samples: np.ndarray) -> np.ndarray:
    # Rounded to the nearest step, the inverse of reading (int16 / 32768), so load -> save ->
    # load is bit-exact. libsndfile's own float conversion truncates (1.2.2: errors up to a
    # whole step, biased) or, in older versions, scales by 32767 (a drift near full scale).
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def check_audio_target(path: str | Path) -> tuple[str, str]:
    """The (soundfile format, subtype) `save_audio` writes `path` in, or an InputError.

    Args:
        path: the destination.

    Raises:
        InputError: a suffix not in `SAVE_EXTENSIONS`, or a missing destination folder.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    supported = ", ".join(sorted(_SAVE_FORMATS))
    if suffix not in _SAVE_FORMATS:
        what = f"'{path.suffix}'" if suffix else "without a file suffix"
        raise InputError(f"cannot write audio {what}: {path}; use one of {supported}")
    if not path.parent.is_dir():
        raise InputError(f"no such folder: {path.parent}")
    return _SAVE_FORMATS[suffix]


class _AudioWriter:
    """Appends blocks of samples to an open soundfile (see `open_audio_writer`)."""

    def __init__(self, handle, channels: int, pcm16: bool, failure: str) -> None:
        self._handle, self.channels, self._pcm16 = handle, channels, pcm16
        self._failure = failure

    def write(self, samples: np.ndarray) -> None:
        """Append samples [channels, n] (float, clipped to [-1, 1])."""
        if samples.ndim != 2 or samples.shape[0] != self.channels:
            raise ValueError(f"expected [{self.channels}, n] samples, got {samples.shape}")
        try:
            self._handle.write((_to_int16(samples) if self._pcm16
                                else np.clip(samples, -1.0, 1.0)).T)
        except RuntimeError as e:  # libsndfile's errors (soundfile.LibsndfileError)
            raise InputError(_write_failure(self._failure, e)) from None


def _write_failure(what: str, error: Exception) -> str:
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"cannot write {what}: {message}"


@contextmanager
def open_audio_writer(path: str | Path, channels: int, sample_rate: int) -> Iterator[_AudioWriter]:
    """Write audio block by block, atomically, in the format named by the file suffix (as
    `save_audio`): the file appears complete on success, not at all on an error.

    Raises:
        InputError: unknown suffix, missing destination folder, a rate or channel count out of
            range, or a format that cannot hold this audio (Vorbis above 200 kHz).
    """
    path = Path(path)
    _check_format(channels, 1, sample_rate, max_seconds=None)
    file_format, subtype = check_audio_target(path)
    if subtype == "VORBIS" and sample_rate > _VORBIS_MAX_RATE:
        raise InputError(f"Ogg Vorbis cannot hold {sample_rate} Hz audio (limit "
                         f"{_VORBIS_MAX_RATE} Hz); use .flac or .wav")
    what = f"{file_format} {subtype} audio at {sample_rate} Hz, {channels} channels"
    with atomic_output(path) as tmp:
        try:
            handle = sf.SoundFile(str(tmp), "w", int(sample_rate), int(channels),
                                  format=file_format, subtype=subtype)
        except RuntimeError as e:
            raise InputError(_write_failure(what, e)) from None
        with handle:
            yield _AudioWriter(handle, channels, subtype == "PCM_16", what)


def save_audio(path: str | Path, clip_or_samples: AudioClip | np.ndarray,
               sample_rate: int | None = None) -> None:
    """Write audio atomically, in the format named by the file suffix.

    Samples are clipped to [-1, 1]. `.wav` and `.flac` are 16-bit PCM (float * 32768, rounded),
    `.ogg` is Ogg Vorbis at libsndfile's default quality. The file is written to a temporary
    file beside `path` and renamed over it, so a failure leaves no partial output.

    Args:
        path: destination; suffix one of `SAVE_EXTENSIONS`.
        clip_or_samples: an `AudioClip`, or a 1-D / [channels, num_samples] float or int16
            array (int16 is scaled by 1/32768).
        sample_rate: required with an array; with a clip, None or the clip's rate.

    Raises:
        InputError: bad samples or sample rate, unknown suffix, missing destination folder or
            a format that cannot hold this audio (Vorbis above 200 kHz).
    """
    if isinstance(clip_or_samples, AudioClip):
        if sample_rate is not None and sample_rate != clip_or_samples.sample_rate:
            raise InputError(f"sample rate {sample_rate} differs from the clip's "
                             f"{clip_or_samples.sample_rate}")
        samples, rate = clip_or_samples.samples, clip_or_samples.sample_rate
    else:
        if sample_rate is None:
            raise InputError("a sample rate is needed to save an array of samples")
        samples, rate = _as_float_samples(clip_or_samples), sample_rate
        _check_format(samples.shape[0], samples.shape[1], rate, max_seconds=None)
        _check_finite(samples)
    with open_audio_writer(path, samples.shape[0], rate) as writer:
        writer.write(samples)
