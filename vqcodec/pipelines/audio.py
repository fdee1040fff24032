"""Audio <-> `.vqc` bytes: the compress/decompress pipeline for audio.

Each channel is resampled to the model's rate and coded on its own (one after another in the
same stream); decoding resamples back to the input's rate and trims to its length. Everything
runs window by window, so memory does not grow with the file's length, only its indices do:
the input is read (`io.audio.AudioReader`) and resampled (`WindowedResampler`) in windows of
`WINDOW_SECONDS`, the autoencoder sees each with `MARGIN_FRAMES` of context on each side, the
prior codes chunks of its context length, and the decoder writes the output in windows
(`decompress_audio_to_file`).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..zoo.registry import DEFAULT_AUDIO_MODEL, LoadedModel, ModelError, load_model
from ..io.audio import (MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioClip, AudioReader,
                       WindowedResampler, as_audio_clip, open_audio_writer, resample)
from ..format import ContainerHeader, MediaType, pack_container
from ..device import resolve_device
from .file import Compression, decode_indices, encode_indices, open_file, stages_to_decode

WINDOW_SECONDS = 30.0
MARGIN_FRAMES = 16  # beyond the encoder's and decoder's receptive fields (checked by tests)


@dataclass
class AudioCompression(Compression):
    """What `compress_audio` produced and measured."""

    duration: float  # seconds of audio
    raw_kbps: float  # the bitrate of the coded stages before entropy coding

    @property
    def kbps(self) -> float:
        """File kilobits per second of audio (container included)."""
        return 8 * len(self.data) / self.duration / 1000

    @property
    def payload_kbps(self) -> float:
        return 8 * self.payload_bytes / self.duration / 1000

    def describe(self) -> str:
        """One line on what was written."""
        h = self.header
        return (f"{len(self.data)} bytes, {self.kbps:.3f} kbps (payload {self.payload_kbps:.3f} "
                f"kbps, {self.raw_kbps:g} kbps before the prior), {self.duration:.2f} s of "
                f"audio, {h.shape[0]} ch at {h.sample_rate} Hz, {h.num_stages} stages, "
                f"{self.seconds:.2f} s")


def stages_for_bitrate(loaded: LoadedModel, kbps: float | None) -> int:
    """Stages to code for a bitrate before entropy coding (None: the model's default)."""
    if kbps is None:
        return loaded.stages_for_quality(loaded.default_quality)
    config = loaded.model.config
    valid = {round(config.kbps(n), 3): n for n in loaded.qualities}
    for rate, n in valid.items():
        if abs(rate - kbps) < 1e-6 * max(1.0, rate) + 1e-9:
            return n
    choices = ", ".join(f"{r:g}" for r in sorted(valid))
    raise ModelError(f"bitrate must be one of {choices} kbps for model {loaded.name}, got {kbps:g}")


def _windows(total: int, window: int, margin: int):
    """(start, end, keep_from, keep_to) in frames: windows of `window` frames with `margin`
    frames of context each side (clipped to the signal)."""
    for start in range(0, total, window):
        end = min(total, start + window)
        lo, hi = max(0, start - margin), min(total, end + margin)
        yield lo, hi, start - lo, end - lo


def model_input(samples: np.ndarray, sample_rate: int, net) -> torch.Tensor:
    """One channel [n] at `sample_rate` -> the model's input: resampled to its rate and
    zero-padded to a whole number of frames (a clip has >= 1 sample, so >= 1 frame)."""
    x = torch.from_numpy(resample(samples[None], sample_rate, net.config.sample_rate)[0])
    return F.pad(x, (0, -x.shape[0] % net.config.hop))


def _encode_windows(net, read, frames: int, num_stages: int, device) -> torch.Tensor:
    """Indices [C, S', frames] of a model-rate signal given by `read(start, stop)` (samples
    [C, stop - start], zeros past its end), window by window.

    The first n stages do not depend on how many more are asked for (residual quantization),
    so encoding all stages once serves every rate setting.
    """
    hop = net.config.hop
    parts = []
    for lo, hi, keep_from, keep_to in _windows(frames, _window_frames(net), MARGIN_FRAMES):
        x = torch.as_tensor(read(lo * hop, hi * hop)).to(device)
        codes = [net.encode(channel.view(1, 1, -1), num_stages)[0, :, keep_from:keep_to]
                 for channel in x]
        parts.append(torch.stack(codes).cpu())
    return torch.cat(parts, 2)


def _window_frames(net) -> int:
    return max(1, int(WINDOW_SECONDS * net.config.autoencoder.frame_rate))


def encode_channel(net, samples: torch.Tensor, num_stages: int) -> torch.Tensor:
    """Mono waveform [T] at the model's rate (T a multiple of hop) -> indices [S', F]."""
    frames = samples.shape[0] // net.config.hop
    indices = _encode_windows(net, lambda a, b: samples[a:b][None], frames, num_stages,
                              samples.device)
    return indices[0].to(samples.device)


def encode_audio(net, source, num_stages: int, device) -> torch.Tensor:
    """Indices [C, S', F] of every channel of `source` (an `AudioClip` or `AudioReader`, at any
    rate), read and resampled to the model's rate window by window."""
    config = net.config
    signal = WindowedResampler(source, source.sample_rate, config.sample_rate)
    frames = expected_frames(source.num_samples, source.sample_rate, config.sample_rate,
                             config.hop)
    return _encode_windows(net, signal.read, frames, num_stages, device)


class DecodedSignal:
    """The model-rate waveform [C, F * hop] of indices [C, S', F], decoded on demand: `read`
    decodes the frames a range needs plus `MARGIN_FRAMES` each side (beyond the decoder's
    receptive field, so windows join without seams)."""

    def __init__(self, net, indices: torch.Tensor, device) -> None:
        self.net, self.indices, self.device = net, indices, device
        self.num_samples = indices.shape[-1] * net.config.hop

    def read(self, start: int, stop: int) -> np.ndarray:
        hop, frames = self.net.config.hop, self.indices.shape[-1]
        lo = max(0, start // hop - MARGIN_FRAMES)
        hi = min(frames, -(-stop // hop) + MARGIN_FRAMES)
        with torch.no_grad():
            y = torch.stack([self.net.decode(channel[None, :, lo:hi].to(self.device))[0, 0]
                             for channel in self.indices])
        return y[:, max(0, start - lo * hop):max(0, stop - lo * hop)].cpu().numpy()


def decode_channel(net, indices: torch.Tensor) -> torch.Tensor:
    """Indices [S', F] -> mono waveform [F * hop], window by window."""
    signal = DecodedSignal(net, indices[None], indices.device)
    step = _window_frames(net) * net.config.hop
    parts = [signal.read(a, a + step)[0] for a in range(0, signal.num_samples, step)]
    return torch.from_numpy(np.concatenate(parts)).to(indices.device)


def compress_audio(audio: AudioClip | AudioReader | tuple[np.ndarray, int], *,
                   model: str | LoadedModel = DEFAULT_AUDIO_MODEL, bitrate: float | None = None,
                   device: str = "auto") -> AudioCompression:
    """Compress audio into a `.vqc` file's bytes.

    Args:
        audio: an `AudioClip`, an open `AudioReader` (read window by window), or (samples,
            sample_rate) with samples float in [-1, 1] or int16, shaped [n] (mono) or
            [channels, n].
        model: shipped model name, model file path, or a loaded model.
        bitrate: kbps before entropy coding (one of the model's rate settings, e.g. 1.5, 3, 6,
            12); default: the model's default.
        device: "auto", "cpu" or "cuda".
    """
    start = time.perf_counter()
    source = audio if isinstance(audio, (AudioClip, AudioReader)) else as_audio_clip(*audio)
    dev = resolve_device(device)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device=dev)
    loaded.require_kind("audio")
    net = loaded.model
    stages = stages_for_bitrate(loaded, bitrate)
    indices = encode_audio(net, source, stages, dev)  # [C, S', F]
    coded, portable, check = encode_indices(loaded, indices)
    header = ContainerHeader(
        media_type=MediaType.AUDIO, model_id=loaded.name, weights_hash=loaded.weights_hash,
        num_stages=stages, shape=(source.channels, source.num_samples),
        sample_rate=source.sample_rate, latent_shape=(source.channels, indices.shape[2]),
        portable=portable, index_check=check)
    data = pack_container(header, coded.streams)
    return AudioCompression(data=data, header=header, payload_bytes=coded.payload_bits // 8,
                            nll_bits=coded.nll_bits, duration=source.seconds,
                            raw_kbps=net.config.kbps(stages),
                            seconds=time.perf_counter() - start)


def expected_frames(num_samples: int, sample_rate: int, model_rate: int, hop: int) -> int:
    """Frames the encoder produces for a channel of `num_samples` at `sample_rate`."""
    resampled = -(-num_samples * model_rate // sample_rate)  # torchaudio rounds up
    return max(1, -(-resampled // hop))


def decoded_audio(data: bytes, *, model: str | LoadedModel | None = None,
                  device: str = "auto", stages: int | None = None):
    """Decode a `.vqc` file's indices and return (header, blocks): `blocks` yields the audio
    at the original rate, channels and length as float32 [C, n] arrays in [-1, 1], window by
    window (see `decompress_audio`; the payload is decoded and checked before the first)."""
    header, payload, loaded, dev = open_file(data, MediaType.AUDIO, model, device)
    net = loaded.model
    if len(header.shape) != 2 or len(header.latent_shape) != 2:
        raise ModelError("inconsistent .vqc header: audio needs (channels, samples)")
    channels, num_samples = header.shape
    if not (MIN_SAMPLE_RATE <= header.sample_rate <= MAX_SAMPLE_RATE
            and 1 <= channels <= MAX_CHANNELS):
        raise ModelError("inconsistent .vqc header: sample rate or channels out of range")
    frames = expected_frames(num_samples, header.sample_rate, net.config.sample_rate,
                             net.config.hop)
    if (tuple(header.latent_shape) != (channels, frames)
            or header.num_stages > net.config.num_stages or header.num_chunks != 1):
        raise ModelError("inconsistent .vqc header: shape, frames, stages or chunks do not fit "
                         "the model")
    num_stages = stages_to_decode(header, payload, stages)
    indices = decode_indices(header, loaded, payload, channels, header.num_stages, frames)
    return header, decode_audio(net, indices[:, :num_stages], header.sample_rate, num_samples,
                                dev)


def decode_audio(net, indices: torch.Tensor, sample_rate: int, num_samples: int,
                 device) -> Iterator[np.ndarray]:
    """The audio of indices [C, S', F] at `sample_rate`, `num_samples` long, as float32
    [C, n] blocks in [-1, 1], decoded and resampled window by window."""
    signal = WindowedResampler(DecodedSignal(net, indices, device), net.config.sample_rate,
                               sample_rate)
    step = max(1, int(WINDOW_SECONDS * sample_rate))
    for start in range(0, num_samples, step):
        block = signal.read(start, min(start + step, num_samples))
        yield np.clip(block, -1, 1).astype(np.float32)  # resampling can overshoot


def decompress_audio(data: bytes, *, model: str | LoadedModel | None = None,
                     device: str = "auto", stages: int | None = None) -> AudioClip:
    """Decode a `.vqc` file's bytes to an `AudioClip` at the original rate, channels and length.

    Args:
        data: the file's bytes.
        model: optional model name/path/loaded model; by default the one named in the file.
        device: "auto", "cpu" or "cuda".
        stages: reconstruct from the first `stages` stages only (a lower bitrate's sound).
            Audio frames interleave all stages in one stream, so every stage is still
            decoded (and checked); only the waveform is made from fewer. None: all stages.
    """
    header, blocks = decoded_audio(data, model=model, device=device, stages=stages)
    return AudioClip(samples=np.ascontiguousarray(np.concatenate(list(blocks), axis=1)),
                     sample_rate=header.sample_rate)


def decompress_audio_to_file(data: bytes, path, *, model: str | LoadedModel | None = None,
                             device: str = "auto", stages: int | None = None) -> "AudioInfo":
    """`decompress_audio` written to `path` (format from its suffix; atomically: no file on
    an error) window by window, so that memory does not grow with the length. Returns what
    was written (channels, rate, length)."""
    header, blocks = decoded_audio(data, model=model, device=device, stages=stages)
    channels, num_samples = header.shape
    with open_audio_writer(path, channels, header.sample_rate) as writer:
        for block in blocks:
            writer.write(block)
    return AudioInfo(channels=channels, sample_rate=header.sample_rate, num_samples=num_samples)


@dataclass(frozen=True)
class AudioInfo:
    """What was decoded to a file: channels, rate, samples per channel."""

    channels: int
    sample_rate: int
    num_samples: int

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate
