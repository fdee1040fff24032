"""Tests for the audio distortion measures: known values, invariances, edge cases."""
from __future__ import annotations

import numpy as np
import pytest

from vqcodec.eval.metrics import MAX_SI_SNR_DB, audio_mse, mel_distance, si_snr

RATE = 16000


def _signal(n: int = RATE, seed: int = 0) -> np.ndarray:
    """A mono [1, n] test signal: two tones and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    x = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1900 * t + 1.0)
    return (x + 0.05 * rng.standard_normal(n)).astype(np.float32)[None]


def _noise_at_snr(reference: np.ndarray, snr_db: float, seed: int = 1,
                  orthogonal: bool = True) -> np.ndarray:
    """Noise whose energy is |ref - mean|^2 / 10^(snr/10), optionally orthogonal to ref."""
    rng = np.random.default_rng(seed)
    r = reference[0].astype(np.float64) - reference.mean()
    noise = rng.standard_normal(r.size)
    noise -= noise.mean()
    if orthogonal:
        noise -= (noise @ r) / (r @ r) * r
    noise *= np.sqrt((r @ r) / 10 ** (snr_db / 10) / (noise @ noise))
    return noise[None]


# --- SI-SNR ---------------------------------------------------------------------------------------


def test_si_snr_identical_is_capped():
    x = _signal()
    assert si_snr(x, x) == MAX_SI_SNR_DB == 100.0
    assert si_snr(x, 0.3 * x) == MAX_SI_SNR_DB  # exact up to scale


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0, 35.0])
def test_si_snr_known_value(snr_db):
    x = _signal()
    estimate = x + _noise_at_snr(x, snr_db)
    assert si_snr(x, estimate) == pytest.approx(snr_db, abs=1e-6)


def test_si_snr_known_value_with_plain_random_noise():
    # Without orthogonalising, the projection absorbs a tiny part of the noise: within 0.1 dB.
    x = _signal(4 * RATE)
    estimate = x + _noise_at_snr(x, 15.0, orthogonal=False)
    assert si_snr(x, estimate) == pytest.approx(15.0, abs=0.1)


def test_si_snr_scale_and_offset_invariant():
    x = _signal()
    y = x + _noise_at_snr(x, 12.0)
    base = si_snr(x, y)
    for scale in (0.01, 0.5, 3.0, -2.0):
        assert si_snr(x, scale * y) == pytest.approx(base, abs=1e-4)
    assert si_snr(x, y + 0.3) == pytest.approx(base, abs=1e-4)  # zero-mean first


def test_si_snr_averages_channels_in_db():
    x = np.concatenate([_signal(seed=0), _signal(seed=5)])
    y = np.concatenate([x[:1] + _noise_at_snr(x[:1], 10.0), x[1:] + _noise_at_snr(x[1:], 30.0)])
    assert si_snr(x, y) == pytest.approx(20.0, abs=1e-6)


def test_si_snr_silence():
    silent = np.zeros((1, 100), np.float32)
    assert si_snr(silent, silent) == MAX_SI_SNR_DB
    assert si_snr(silent, _signal(100)) == -MAX_SI_SNR_DB
    assert si_snr(_signal(100), silent) == -MAX_SI_SNR_DB


def test_different_lengths_are_trimmed_to_the_shorter():
    x = _signal()
    y = x + _noise_at_snr(x, 10.0)
    padded = np.concatenate([y, np.ones((1, 500), np.float32)], axis=1)  # junk tail
    assert si_snr(x, padded) == pytest.approx(si_snr(x, y))
    assert si_snr(x[:, :-500], y) == pytest.approx(si_snr(x[:, :-500], y[:, :-500]))
    assert audio_mse(x, padded) == pytest.approx(audio_mse(x, y))
    assert mel_distance(x, padded, RATE) == pytest.approx(mel_distance(x, y, RATE))


def test_channel_mismatch_and_empty_are_errors():
    with pytest.raises(ValueError, match="same number of channels"):
        si_snr(np.zeros((2, 10)), np.zeros((1, 10)))
    with pytest.raises(ValueError, match="empty"):
        audio_mse(np.zeros((1, 0)), np.zeros((1, 10)))


# --- mel distance and MSE ------------------------------------------------------------------------


def test_mel_distance_zero_for_identical_and_grows_with_noise():
    x = _signal()
    assert mel_distance(x, x, RATE) == 0.0
    small = mel_distance(x, x + _noise_at_snr(x, 30.0), RATE)
    large = mel_distance(x, x + _noise_at_snr(x, 5.0), RATE)
    assert 0 < small < large


def test_mel_distance_factor_of_ten_in_power_is_one():
    # Scaling by sqrt(10) multiplies every band's power by 10: log10 difference 1 everywhere
    # (the signal is loud enough that nothing sits on the 1e-5 floor).
    x = _signal()
    assert mel_distance(x, np.sqrt(10) * x, RATE) == pytest.approx(1.0, abs=1e-4)


def test_mel_distance_mono_1d_stereo_and_short_clips():
    x = _signal(2000)
    y = x + _noise_at_snr(x, 10.0)
    assert mel_distance(x[0], y[0], RATE) == pytest.approx(mel_distance(x, y, RATE))
    stereo = mel_distance(np.concatenate([x, x]), np.concatenate([y, x]), RATE)
    assert stereo == pytest.approx(mel_distance(x, y, RATE) / 2, rel=1e-5)
    assert mel_distance(x[:, :100], y[:, :100], 8000) > 0  # shorter than one window


def test_audio_mse_known_value():
    x = _signal()
    assert audio_mse(x, x) == 0.0
    assert audio_mse(x, x + 0.1) == pytest.approx(0.01)
    assert audio_mse(np.zeros((2, 4)), np.array([[1, 1, 1, 1], [0, 0, 0, 0]])) == 0.5
