"""Training of the audio model on CPU (or CUDA): autoencoder + quantizer, then the prior.

Same conventions as the image training (`training.py`): resumable state files in a run
folder, log lines with wall and CPU seconds. Audio is decoded and resampled to the model's
rate once and cached in the run folder (`audio_<split>.pt`, our own file).
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

from ..nn.audio_model import AudioModelConfig, VQAudioModel
from .loop import run_steps
from ..coding import latent_codec

SHARED_AUDIO = "../shared/data/audio"


def default_audio_split() -> tuple[list[Path], list[Path]]:
    """(train, val) files from ../shared/data/audio, as its README splits them: RAVDESS actors
    01-20 / 21-24, ESC-10 folds 1-4 / 5 (the copy in ../shared holds folds 1-3 only, so all of
    it trains), librosa for training, sms_tools every fifth file held out (sorted by name)."""
    root = Path(SHARED_AUDIO)
    train, val = [], []
    for actor in sorted((root / "speech/ravdess").glob("Actor_*")):
        (train if int(actor.name[-2:]) <= 20 else val).extend(sorted(actor.glob("*.flac")))
    for f in sorted((root / "music/esc10").rglob("*.ogg")):
        (val if f.name.startswith("5") else train).append(f)
    train += sorted((root / "music/librosa").glob("*.ogg"))
    for i, f in enumerate(sorted((root / "music/sms_tools").glob("*.wav"))):
        (val if i % 5 == 4 else train).append(f)
    return train, val


def load_mono(path: Path, sample_rate: int) -> torch.Tensor:
    """Every channel of a file, resampled, as separate mono signals [C, T] (float32)."""
    import soundfile
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    x = torch.from_numpy(np.ascontiguousarray(data.T))
    if rate != sample_rate:
        x = torchaudio.functional.resample(x, rate, sample_rate)
    return x


def load_audio_set(files: list[Path], sample_rate: int, cache: Path) -> list[torch.Tensor]:
    """Mono signals of all files (cached in `cache` after the first call)."""
    if cache.exists():
        return list(torch.load(cache, weights_only=True))
    signals = [ch for f in files for ch in load_mono(f, sample_rate)]
    torch.save(signals, cache)
    return signals


class SegmentSampler:
    """Random segments of `length` samples (random gain) from signals held in memory."""

    def __init__(self, signals: list[torch.Tensor], length: int, seed: int = 0) -> None:
        self.signals = [s for s in signals if s.shape[0] >= length]
        weights = np.array([s.shape[0] for s in self.signals], dtype=np.float64)
        self.weights = (weights / weights.sum()).tolist()  # long files count by their length
        self.length = length
        self.rng = random.Random(seed)

    def batch(self, n: int) -> torch.Tensor:
        out = []
        for s in self.rng.choices(self.signals, weights=self.weights, k=n):
            start = self.rng.randrange(s.shape[0] - self.length + 1)
            seg = s[start:start + self.length]
            peak = seg.abs().max().clamp_min(1e-4)
            gain = min(self.rng.uniform(0.3, 1.0) / peak.item(), 10.0)
            out.append(seg * gain)
        return torch.stack(out)[:, None]


class MelLoss(torch.nn.Module):
    """Multi-scale log-mel L1 distance (window sizes 512, 1024, 2048, 64 mel bands)."""

    def __init__(self, sample_rate: int, scales: tuple[int, ...] = (512, 1024, 2048)) -> None:
        super().__init__()
        self.mels = torch.nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n,
                                                 hop_length=n // 4, n_mels=64, power=1.0)
            for n in scales)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = x.new_zeros(())
        for mel in self.mels:
            a, b = mel(x), mel(y)
            loss = loss + (torch.log10(a.clamp_min(1e-5)) - torch.log10(b.clamp_min(1e-5))).abs().mean()
        return loss / len(self.mels)


def si_snr_db(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Scale-invariant SNR (dB) of estimates y against references x, [B, T] each."""
    x = x - x.mean(-1, keepdim=True)
    y = y - y.mean(-1, keepdim=True)
    target = (y * x).sum(-1, keepdim=True) / x.pow(2).sum(-1, keepdim=True).clamp_min(1e-8) * x
    noise = y - target
    return 10 * torch.log10(target.pow(2).sum(-1).clamp_min(1e-8) / noise.pow(2).sum(-1).clamp_min(1e-8))


def _val_segments(signals: list[torch.Tensor], length: int, count: int = 24) -> torch.Tensor:
    """Deterministic validation segments: the middle `length` samples of up to `count` signals
    spread over the set (shorter signals zero-padded)."""
    pick = signals[:: max(1, len(signals) // count)][:count]
    segments = [F.pad(s[max(0, (s.shape[0] - length) // 2):][:length], (0, max(0, length - s.shape[0])))
                for s in pick]
    return torch.stack(segments)[:, None]


def train_audio_autoencoder(*, run: str, train: list[Path], val: list[Path],
                            config: AudioModelConfig, minutes: float, batch: int = 8,
                            seconds: float = 1.0, lr: float = 3e-4, mel_weight: float = 0.1,
                            commit_weight: float = 0.25, log_every: int = 25,
                            eval_every_s: float = 300, device: str = "cpu",
                            max_steps: int | None = None) -> None:
    """Train encoder, decoder and residual quantizer on random segments for `minutes` of wall
    time (or `max_steps` more steps), resuming from `<run>/state.pt` when it exists.

    Loss: L1 on the waveform + `mel_weight` x multi-scale log-mel L1 + commitment. Without
    adversarial losses a strong mel term buys a plausible spectrum with the wrong phase: at
    weight 1.0 validation SI-SNR was still -12 dB after 2,000 steps.

    Args:
        run: run folder (state.pt, config.json, log.txt, cached audio).
        train, val: audio files.
        config: model sizes (written to config.json).
        minutes, max_steps: the budget of this call.
        batch, seconds, lr: segments per step, their length, Adam's learning rate.
        eval_every_s: seconds between validation lines (and checkpoints).
        device: "cpu" or "cuda".
    """
    run_dir = Path(run)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"kind": "audio", **config.to_dict()}))
    rate = config.sample_rate
    model = VQAudioModel(config).to(device)
    opt = torch.optim.Adam(list(model.encoder.parameters()) + list(model.decoder.parameters()),
                           lr=lr, betas=(0.8, 0.99))
    state_path = run_dir / "state.pt"
    step, cpu0, wall0 = 0, 0.0, 0.0
    if state_path.exists():
        st = torch.load(state_path, weights_only=True, map_location=device)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, cpu0, wall0 = st["step"], st["cpu_s"], st["wall_s"]
    for g in opt.param_groups:
        g["lr"] = lr
    length = int(seconds * rate) // config.hop * config.hop
    sampler = SegmentSampler(load_audio_set(train, rate, run_dir / "audio_train.pt"), length,
                             seed=step)
    val_x = _val_segments(load_audio_set(val, rate, run_dir / "audio_val.pt"),
                          2 * rate // config.hop * config.hop).to(device)
    mel_loss = MelLoss(rate).to(device)
    log = open(run_dir / "log.txt", "a")
    t_wall, t_cpu = time.time(), time.process_time()

    def elapsed() -> tuple[float, float]:
        return wall0 + time.time() - t_wall, cpu0 + time.process_time() - t_cpu

    def save() -> None:
        w, c = elapsed()
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "cpu_s": c, "wall_s": w}, tmp)
        os.replace(tmp, state_path)

    def evaluate() -> None:
        model.eval()
        row = []
        with torch.no_grad():
            idx = torch.cat([model.encode(val_x[i:i + 8]) for i in range(0, len(val_x), 8)])
            for n in (2, 4, 8, 16):
                if n <= config.num_stages:
                    y = torch.cat([model.decode(idx[i:i + 8, :n]) for i in range(0, len(idx), 8)])
                    snr = si_snr_db(val_x[:, 0], y[:, 0]).mean().item()
                    mel = mel_loss(val_x, y).item()
                    row.append(f"{config.kbps(n):g}kbps:{snr:.2f}dB/mel{mel:.3f}")
        model.train()
        w, c = elapsed()
        print(f"EVAL step {step} wall {w:.0f}s cpu {c:.0f}s " + " ".join(row), file=log, flush=True)

    def take_step() -> tuple[float, float, float]:
        x = sampler.batch(batch).to(device)
        y, _, commit = model(x)
        l1 = (y - x).abs().mean()
        mel = mel_loss(x, y)
        loss = l1 + mel_weight * mel + commit_weight * commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return l1.item(), mel.item(), commit.item()

    def log_line(at: int, means) -> str:
        w, c = elapsed()
        l1m, melm, cm = means
        return (f"step {at} wall {w:.0f}s cpu {c:.0f}s l1 {l1m:.5f} mel {melm:.4f} "
                f"commit {cm:.5f}")

    def checkpoint(at: int) -> None:
        nonlocal step
        step = at
        evaluate()
        save()

    model.train()
    run_steps(step=step, minutes=minutes, max_steps=max_steps, take_step=take_step,
              log_line=log_line, checkpoint=checkpoint, log=log, log_every=log_every,
              eval_every_s=eval_every_s)


def encode_signals(model: VQAudioModel, signals: list[torch.Tensor], *, frames: int,
                   max_windows: int, seed: int = 0) -> torch.Tensor:
    """Indices [N, S, frames] (int16) of windows cut from the signals, for prior training."""
    hop = model.config.hop
    rng = random.Random(seed)
    windows = []
    for s in signals:
        n = s.shape[0] // (frames * hop)
        windows += [s[i * frames * hop:(i + 1) * frames * hop] for i in range(n)]
    rng.shuffle(windows)
    windows = windows[:max_windows]
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(windows), 8):
            x = torch.stack(windows[i:i + 8])[:, None]
            out.append(model.encode(x).to(torch.int16))
    return torch.cat(out)


def train_audio_prior(*, run: str, config: AudioModelConfig, train: list[Path], val: list[Path],
                      minutes: float, batch: int = 8, lr: float = 5e-4, log_every: int = 25,
                      eval_every_s: float = 300, max_windows: int = 4000,
                      max_steps: int | None = None) -> None:
    """Train the frame prior on indices of the frozen autoencoder in `<run>/state.pt`;
    resumes from `<run>/prior_state.pt`. Each step draws, per batch, a number of coded stages
    n (uniform in 1..S) so one prior serves every bitrate.

    Args:
        run: run folder.
        config: the model config.
        train, val: audio files (their cached signals in the run folder are reused).
        minutes, max_steps: the budget of this call.
        batch, lr: windows of `config.prior_context` frames per step, Adam's learning rate.
        max_windows: at most this many training windows are encoded (cached).
    """
    run_dir = Path(run)
    model = VQAudioModel(config)
    state_path = run_dir / "prior_state.pt"
    opt = torch.optim.Adam(model.prior.parameters(), lr=lr)
    step, cpu0, wall0 = 0, 0.0, 0.0
    if state_path.exists():
        st = torch.load(state_path, weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, cpu0, wall0 = st["step"], st["cpu_s"], st["wall_s"]
    else:
        ae = torch.load(run_dir / "state.pt", weights_only=True)["model"]
        ae = {k: v for k, v in ae.items() if not k.startswith("prior.")}
        missing, unexpected = model.load_state_dict(ae, strict=False)
        assert all(k.startswith("prior.") for k in missing) and not unexpected
    for g in opt.param_groups:
        g["lr"] = lr
    cache = run_dir / "prior_indices.pt"
    if cache.exists():
        data = torch.load(cache, weights_only=True)
    else:
        rate, frames = config.sample_rate, config.prior_context
        data = {"train": encode_signals(model, load_audio_set(train, rate, run_dir / "audio_train.pt"),
                                        frames=frames, max_windows=max_windows, seed=1),
                "val": encode_signals(model, load_audio_set(val, rate, run_dir / "audio_val.pt"),
                                      frames=frames, max_windows=64, seed=2)}
        torch.save(data, cache)
    log = open(run_dir / "prior_log.txt", "a")
    t_wall, t_cpu = time.time(), time.process_time()
    rng = torch.Generator().manual_seed(step)
    s_total = config.num_stages

    def save() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "cpu_s": cpu0 + time.process_time() - t_cpu,
                    "wall_s": wall0 + time.time() - t_wall}, tmp)
        os.replace(tmp, state_path)

    def evaluate() -> None:
        model.prior.eval()
        row = []
        with torch.no_grad():
            for n in (2, 4, 8, 16):
                if n <= s_total:
                    bits = torch.cat([-latent_codec(model).forward(data["val"][i:i + 8, :n].long()).sum((1, 2))
                                      for i in range(0, len(data["val"]), 8)])
                    per_frame = bits.sum().item() / (len(data["val"]) * config.prior_context)
                    kbps = per_frame * config.autoencoder.frame_rate / 1000
                    row.append(f"{config.kbps(n):g}->{kbps:.3f}kbps")
        model.prior.train()
        print(f"EVAL step {step} cpu {cpu0 + time.process_time() - t_cpu:.0f}s " + " ".join(row),
              file=log, flush=True)

    def take_step() -> float:
        pick = torch.randint(0, len(data["train"]), (batch,), generator=rng)
        n = int(torch.randint(1, s_total + 1, (1,), generator=rng))
        bits = -latent_codec(model).forward(data["train"][pick, :n].long()).mean()
        opt.zero_grad(set_to_none=True)
        bits.backward()
        torch.nn.utils.clip_grad_norm_(model.prior.parameters(), 1.0)
        opt.step()
        return bits.item()

    def log_line(at: int, means) -> str:
        return f"step {at} cpu {cpu0 + time.process_time() - t_cpu:.0f}s bits/index {means[0]:.3f}"

    def checkpoint(at: int) -> None:
        nonlocal step
        step = at
        evaluate()
        save()

    model.prior.train()
    run_steps(step=step, minutes=minutes, max_steps=max_steps, take_step=take_step,
              log_line=log_line, checkpoint=checkpoint, log=log, log_every=log_every,
              eval_every_s=eval_every_s)
