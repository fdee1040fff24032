"""Tests for the Opus baseline (skipped where opus-tools is not installed)."""
from __future__ import annotations

import numpy as np
import pytest

from vqcodec.eval import opus as opus_baseline
from vqcodec.io.audio import as_audio_clip
from vqcodec.eval.metrics import si_snr
from vqcodec.eval.opus import (
    BaselineUnavailable, opus_available, opus_roundtrip,
)

needs_opus = pytest.mark.skipif(not opus_available(), reason="opus-tools (opusenc, opusdec) "
                                "not installed")


def _tones(rate: int, channels: int, seconds: float = 2.0) -> np.ndarray:
    # Odd length on purpose: the decoder must give back exactly this many samples.
    t = np.arange(int(seconds * rate) + 7) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * (440 + 110 * c) * t)
                     + 0.2 * np.sin(2 * np.pi * 1234 * t) for c in range(channels)]
                    ).astype(np.float32)


@needs_opus
@pytest.mark.parametrize(("rate", "channels", "kbps"),
                         [(48000, 1, 24), (16000, 1, 12), (44100, 2, 64), (22050, 2, 32)])
def test_rate_and_length(rate, channels, kbps):
    clip = as_audio_clip(_tones(rate, channels), rate)
    decoded, size = opus_roundtrip(clip, kbps)
    assert decoded.dtype == np.float32 and decoded.shape == clip.samples.shape
    real_kbps = 8 * size / clip.seconds / 1000
    # Hard CBR spends the requested rate; the Ogg/Opus headers add ~1-2 kbit/s on 2 seconds.
    assert kbps <= real_kbps <= kbps + 3
    # Aligned with the input (pre-skip removed, no delay left): shifting the output by one
    # sample either way only makes it worse.
    aligned = si_snr(clip.samples, decoded)
    assert aligned > 15
    assert aligned > si_snr(clip.samples[:, :-1], decoded[:, 1:]) + 3  # output late by 1
    assert aligned > si_snr(clip.samples[:, 1:], decoded[:, :-1]) + 3  # output early by 1


@needs_opus
def test_more_bits_less_distortion():
    clip = as_audio_clip(_tones(48000, 1) + 0.05 * np.random.default_rng(0).standard_normal(
        96007).astype(np.float32), 48000)
    low = si_snr(clip.samples, opus_roundtrip(clip, 8)[0])
    high = si_snr(clip.samples, opus_roundtrip(clip, 96)[0])
    assert high > low + 3


def test_bitrate_range_is_checked():
    clip = as_audio_clip(_tones(48000, 2, 0.1), 48000)
    if not opus_available():
        pytest.skip("opus-tools not installed")
    with pytest.raises(ValueError, match="outside 6..512"):
        opus_roundtrip(clip, 3)
    with pytest.raises(ValueError, match="outside"):
        opus_roundtrip(clip, 600)


def test_missing_tools_raise_baseline_unavailable(monkeypatch):
    monkeypatch.setattr(opus_baseline.shutil, "which", lambda name: None)
    assert not opus_available()
    with pytest.raises(BaselineUnavailable, match="opus-tools"):
        opus_roundtrip(as_audio_clip(np.zeros(800, np.float32), 8000), 24)
