"""Audio recipes on CPU (or CUDA): autoencoder + quantizer, then the frame prior.

Every job is resumable in its run folder (`loop.TrainingRun`); the prior job is shared with
images (`prior.fit_prior`). Audio is decoded and resampled to the model's rate once and
cached in the run folder (`data.load_audio_set`).
"""
from __future__ import annotations

import random
from pathlib import Path

import torch
import torchaudio

from ..coding import latent_codec
from ..eval.metrics import si_snr
from ..nn.audio_model import AudioModelConfig, VQAudioModel
from .data import SegmentSampler, load_audio_set, validation_segments
from .loop import TrainingRun, read_run_config, write_run_config
from .prior import fit_prior

EVAL_STAGES = (2, 4, 8, 16)  # stage counts reported in EVAL lines (those <= S)


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


def _audio_sets(run_dir: Path, train: list[Path], val: list[Path], rate: int
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(train, val) mono signals, cached in the run folder."""
    return (load_audio_set(train, rate, run_dir / "audio_train.pt"),
            load_audio_set(val, rate, run_dir / "audio_val.pt"))


def train_audio_autoencoder(*, run: str, train: list[Path], val: list[Path],
                            config: AudioModelConfig | None = None, minutes: float, batch: int = 8,
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
        config: model sizes (written to config.json); None: the run's config.json, or for a
            new run the default audio config.
        minutes, max_steps: the budget of this call.
        batch, seconds, lr: segments per step, their length, Adam's learning rate.
        eval_every_s: seconds between validation lines (and checkpoints).
        device: "cpu" or "cuda".
    """
    job = TrainingRun(run, device=device)
    device, part = job.device, job.shard(batch)  # under torchrun: this process's GPU, shard
    config = read_run_config(run, "audio") if config is None else config
    write_run_config(run, config)
    rate = config.sample_rate
    model = VQAudioModel(config).to(device)
    opt = torch.optim.Adam(list(model.encoder.parameters()) + list(model.decoder.parameters()),
                           lr=lr, betas=(0.8, 0.99))
    if job.resumed:
        model.load_state_dict(job.state["model"])
    job.restore_optimizer(opt, lr=lr)
    length = int(seconds * rate) // config.hop * config.hop
    with job.world.main_first():  # under torchrun rank 0 writes the audio caches
        train_signals, val_signals = _audio_sets(job.folder, train, val, rate)
    sampler = SegmentSampler(train_signals, length, seed=job.step)
    val_x = validation_segments(val_signals, 2 * rate // config.hop * config.hop).to(device)
    mel_loss = MelLoss(rate).to(device)

    def evaluate() -> str:
        model.eval()
        row = []
        with torch.no_grad():
            idx = torch.cat([model.encode(val_x[i:i + 8]) for i in range(0, len(val_x), 8)])
            for n in EVAL_STAGES:
                if n <= config.num_stages:
                    y = torch.cat([model.decode(idx[i:i + 8, :n]) for i in range(0, len(idx), 8)])
                    snr = si_snr(val_x[:, 0].cpu().numpy(), y[:, 0].cpu().numpy())
                    mel = mel_loss(val_x, y).item()
                    row.append(f"{config.kbps(n):g}kbps:{snr:.2f}dB/mel{mel:.3f}")
        model.train()
        return " ".join(row)

    def take_step() -> tuple[float, float, float]:
        x = sampler.batch(batch, part).to(device)
        y, _, commit = model(x)
        l1 = (y - x).abs().mean()
        mel = mel_loss(x, y)
        loss = l1 + mel_weight * mel + commit_weight * commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        job.average_gradients(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return l1.item(), mel.item(), commit.item()

    def describe(means) -> str:
        return f"l1 {means[0]:.5f} mel {means[1]:.4f} commit {means[2]:.5f}"

    model.train()
    with job:
        job.train(model=model, optimizer=opt, take_step=take_step, describe=describe,
                  evaluate=evaluate, minutes=minutes, max_steps=max_steps,
                  log_every=log_every, eval_every_s=eval_every_s)


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


def train_audio_prior(*, run: str, train: list[Path], val: list[Path], minutes: float,
                      config: AudioModelConfig | None = None, batch: int = 8,
                      lr: float = 5e-4, log_every: int = 25,
                      eval_every_s: float = 300, max_windows: int = 4000,
                      max_steps: int | None = None) -> None:
    """Train the frame prior on indices of the frozen autoencoder in `<run>/state.pt`;
    resumes from `<run>/prior_state.pt`. Each step draws, per batch, a number of coded stages
    n (uniform in 1..S) so one prior serves every bitrate.

    Args:
        run: run folder.
        config: the model config (default: the run's config.json).
        train, val: audio files (their cached signals in the run folder are reused).
        minutes, max_steps: the budget of this call.
        batch, lr: windows of `config.prior_context` frames per step, Adam's learning rate.
        max_windows: at most this many training windows are encoded (cached).
    """
    config = read_run_config(run, "audio") if config is None else config
    model = VQAudioModel(config)
    s_total = config.num_stages

    def encode_index_sets() -> dict[str, torch.Tensor]:
        train_signals, val_signals = _audio_sets(Path(run), train, val, config.sample_rate)
        frames = config.prior_context
        return {"train": encode_signals(model, train_signals, frames=frames,
                                        max_windows=max_windows, seed=1),
                "val": encode_signals(model, val_signals, frames=frames, max_windows=64,
                                      seed=2)}

    def log2_likelihoods(indices: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        n = int(torch.randint(1, s_total + 1, (1,), generator=rng))
        return latent_codec(model).forward(indices[:, :n].long())

    def evaluate(val_indices: torch.Tensor) -> str:
        model.prior.eval()
        codec, row = latent_codec(model), []
        with torch.no_grad():
            for n in EVAL_STAGES:
                if n <= s_total:
                    bits = torch.cat([-codec.forward(val_indices[i:i + 8, :n].long()).sum((1, 2))
                                      for i in range(0, len(val_indices), 8)])
                    per_frame = bits.sum().item() / (len(val_indices) * config.prior_context)
                    kbps = per_frame * config.autoencoder.frame_rate / 1000
                    row.append(f"{config.kbps(n):g}->{kbps:.3f}kbps")
        model.prior.train()
        return " ".join(row)

    fit_prior(model, run=run, autoencoder_state=Path(run) / "state.pt",
              index_cache="prior_indices.pt", encode_index_sets=encode_index_sets,
              log2_likelihoods=log2_likelihoods, evaluate=evaluate, minutes=minutes,
              max_steps=max_steps, batch=batch, lr=lr, log_every=log_every,
              eval_every_s=eval_every_s)
