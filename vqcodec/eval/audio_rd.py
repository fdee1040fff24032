"""Audio rate-distortion measurement: our audio model at every rate setting, and Opus.

The audio counterpart of `rd.py`; the curves are `rd.RDCurve`s in the same CompressAI-like JSON
layout, with kilobits per second instead of bits per pixel:

* "kbps" of a curve is the mean over clips of bits / clip seconds / 1000 (as "bpp" is the mean
  over images), so a short clip weighs as much as a long one.
* Distortion is measured against the original clip at its own sample rate, channels and length,
  on exactly what `decompress_audio` hands back (decoded at the model's rate, resampled back,
  trimmed or padded, clipped to [-1, 1]): SI-SNR (dB), mel distance and MSE from
  `audio_metrics`, per clip and then averaged.

Our model is measured without the entropy coder: one encoder pass per clip (all stages, window
by window as `compress_audio` does), then per rate point one batched prior pass that scores
the chunks `FrameByFrameCodec` codes (chunks of `prior.context` frames per channel, each
starting fresh) and one decoder pass. The prior is run once per rate point rather than once
for all stages because it is told how many stages are coded (its rate embedding), so the
first n stages' NLL is not a partial sum of the all-stage pass. `actual=True` adds the real
`compress_audio` / `decompress_audio` round trip for every clip and rate point.

No click and no matplotlib in here (plots: `rd_plot.py`).
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..zoo.registry import LoadedModel
from ..pipelines.audio import (compress_audio, decode_channel, decompress_audio, encode_channel,
                          model_input, model_output)
from ..io.audio import AudioClip, InputError, load_audio
from ..io.media import folder_kind, list_media
from .metrics import audio_mse, mel_distance, si_snr
from .opus import BaselineError, opus_available, opus_roundtrip
from .rd import (BASELINE_NAMES, ProgressCallback, RDCurve, RDError, _mean,
                 _sync)

__all__ = [
    "AUDIO_BASELINE_NAMES", "AUDIO_RD_COLUMNS", "DEFAULT_OPUS_BITRATES", "PER_CLIP_COLUMNS",
    "AudioModelEvaluation", "ClipResult", "NamedClip", "audio_model_curve", "chunked_nll_bits",
    "clip_distortion", "evaluate_audio_model", "evaluate_opus", "find_clips", "folder_kind",
    "opus_curve", "prior_saving", "resolve_audio_baselines", "summarize_clips",
]

AUDIO_BASELINE_NAMES = ("opus",)
DEFAULT_OPUS_BITRATES = (6, 8, 10, 12, 16, 24)
"""Opus bitrates (kbit/s) measured by default: from its floor up to where it is transparent
for most speech."""

PRIOR_BATCH_LOGITS = 2 ** 25
"""Most logits (chunks x stages x frames x codes) one batched prior pass may produce: about
128 MiB of float32, which bounds memory on long clips (5 chunks of a 16-stage, 1024-code,
375-frame model per pass)."""

AUDIO_RD_COLUMNS = ["codec", "kind", "bitrate", "stages", "kbps", "nll-kbps", "payload-kbps",
                    "file-kbps", "raw-kbps", "gap-percent", "si-snr", "mel-distance", "mse",
                    "encoding_time", "decoding_time", "roundtrip_time"]
PER_CLIP_COLUMNS = ["codec", "bitrate", "clip", "channels", "sample_rate", "seconds", "stages",
                    "kbps", "nll-kbps", "payload-kbps", "file-kbps", "raw-kbps", "gap-percent",
                    "si-snr", "mel-distance", "mse", "encoding_time", "decoding_time",
                    "roundtrip_time"]


# --------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------

@dataclass
class NamedClip:
    """A clip to measure on.

    Args:
        name: its file name (identifies it in per-clip results).
        clip: the audio as loaded.
    """

    name: str
    clip: AudioClip

    @property
    def seconds(self) -> float:
        return self.clip.seconds


def find_clips(folder: str | Path) -> tuple[list[NamedClip], list[tuple[str, str]]]:
    """Load every audio file of a folder (not recursive), sorted by name.

    Files whose suffix is not in `AUDIO_EXTENSIONS` and hidden files are ignored; audio files
    that cannot be read are skipped and returned with the reason.

    Args:
        folder: a folder of audio files (a single audio file is accepted too).

    Returns:
        (clips, skipped) where skipped lists (file name, one-line reason).

    Raises:
        RDError: the folder does not exist or holds no audio files at all.
    """
    folder = Path(folder)
    if folder.is_file():
        candidates = [folder]
    elif folder.is_dir():
        candidates = list_media(folder, "audio")
    else:
        raise RDError(f"no such folder: {folder}")
    if not candidates:
        raise RDError(f"no audio files found in {folder}")
    clips, skipped = [], []
    for path in candidates:
        try:
            clips.append(NamedClip(path.name, load_audio(path)))
        except InputError as e:
            skipped.append((path.name, str(e)))
        except OSError as e:
            skipped.append((path.name, e.strerror or str(e)))
    return clips, skipped


# --------------------------------------------------------------------------------------------
# Metrics and results
# --------------------------------------------------------------------------------------------

def clip_distortion(original: AudioClip, decoded: np.ndarray) -> tuple[float, float, float]:
    """(SI-SNR dB, mel distance, MSE) of a decoded clip against the original.

    Args:
        original: the clip as loaded.
        decoded: float [channels, num_samples] at the original's sample rate.
    """
    ref = original.samples
    return (si_snr(ref, decoded), mel_distance(ref, decoded, original.sample_rate),
            audio_mse(ref, decoded))


@dataclass
class ClipResult:
    """One clip at one rate point of one codec.

    Args:
        codec: codec name (model name or "opus").
        bitrate: the nominal rate setting in kbit/s (our model: before the prior, for one
            channel; Opus: the requested bitrate).
        clip: the clip's file name; channels, sample_rate, seconds: its format.
        kbps: the rate the curve uses (see `RDCurve.description`).
        si_snr: dB; mel_distance: see `audio_metrics.mel_distance`; mse: of the samples.
        encoding_time, decoding_time: seconds for this clip (our model).
        roundtrip_time: encode + decode seconds (Opus, whose tools run as one round trip).
        stages: quantizer stages coded (our model only).
        nll_kbps: the prior's ideal rate (our model only).
        raw_kbps: the coded indices' rate before the prior, all channels and the padded last
            frame included (our model only).
        payload_kbps: real entropy-coded payload rate (our model with `actual`).
        file_kbps: real file rate (container included; Opus: the .opus file).
        gap_percent: payload bits over the prior's NLL bits, minus 1, in percent (`actual`).
    """

    codec: str
    bitrate: float
    clip: str
    channels: int
    sample_rate: int
    seconds: float
    kbps: float
    si_snr: float
    mel_distance: float
    mse: float
    encoding_time: float | None = None
    decoding_time: float | None = None
    roundtrip_time: float | None = None
    stages: int | None = None
    nll_kbps: float | None = None
    raw_kbps: float | None = None
    payload_kbps: float | None = None
    file_kbps: float | None = None
    gap_percent: float | None = None

    def row(self) -> dict[str, object]:
        """The per-clip CSV row."""
        return {"codec": self.codec, "bitrate": self.bitrate, "clip": self.clip,
                "channels": self.channels, "sample_rate": self.sample_rate,
                "seconds": self.seconds, "stages": self.stages,
                **{key: getattr(self, attr) for attr, key in _RESULT_KEYS.items()}}


# Averaged ClipResult attribute -> key in the CompressAI-like "results".
_RESULT_KEYS = {
    "kbps": "kbps", "nll_kbps": "nll-kbps", "payload_kbps": "payload-kbps",
    "file_kbps": "file-kbps", "raw_kbps": "raw-kbps", "gap_percent": "gap-percent",
    "si_snr": "si-snr", "mel_distance": "mel-distance", "mse": "mse",
    "encoding_time": "encoding_time", "decoding_time": "decoding_time",
    "roundtrip_time": "roundtrip_time",
}


def summarize_clips(records: Sequence[ClipResult], *, name: str, description: str,
                    kind: str, keys: Sequence[str]) -> RDCurve:
    """Average per-clip results into one point per nominal bitrate (in order of first
    appearance).

    Args:
        records: per-clip results of one codec.
        name, description, kind: of the curve.
        keys: which `ClipResult` fields to average.

    Returns:
        An `RDCurve` whose results hold "bitrate", "stages" where known, and the keys.
    """
    bitrates: list[float] = []
    by_rate: dict[float, list[ClipResult]] = {}
    for r in records:
        if r.bitrate not in by_rate:
            bitrates.append(r.bitrate)
            by_rate[r.bitrate] = []
        by_rate[r.bitrate].append(r)
    results: dict[str, list] = {"bitrate": list(bitrates)}
    if any(r.stages is not None for r in records):
        results["stages"] = [by_rate[b][0].stages for b in bitrates]
    for k in keys:
        results[_RESULT_KEYS[k]] = [_mean([getattr(r, k) for r in by_rate[b]])
                                    for b in bitrates]
    return RDCurve(name=name, description=description, results=results, kind=kind)


def prior_saving(curve: RDCurve) -> np.ndarray:
    """Per rate point, the share of the raw index bits the prior saves: 1 - nll / raw."""
    return 1 - curve.values("nll-kbps") / curve.values("raw-kbps")


# --------------------------------------------------------------------------------------------
# Our model
# --------------------------------------------------------------------------------------------

def chunked_nll_bits(prior: torch.nn.Module, indices: torch.Tensor) -> float:
    """The prior's NLL in bits of indices [C, S', F], scored as `FrameByFrameCodec` codes them.

    Each channel is cut into chunks of `prior.context` frames (the last one shorter), and each
    chunk is scored on its own, from a fresh start, by the prior's parallel forward pass. The
    full-length chunks of all channels go through in batches (at most `PRIOR_BATCH_LOGITS`
    logits each); the short last chunks of all channels are one more batch.

    Args:
        prior: the model's `FramePrior`.
        indices: [channels, stages, frames] int64, on the prior's device.
    """
    c, s, f = indices.shape
    context = prior.context
    full = f // context
    total = torch.zeros((), dtype=torch.float64, device=indices.device)
    with torch.no_grad():
        if full:
            chunks = (indices[:, :, :full * context].reshape(c, s, full, context)
                      .permute(0, 2, 1, 3).reshape(c * full, s, context))
            per_pass = max(1, PRIOR_BATCH_LOGITS // (s * context * prior.num_codes))
            for start in range(0, chunks.shape[0], per_pass):
                total -= prior(chunks[start:start + per_pass]).double().sum()
        if f > full * context:
            total -= prior(indices[:, :, full * context:]).double().sum()
    return float(total)


@dataclass
class AudioModelEvaluation:
    """What `evaluate_audio_model` measured.

    Args:
        records: per-clip results, ordered by rate point, then by clip.
        bitrates: the nominal kbps measured; stages: stages coded at each.
        actual: whether `kbps`, metrics and times come from the real codec.
        nll_difference: with `actual`, the largest relative difference between the batched NLL
            and the one the entropy coder computed (a check of the batched shortcut).
        audio_difference: with `actual`, the largest |batched decode - decompress_audio| over
            all samples (a check that the batched decode is what the user gets).
        max_gap: with `actual`, the largest (payload bits - NLL bits) / NLL bits.
    """

    records: list[ClipResult]
    bitrates: list[float]
    stages: list[int]
    actual: bool
    nll_difference: float | None = None
    audio_difference: float | None = None
    max_gap: float | None = None


def _encode_all(net, clip: AudioClip, stages: int, device: torch.device) -> torch.Tensor:
    """Indices [C, S', F] of every channel, as `compress_audio` encodes them."""
    return torch.stack([encode_channel(net, model_input(samples, clip.sample_rate, net)
                                       .to(device), stages) for samples in clip.samples])


def _decode_all(net, indices: torch.Tensor, clip: AudioClip) -> np.ndarray:
    """What `decompress_audio` hands back for indices [C, S', F] of a clip."""
    out = [model_output(decode_channel(net, channel).cpu().numpy(), net, clip.sample_rate,
                        clip.num_samples) for channel in indices]
    return np.clip(np.stack(out), -1, 1).astype(np.float32)


@torch.inference_mode()
def evaluate_audio_model(loaded: LoadedModel, clips: Sequence[NamedClip], *,
                         qualities: Sequence[int] | None = None, actual: bool = False,
                         progress: ProgressCallback | None = None) -> AudioModelEvaluation:
    """Measure an audio model at every rate setting on a list of clips.

    The networks run on the device the model was loaded on. Per clip: one encoder pass (all
    stages needed), then per rate point one batched prior pass (`chunked_nll_bits`) and one
    decoder pass, both through the same windowing and resampling as the codec.

    Without `actual`, kbps = prior NLL bits / seconds / 1000; encoding_time = the clip's encoder
    seconds + the rate point's prior seconds, decoding_time = its decoder seconds. With
    `actual`, every clip is also compressed and decompressed for real at every rate point;
    kbps = payload kbps, nll-kbps is the entropy coder's own NLL, the metrics come from the
    real decoded audio and the times are those of `compress_audio` and `decompress_audio`.

    Args:
        loaded: the audio model.
        clips: the clips.
        qualities: rate settings 1..N (default: all of the model's).
        actual: also run the real entropy coder.
        progress: called after each clip and rate point.
    """
    loaded.require_kind("audio")
    net = loaded.model
    config = net.config
    device = next(net.parameters()).device
    qualities = list(qualities or range(1, len(loaded.qualities) + 1))
    stage_list = [loaded.stages_for_quality(q) for q in qualities]
    bitrates = [config.kbps(n) for n in stage_list]
    max_stages = max(stage_list)

    found: dict[tuple[int, int], ClipResult] = {}  # (rate point, clip) -> result
    nll_diff, audio_diff, max_gap = 0.0, 0.0, -math.inf
    for ci, named in enumerate(clips):
        clip, seconds = named.clip, named.seconds
        _sync(device)
        start = time.perf_counter()
        indices = _encode_all(net, clip, max_stages, device)  # [C, S, F]
        _sync(device)
        encode_s = time.perf_counter() - start
        for qi, (n, kbps) in enumerate(zip(stage_list, bitrates)):
            start = time.perf_counter()
            bits = chunked_nll_bits(net.prior, indices[:, :n])
            _sync(device)
            prior_s = time.perf_counter() - start
            start = time.perf_counter()
            decoded = _decode_all(net, indices[:, :n], clip)
            decode_s = time.perf_counter() - start
            quality = clip_distortion(clip, decoded)
            raw_bits = indices[:, :n].numel() * config.bits_per_code
            nll_kbps = bits / seconds / 1000
            r = found[qi, ci] = ClipResult(
                codec=loaded.name, bitrate=kbps, clip=named.name, channels=clip.channels,
                sample_rate=clip.sample_rate, seconds=seconds, kbps=nll_kbps,
                si_snr=quality[0], mel_distance=quality[1], mse=quality[2],
                encoding_time=encode_s + prior_s, decoding_time=decode_s, stages=n,
                nll_kbps=nll_kbps, raw_kbps=raw_bits / seconds / 1000)
            if actual:
                # round(): stages_for_bitrate matches the model's rates as rounded to 3 places.
                res = compress_audio(clip, model=loaded, bitrate=round(kbps, 3),
                                     device=str(device))
                start = time.perf_counter()
                out = decompress_audio(res.data, model=loaded, device=str(device))
                decode_real = time.perf_counter() - start
                nll = max(res.nll_bits, 1e-9)
                nll_diff = max(nll_diff, abs(bits - res.nll_bits) / nll)
                audio_diff = max(audio_diff, float(np.abs(out.samples - decoded).max()))
                gap = (8 * res.payload_bytes - res.nll_bits) / nll
                max_gap = max(max_gap, gap)
                r.nll_kbps = res.nll_bits / seconds / 1000
                r.kbps = r.payload_kbps = res.payload_kbps
                r.file_kbps, r.gap_percent = res.kbps, 100 * gap
                r.encoding_time, r.decoding_time = res.seconds, decode_real
                r.si_snr, r.mel_distance, r.mse = clip_distortion(clip, out.samples)
            if progress is not None:
                progress(1, f"{loaded.name} {kbps:g} kbps")
    records = [found[qi, ci] for qi in range(len(stage_list)) for ci in range(len(clips))]
    return AudioModelEvaluation(
        records=records, bitrates=bitrates, stages=stage_list, actual=actual,
        nll_difference=nll_diff if actual else None,
        audio_difference=audio_diff if actual else None,
        max_gap=max_gap if actual and records else None)


def audio_model_curve(evaluation: AudioModelEvaluation, *, name: str, source: str = "",
                      device: str = "") -> RDCurve:
    """Our audio model's `RDCurve`, with a description saying what kbps and the times mean.

    Args:
        evaluation: from `evaluate_audio_model`.
        name: the model's name.
        source: where the clips came from (for the description).
        device: where the networks ran.
    """
    n_clips = len({r.clip for r in evaluation.records})
    keys = ["kbps", "nll_kbps", "raw_kbps"]
    if evaluation.actual:
        keys += ["payload_kbps", "file_kbps", "gap_percent"]
        rate = ("kbps = real entropy-coded payload bits / seconds / 1000 (no container; "
                "file-kbps includes the .vqc container); nll-kbps = the prior's ideal rate; "
                "gap-percent = payload bits / NLL bits - 1; metrics from the real decoded "
                "audio; encoding_time/decoding_time = compress_audio/decompress_audio seconds "
                "per clip")
    else:
        rate = ("kbps = nll-kbps = the prior's ideal rate, -sum log2 p(indices) / seconds / "
                "1000, computed without running the entropy coder (payload and file rates "
                "unknown: run with --actual); encoding_time = encoder (all stages, once per "
                "clip) + prior seconds per clip, decoding_time = decoder seconds per clip")
    keys += ["si_snr", "mel_distance", "mse", "encoding_time", "decoding_time"]
    where = f" on {source}" if source else ""
    dev = f", {device}" if device else ""
    description = (f"vqcodec audio model {name}{where} ({n_clips} clips{dev}). bitrate = the "
                   f"nominal rate before the prior (one channel); raw-kbps = the coded indices "
                   f"before the prior (all channels); {rate}. SI-SNR (dB), mel distance and "
                   f"MSE against the original clip at its own rate, per clip then averaged.")
    return summarize_clips(evaluation.records, name=name, description=description,
                           kind="model", keys=keys)


# --------------------------------------------------------------------------------------------
# Opus
# --------------------------------------------------------------------------------------------

def resolve_audio_baselines(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Audio baseline names; Opus is left out with a warning when opus-tools is missing.

    Args:
        names: from `AUDIO_BASELINE_NAMES`; "none" alone means none, "all" means every one.

    Returns:
        (baselines, warnings).

    Raises:
        RDError: an image baseline or an unknown name.
    """
    names = [n.strip().lower() for n in names if n.strip()]
    if names == ["none"] or not names:
        return [], []
    if "all" in names:
        names = list(AUDIO_BASELINE_NAMES)
    for name in names:
        if name in BASELINE_NAMES:
            raise RDError(f"baseline {name!r} is for images; audio takes "
                          f"{', '.join(AUDIO_BASELINE_NAMES)} or none")
        if name not in AUDIO_BASELINE_NAMES:
            raise RDError(f"unknown baseline {name!r}; for audio choose from "
                          f"{', '.join(AUDIO_BASELINE_NAMES)}, all or none")
    if not opus_available():
        return [], ["Opus baseline skipped: opusenc and opusdec (opus-tools) are not "
                    "installed"]
    return list(dict.fromkeys(names)), []


def evaluate_opus(clips: Sequence[NamedClip], *,
                  bitrates: Sequence[float] = DEFAULT_OPUS_BITRATES,
                  progress: ProgressCallback | None = None) -> list[ClipResult]:
    """Encode and decode every clip with Opus at every bitrate; kbps = file bits / seconds.

    Args:
        clips: the clips.
        bitrates: kbit/s for all channels together, each in opusenc's range (6..256).
        progress: called after each clip.

    Raises:
        RDError: opus-tools failed on a clip.
    """
    records = []
    for kbps in bitrates:
        for named in clips:
            start = time.perf_counter()
            try:
                decoded, size = opus_roundtrip(named.clip, kbps)
            except (BaselineError, ValueError) as e:
                raise RDError(f"Opus at {kbps:g} kbit/s failed on {named.name}: {e}") from None
            seconds = time.perf_counter() - start
            real = 8 * size / named.seconds / 1000
            si, mel, mse = clip_distortion(named.clip, decoded)
            records.append(ClipResult(
                codec="opus", bitrate=float(kbps), clip=named.name,
                channels=named.clip.channels, sample_rate=named.clip.sample_rate,
                seconds=named.seconds, kbps=real, si_snr=si, mel_distance=mel, mse=mse,
                roundtrip_time=seconds, file_kbps=real))
            if progress is not None:
                progress(1, f"opus {kbps:g} kbps")
    return records


def opus_curve(records: Sequence[ClipResult], *, source: str = "") -> RDCurve:
    """The Opus `RDCurve` (kbps = file bits / seconds / 1000)."""
    n_clips = len({r.clip for r in records})
    where = f" on {source}" if source else ""
    description = (f"Opus through opus-tools (opusenc --hard-cbr --padding 0, opusdec "
                   f"--float){where} ({n_clips} clips). bitrate = the requested rate; kbps = "
                   f"file-kbps = .opus file bits (Ogg and Opus headers included) / seconds / "
                   f"1000; SI-SNR, mel distance and MSE per clip then averaged; "
                   f"roundtrip_time = opusenc + opusdec seconds per clip.")
    return summarize_clips(records, name="opus", description=description, kind="baseline",
                           keys=["kbps", "file_kbps", "si_snr", "mel_distance", "mse",
                                 "roundtrip_time"])
