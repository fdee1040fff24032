"""Opus, the classical baseline for audio rate-distortion curves, through opus-tools.

The clip is written as a 16-bit WAV, encoded with `opusenc --hard-cbr` (constant bitrate, so
the requested rate is the rate spent), and decoded with `opusdec`. opusdec removes the
encoder's pre-skip and stops at the end granule, so at the rates Opus runs at natively the
decoded length equals the input length exactly (checked with opus-tools 0.2 / libopus 1.3.1);
other rates are decoded at 48 kHz, resampled back and trimmed or zero-padded to the input
length.

The size is the whole `.opus` file (Ogg pages, the OpusHead and OpusTags headers included), as a
user would store it; `--padding 0` drops the 512 bytes opusenc otherwise reserves for later tag
edits, which are not audio. Even so the headers and Ogg framing add about 1-2 kbit/s on a
2-second clip, less on longer ones.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from ..io.audio import AudioClip, resample, save_audio

__all__ = ["MAX_KBPS_PER_CHANNEL", "MIN_KBPS", "OPUS_RATES", "BaselineError",
           "BaselineUnavailable", "opus_available", "opus_roundtrip"]

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
"""Sample rates Opus codes natively (and opusdec --rate accepts)."""

MIN_KBPS = 6.0
MAX_KBPS_PER_CHANNEL = 256.0
"""opusenc's documented bitrate range; outside it opusenc silently clamps, which would put the
point on a curve at a rate that was not asked for."""


class BaselineError(RuntimeError):
    """The baseline codec failed on an input (one-line message with the tool's complaint)."""


class BaselineUnavailable(BaselineError):
    """The baseline's tools are not installed."""


def opus_available() -> bool:
    """Whether `opusenc` and `opusdec` (opus-tools) are on the PATH."""
    return shutil.which("opusenc") is not None and shutil.which("opusdec") is not None


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        complaint = (result.stderr or result.stdout).strip().splitlines()
        detail = complaint[-1] if complaint else f"exit status {result.returncode}"
        raise BaselineError(f"{command[0]} failed: {detail}")


def opus_roundtrip(clip: AudioClip, bitrate_kbps: float) -> tuple[np.ndarray, int]:
    """Encode a clip with Opus at a constant bitrate and decode it again.

    The real rate is 8 * size / clip.seconds / 1000 kbit/s. The decoded samples are clipped to
    [-1, 1], as they would be in a 16-bit file.

    Args:
        clip: the audio (any rate the codec accepts; up to 8 channels).
        bitrate_kbps: target bitrate for all channels together, kbit/s, in
            6..256 * channels.

    Returns:
        (decoded float32 samples [channels, clip.num_samples] at clip.sample_rate,
        size of the .opus file in bytes).

    Raises:
        BaselineUnavailable: opusenc or opusdec is not installed.
        BaselineError: either tool failed.
        ValueError: a bitrate outside opusenc's range.
    """
    if not opus_available():
        raise BaselineUnavailable("the Opus baseline needs opusenc and opusdec: install "
                                  "opus-tools (apt-get install opus-tools)")
    top = MAX_KBPS_PER_CHANNEL * clip.channels
    if not MIN_KBPS <= bitrate_kbps <= top:
        raise ValueError(f"Opus bitrate {bitrate_kbps} kbit/s is outside {MIN_KBPS:g}..{top:g} "
                         f"kbit/s for {clip.channels} channel(s)")
    decode_rate = clip.sample_rate if clip.sample_rate in OPUS_RATES else 48000
    with tempfile.TemporaryDirectory(prefix="vqcodec-opus-") as folder:
        source, coded, decoded = (Path(folder) / n for n in ("in.wav", "out.opus", "out.wav"))
        save_audio(source, clip)
        _run(["opusenc", "--hard-cbr", "--bitrate", f"{bitrate_kbps:g}", "--padding", "0",
              "--quiet", str(source), str(coded)])
        size = coded.stat().st_size
        # --float: no 16-bit quantisation and no dither noise in what we measure.
        _run(["opusdec", "--rate", str(decode_rate), "--float", "--quiet", str(coded),
              str(decoded)])
        data, rate = sf.read(str(decoded), dtype="float32", always_2d=True)
    samples = resample(np.ascontiguousarray(data.T), rate, clip.sample_rate)
    n = clip.num_samples
    if samples.shape[1] >= n:
        samples = samples[:, :n]
    else:
        samples = np.pad(samples, ((0, 0), (0, n - samples.shape[1])))
    return np.ascontiguousarray(np.clip(samples, -1.0, 1.0), dtype=np.float32), size
