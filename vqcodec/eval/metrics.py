"""Distortion measures for rate-distortion curves: images and audio.

Images (CompressAI's `eval_model` conventions, so our numbers sit on the same axes as its
published Kodak results):

* PSNR is computed per image on 8-bit-rounded RGB (max 255); MS-SSIM likewise, with
  `pytorch_msssim.ms_ssim(..., data_range=255)` on 0..255 floats. Grayscale images are compared
  in RGB (the gray channel replicated three times, as `pipelines.image.image_to_tensor` does).
* MS-SSIM needs at least `MS_SSIM_MIN_SIDE` (161) pixels on the short side (five scales of an
  11-tap window). Smaller images get NaN, left out of a rate point's mean.
* PSNR of an exact reconstruction would be infinite; the MSE is floored at 1e-10 (148 dB).

Audio: float arrays [channels, num_samples] (1-D is taken as mono), the reference first. Codecs
may hand back a few samples more or fewer than they were given, so signals of different lengths
are compared over the shorter length (the tail of the longer one is ignored); the channel
counts must match.

* `si_snr`: scale-invariant signal-to-noise ratio in dB (Le Roux et al., "SDR - half-baked or
  well done?", ICASSP 2019), per channel then averaged, capped at +-`MAX_SI_SNR_DB`.
* `mel_distance`: mean absolute difference of log10 mel spectrograms, a rough perceptual
  distance (lower is better).
* `audio_mse`: mean squared error of the samples.

`image_distortion` and `clip_distortion` give the values an `rd.RDRecord` holds, by their
output keys.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torchaudio

from ..errors import RDError
from ..io.audio import AudioClip
from ..pipelines.image import image_to_tensor

__all__ = ["MAX_SI_SNR_DB", "MEL_FLOOR", "MEL_HOP", "MEL_N_FFT", "MEL_N_MELS", "MIN_MSE",
           "MS_SSIM_MIN_SIDE", "audio_mse", "check_dependencies", "clip_distortion",
           "image_distortion", "image_levels", "mel_distance", "msssim_db", "psnr", "si_snr"]

MS_SSIM_MIN_SIDE = 161
"""Smallest short side (pixels) on which `pytorch_msssim.ms_ssim` is defined (> 10 * 2**4)."""

MIN_MSE = 1e-10

MAX_SI_SNR_DB = 100.0
"""SI-SNR of an exact (up to scale) reconstruction would be infinite; it is reported as 100 dB,
far above anything a lossy codec reaches (16-bit quantisation alone is about 98 dB at full
scale). A silent reference with a non-silent estimate gives -100 dB."""

MEL_N_FFT = 1024
MEL_HOP = 256
MEL_N_MELS = 64
MEL_FLOOR = 1e-5
"""Mel power below this is clamped before the log10 (-50 dB), so silence compares as equal."""


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

def _ms_ssim():
    try:
        from pytorch_msssim import ms_ssim
    except ImportError:
        raise RDError("MS-SSIM needs the pytorch-msssim package: "
                      "pip install 'vqcodec[rd]'") from None
    return ms_ssim


def check_dependencies() -> None:
    """Raise `RDError` early when a package the image measurements need is missing."""
    _ms_ssim()


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of [B, 3, H, W] tensors in [0, 1], both rounded to 8 bits first;
    in the tensors' own dtype and device, as training validates (no MS-SSIM dependency)."""
    mse = ((x * 255).round() - (y * 255).round()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(255.0 ** 2 / mse.clamp_min(MIN_MSE))


def image_levels(array: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 HxW / HxWx3 -> float [3, H, W] of 8-bit levels (gray replicated), through the
    pipeline's own input step."""
    return (image_to_tensor(array, 1, torch.device(device))[0] * 255).round()


def image_distortion(original: torch.Tensor, decoded: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image MSE, PSNR (dB) and MS-SSIM of 8-bit RGB images.

    Args:
        original: [B, 3, H, W] floats in 0..255 (integers).
        decoded: [B, 3, H, W] floats in 0..255; rounded and clamped to 8 bits here.

    Returns:
        {"psnr-rgb", "ms-ssim-rgb", "mse"}: float64 arrays [B]; MS-SSIM is NaN when
        min(H, W) < 161.
    """
    decoded = decoded.clamp(0, 255).round()
    original = original.float()
    mse = (decoded - original).double().pow(2).flatten(1).mean(1).cpu().numpy()
    psnr = 10 * np.log10(255.0 ** 2 / np.maximum(mse, MIN_MSE))
    if min(original.shape[-2:]) >= MS_SSIM_MIN_SIDE:
        ms = _ms_ssim()(original, decoded, data_range=255, size_average=False)
        msssim = ms.double().cpu().numpy().reshape(-1)
    else:
        msssim = np.full(len(mse), np.nan)
    return {"psnr-rgb": psnr, "ms-ssim-rgb": msssim, "mse": mse}


def msssim_db(value: float) -> float:
    """MS-SSIM in dB, -10 log10(1 - MS-SSIM), as CompressAI's plots show it."""
    if value is None or not math.isfinite(value):
        return math.nan
    return -10 * math.log10(max(1 - value, 1e-10))


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------

def clip_distortion(original: AudioClip, decoded: np.ndarray) -> dict[str, float]:
    """SI-SNR (dB), mel distance and MSE of a decoded clip against the original.

    Args:
        original: the clip as loaded.
        decoded: float [channels, num_samples] at the original's sample rate.
    """
    ref = original.samples
    return {"si-snr": si_snr(ref, decoded),
            "mel-distance": mel_distance(ref, decoded, original.sample_rate),
            "mse": audio_mse(ref, decoded)}


def _pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as float64 [channels, n], trimmed to the shorter length."""
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    ref = ref[None] if ref.ndim == 1 else ref
    est = est[None] if est.ndim == 1 else est
    if ref.ndim != 2 or est.ndim != 2 or ref.shape[0] != est.shape[0]:
        raise ValueError(f"expected two [channels, num_samples] arrays with the same number of "
                         f"channels, got {tuple(ref.shape)} and {tuple(est.shape)}")
    n = min(ref.shape[1], est.shape[1])
    if n == 0:
        raise ValueError("cannot compare empty signals")
    return ref[:, :n], est[:, :n]


def si_snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SNR in dB (higher is better).

    Per channel, both signals are made zero-mean, the estimate is projected onto the reference
    (target = <est, ref> / <ref, ref> * ref) and SI-SNR = 10 log10(|target|^2 / |est - target|^2).
    The result does not change when the estimate is scaled by a non-zero factor. Channels are
    averaged in dB.

    Args:
        reference: the original, [channels, n] or [n].
        estimate: the reconstruction, same channels; compared over the shorter length.

    Returns:
        dB in [-MAX_SI_SNR_DB, MAX_SI_SNR_DB]: MAX when the estimate is the reference up to
        a positive or negative scale (or both are silent), -MAX when exactly one of them is
        silent or the estimate is orthogonal to the reference.
    """
    ref, est = _pair(reference, estimate)
    ref = ref - ref.mean(axis=1, keepdims=True)
    est = est - est.mean(axis=1, keepdims=True)
    values = []
    for r, e in zip(ref, est):
        ref_energy = float(r @ r)
        if ref_energy == 0.0:
            values.append(MAX_SI_SNR_DB if not e.any() else -MAX_SI_SNR_DB)
            continue
        target = (float(e @ r) / ref_energy) * r
        noise = e - target
        target_energy, noise_energy = float(target @ target), float(noise @ noise)
        if target_energy == 0.0:  # nothing of the reference in the estimate (e.g. silence)
            values.append(-MAX_SI_SNR_DB)
        elif noise_energy == 0.0:
            values.append(MAX_SI_SNR_DB)
        else:
            db = 10.0 * np.log10(target_energy / noise_energy)
            values.append(float(np.clip(db, -MAX_SI_SNR_DB, MAX_SI_SNR_DB)))
    return float(np.mean(values))


@functools.lru_cache(maxsize=8)
def _mel_transform(sample_rate: int) -> torchaudio.transforms.MelSpectrogram:
    # Cached: building the filter bank costs more than transforming a short clip.
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=MEL_N_FFT, hop_length=MEL_HOP, n_mels=MEL_N_MELS)


def _log_mel(samples: np.ndarray, sample_rate: int) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    if x.shape[-1] < MEL_N_FFT:
        # The centred STFT reflects n_fft / 2 samples at each end, so very short clips would be
        # refused; zero-padding to one window keeps them measurable.
        x = torch.nn.functional.pad(x, (0, MEL_N_FFT - x.shape[-1]))
    with torch.no_grad():
        mel = _mel_transform(int(sample_rate))(x)
    return torch.log10(torch.clamp(mel, min=MEL_FLOOR))


def mel_distance(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Mean L1 distance between log10 mel spectrograms (lower is better; 0 for identical).

    torchaudio's `MelSpectrogram` at the signals' own rate: power spectrogram of 1024-sample
    Hann windows (centred, reflect-padded), hop 256, 64 HTK mel bands from 0 Hz to Nyquist,
    no filter normalisation; then log10(max(mel, 1e-5)). The distance is the mean of
    |log_mel(reference) - log_mel(estimate)| over channels, bands and frames, so 1.0 means the
    band energies are off by a factor of 10 (10 dB) on average. Clips shorter than 1024
    samples are zero-padded to 1024. Because the windows are fixed in samples, values at
    different sample rates are not directly comparable.

    Args:
        reference: the original, [channels, n] or [n].
        estimate: the reconstruction, same channels; compared over the shorter length.
        sample_rate: their sample rate in Hz.
    """
    ref, est = _pair(reference, estimate)
    return float((_log_mel(ref, sample_rate) - _log_mel(est, sample_rate)).abs().mean())


def audio_mse(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Mean squared error over all channels and samples (compared over the shorter length).

    Args:
        reference: the original, [channels, n] or [n].
        estimate: the reconstruction, same channels.
    """
    ref, est = _pair(reference, estimate)
    return float(np.mean((ref - est) ** 2))
