"""Training of the image model on CPU (or CUDA): autoencoder + quantizer, then the prior.

Resumable: state lives in `<run>/state.pt` (our own file, loaded with weights_only=True) and
every log line carries wall and CPU seconds so quality can be read against compute.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..nn.grouped_rvq import train_codebooks
from ..nn.image_autoencoder import init_linear_path_from_pca
from ..nn.image_model import ImageModelConfig, VQImageModel
from .loop import run_steps
from ..coding import latent_codec
from ..io.media import list_media



def list_images(folder: str | Path) -> list[Path]:
    return list_media(folder, "image", recursive=True)


def load_rgb(path: Path) -> torch.Tensor:
    """uint8 tensor [3, H, W]."""
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()


class CropSampler:
    """Random crops (with horizontal flips) from images held in memory as uint8."""

    def __init__(self, images: list[torch.Tensor], crop: int, seed: int = 0) -> None:
        self.images = [im for im in images if min(im.shape[1:]) >= crop]
        self.crop = crop
        self.rng = random.Random(seed)

    def batch(self, n: int) -> torch.Tensor:
        out = []
        for _ in range(n):
            im = self.images[self.rng.randrange(len(self.images))]
            y = self.rng.randrange(im.shape[1] - self.crop + 1)
            x = self.rng.randrange(im.shape[2] - self.crop + 1)
            c = im[:, y:y + self.crop, x:x + self.crop]
            if self.rng.random() < 0.5:
                c = c.flip(2)
            out.append(c)
        return torch.stack(out).float() / 255


def center_crops(images: list[torch.Tensor], size: int) -> torch.Tensor:
    out = []
    for im in images:
        h, w = im.shape[1:]
        y, x = (h - size) // 2, (w - size) // 2
        out.append(im[:, y:y + size, x:x + size])
    return torch.stack(out).float() / 255


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR of [B, 3, H, W] tensors in [0, 1], after rounding to 8 bits."""
    mse = ((x * 255).round() - (y * 255).round()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(255.0 ** 2 / mse.clamp_min(1e-10))


def load_training_images(folders: list[str]) -> list[torch.Tensor]:
    images = []
    for f in folders:
        for p in list_images(f) if Path(f).is_dir() else [Path(f)]:
            im = load_rgb(p)
            images.append(im)
            if min(im.shape[1:]) >= 600:  # large photos also at half size: more scale variety
                images.append(F.interpolate(im[None].float(), scale_factor=0.5, mode="area",
                                            antialias=False)[0].round().to(torch.uint8))
    return images


def train_autoencoder(*, run: str, train: list[str], val: list[str], config: ImageModelConfig,
                      minutes: float, batch: int = 16, crop: int = 128, lr: float = 4e-4,
                      commit_weight: float = 0.25, log_every: int = 50,
                      eval_every_s: float = 300, device: str = "cpu",
                      max_steps: int | None = None, val_crop: int = 256,
                      init_from: str | None = None, pca_crops_count: int = 512,
                      linear_lr_scale: float = 0.1) -> None:
    """Train encoder, decoder and residual quantizer on random crops, for `minutes` of wall time
    (or `max_steps` more steps), resuming from `<run>/state.pt` when it exists.

    Args:
        run: run folder (state, config.json, log.txt).
        train: image folders or files for training; val: the same for validation.
        config: model sizes (written to config.json on first use).
        minutes: wall-clock budget of this call.
        batch, crop, lr, commit_weight: the optimisation.
        eval_every_s: seconds between validation PSNR lines (and checkpoints).
        device: "cpu" or "cuda".
        max_steps: stop after this many steps of this call (tests).
        val_crop: size of the centre crops used for validation.
        init_from: a model file (or shipped model name) to start from when the run folder has
            no state yet: continues training a shipped model in a new session (the optimizer
            state is not shipped and starts afresh).
        pca_crops_count: random crops whose patch PCA initialises a fresh model's linear path.
        linear_lr_scale: learning rate of the linear path relative to `lr`.
    """
    run_dir = Path(run)
    run_dir.mkdir(parents=True, exist_ok=True)
    model = VQImageModel(config).to(device)
    # Adam moves every weight by ~lr per step whatever its gradient, which would shake the
    # PCA-initialised linear path off its optimum: it gets a smaller rate.
    linear = [p for m in (model.encoder.linear, model.decoder.linear) if m is not None
              for p in m.parameters()]
    conv = list(model.encoder.net.parameters()) + list(model.decoder.net.parameters())
    groups = [{"params": conv, "lr_scale": 1.0}]
    if linear:
        groups.append({"params": linear, "lr_scale": linear_lr_scale})
    opt = torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.99))
    state_path = run_dir / "state.pt"
    step, cpu0, wall0 = 0, 0.0, 0.0
    if state_path.exists():
        st = torch.load(state_path, weights_only=True, map_location=device)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, cpu0, wall0 = st["step"], st["cpu_s"], st["wall_s"]
    elif init_from:
        from ..zoo.registry import load_model
        shipped = load_model(init_from, device=device)
        model.load_state_dict(shipped.model.state_dict())
        step = shipped.training.get("autoencoder_steps", 0)
        cpu0 = shipped.training.get("autoencoder_cpu_s", 0.0)
        wall0 = shipped.training.get("autoencoder_wall_s", 0.0)
    for g in opt.param_groups:
        g["lr"] = lr * g["lr_scale"]
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    train_images = load_training_images(train)
    sampler = CropSampler(train_images, crop, seed=step)
    if step == 0 and config.autoencoder.linear_path:
        pca_crops = CropSampler(train_images, crop, seed=12345).batch(pca_crops_count).to(device)
        explained = init_linear_path_from_pca(model.encoder, model.decoder, pca_crops)
        with open(run_dir / "log.txt", "a") as f:
            print(f"PCA init of the linear path: {explained:.4%} of patch variance kept",
                  file=f, flush=True)
    val_x = center_crops([im for im in load_training_images(val)[:48]
                          if min(im.shape[1:]) >= val_crop][:24], val_crop).to(device)
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
        with torch.no_grad():
            idx = model.encode(val_x)
            stride2 = config.stride ** 2
            row = []
            for n in (2, 4, 8, 12, 16, 20, 24):
                if n <= config.num_stages:
                    p = psnr(model.decode(idx[:, :n]), val_x).mean().item()
                    row.append(f"s{n}:{p:.2f}dB@{n * config.bits_per_code / stride2:.3f}bpp")
        model.train()
        w, c = elapsed()
        print(f"EVAL step {step} wall {w:.0f}s cpu {c:.0f}s " + " ".join(row), file=log, flush=True)

    def take_step() -> tuple[float, float]:
        x = sampler.batch(batch).to(device)
        y, _, commit = model(x)
        mse = F.mse_loss(y, x)
        loss = mse + commit_weight * commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return mse.item(), commit.item()

    def log_line(at: int, means) -> str:
        w, c = elapsed()
        return (f"step {at} wall {w:.0f}s cpu {c:.0f}s mse {means[0]:.5f} "
                f"psnr~{10 * math.log10(1 / means[0]):.2f} commit {means[1]:.5f}")

    def checkpoint(at: int) -> None:
        nonlocal step
        step = at
        evaluate()
        save()

    model.train()
    run_steps(step=step, minutes=minutes, max_steps=max_steps, take_step=take_step,
              log_line=log_line, checkpoint=checkpoint, log=log, log_every=log_every,
              eval_every_s=eval_every_s)


def encode_crops(model: VQImageModel, images: list[torch.Tensor], *, crop: int, count: int,
                 seed: int = 0, batch: int = 16,
                 rd_lambdas: list[float] | None = None) -> torch.Tensor:
    """Indices [count, S, (G,) crop/stride, crop/stride] (int16) of random crops, for prior
    training. With `rd_lambdas` (grouped models) each batch is coded at one of them in turn,
    so the prior learns the statistics of every quality."""
    sampler = CropSampler(images, crop, seed=seed)
    out = []
    model.eval()
    with torch.no_grad():
        for i, start in enumerate(range(0, count, batch)):
            x = sampler.batch(min(batch, count - start))
            lam = rd_lambdas[i % len(rd_lambdas)] if rd_lambdas else 0.0
            out.append(model.encode(x, None, lam).to(torch.int16))
    return torch.cat(out)


def prior_bits_per_stage(model: VQImageModel, indices: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """Mean bits per index of each stage [S] under the prior."""
    model.eval()
    total = torch.zeros(indices.shape[1])
    with torch.no_grad():
        for start in range(0, len(indices), batch):
            lp = latent_codec(model).forward(indices[start:start + batch].long())
            total += -lp.sum([d for d in range(lp.dim()) if d != 1])  # all groups of a stage
    return total / (indices.shape[0] * indices.shape[-2] * indices.shape[-1])


def train_prior(*, run: str, autoencoder_state: str, train: list[str], val: list[str],
                config: ImageModelConfig, minutes: float, crop: int = 256, num_crops: int = 1600,
                batch: int = 8, stages_per_step: int = 6, lr: float = 1e-3,
                log_every: int = 50, eval_every_s: float = 300,
                max_steps: int | None = None, rd_lambdas: list[float] | None = None) -> None:
    """Train the prior on indices of a frozen autoencoder (crops are encoded once, up front).

    Resumes from `<run>/prior_state.pt`; otherwise starts from the autoencoder state file.

    Args:
        run: run folder.
        autoencoder_state: state.pt written by `train_autoencoder`.
        train, val: image folders or files.
        config: the model config the autoencoder was trained with.
        minutes: wall-clock budget; max_steps: or this many steps (tests).
        crop, num_crops: size and number of training crops encoded once (cached in the run).
        batch, stages_per_step, lr: the optimisation (each step scores a random subset of stages).
        rd_lambdas: grouped models: the rate weights of the model's qualities (crops are coded
            at each in turn).
    """
    run_dir = Path(run)
    run_dir.mkdir(parents=True, exist_ok=True)
    model = VQImageModel(config)
    state_path = run_dir / "prior_state.pt"
    step, cpu0, wall0 = 0, 0.0, 0.0
    opt = torch.optim.Adam(model.prior.parameters(), lr=lr)
    if state_path.exists():
        st = torch.load(state_path, weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, cpu0, wall0 = st["step"], st["cpu_s"], st["wall_s"]
    else:
        ae = torch.load(autoencoder_state, weights_only=True)["model"]
        # The prior starts fresh: whatever prior the autoencoder run carried is untrained.
        ae = {k: v for k, v in ae.items() if not k.startswith("prior.")}
        missing, unexpected = model.load_state_dict(ae, strict=False)
        assert all(k.startswith("prior.") for k in missing) and not unexpected
        # Start each stage's scale at the size of its codewords.
        with torch.no_grad():
            books = (model.quantizer.codebooks if config.num_groups
                     else [vq.codebook for vq in model.quantizer.stages])
            for s, book in enumerate(books):
                model.prior.stage_log_scale[s] = book.pow(2).mean().sqrt().clamp_min(1e-6).log()
    for g in opt.param_groups:
        g["lr"] = lr
    cache = run_dir / "prior_crops.pt"
    if cache.exists():
        data = torch.load(cache, weights_only=True)
    else:
        data = {"train": encode_crops(model, load_training_images(train), crop=crop,
                                      count=num_crops, seed=1, rd_lambdas=rd_lambdas),
                "val": encode_crops(model, load_training_images(val), crop=crop,
                                    count=min(64, num_crops), seed=2, rd_lambdas=rd_lambdas)}
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
        bits = prior_bits_per_stage(model, data["val"])
        model.prior.train()
        cum = bits.cumsum(0)
        stride2 = config.stride ** 2
        row = " ".join(f"s{n}:{cum[n - 1].item() / stride2:.4f}bpp({cum[n - 1].item() / (n * config.bits_per_code):.3f})"
                       for n in (2, 4, 8, 12, 16, 20, 24) if n <= s_total)
        print(f"EVAL step {step} cpu {cpu0 + time.process_time() - t_cpu:.0f}s per-stage "
              + " ".join(f"{b:.2f}" for b in bits.tolist()) + " | " + row, file=log, flush=True)

    def take_step() -> float:
        pick = torch.randint(0, len(data["train"]), (batch,), generator=rng)
        idx = data["train"][pick].long()
        stages = torch.randperm(s_total, generator=rng)[:min(stages_per_step, s_total)].sort().values
        bits = -latent_codec(model).forward(idx, stages).mean()
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


def train_grouped_codebooks(*, run: str, train: list[str], config: ImageModelConfig,
                            rd_lambda: float, crop: int = 128, pca_crops: int = 1000,
                            codebook_crops: int = 3000, iters: int = 12) -> None:
    """Build a grouped model's transform and quantizer (vqimage-v3): the block PCA of training
    crops, then entropy-constrained codebooks on the latents of other crops. Writes
    `<run>/state.pt` (step 0), which `train_prior` continues from.

    Args:
        run: run folder.
        train: image folders or files.
        config: a model config with num_groups > 0, linear_path and no conv path.
        rd_lambda: the rate weight the codebooks are designed for (latent units).
        crop, pca_crops, codebook_crops: how many random crops of what size feed each step.
        iters: Lloyd iterations per codebook.
    """
    if not (config.num_groups and config.autoencoder.linear_path
            and not config.autoencoder.encoder_conv):
        raise ValueError("train_grouped_codebooks needs a grouped, PCA-only model config")
    run_dir = Path(run)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    t_wall, t_cpu = time.time(), time.process_time()
    log = open(run_dir / "log.txt", "a")
    model = VQImageModel(config)
    images = load_training_images(train)
    explained = init_linear_path_from_pca(
        model.encoder, model.decoder, CropSampler(images, crop, seed=12345).batch(pca_crops))
    print(f"PCA: {explained:.4%} of patch variance kept", file=log, flush=True)
    sampler = CropSampler(images, crop, seed=54321)
    with torch.no_grad():
        latents = torch.cat([model.encoder(sampler.batch(min(100, codebook_crops - i)))
                             for i in range(0, codebook_crops, 100)])
    latents = latents.permute(0, 2, 3, 1).reshape(-1, config.autoencoder.latent_dim)
    train_codebooks(model.quantizer, latents, rd_lambda=rd_lambda, iters=iters, log=log)
    cpu_s, wall_s = time.process_time() - t_cpu, time.time() - t_wall
    print(f"codebooks done: {len(latents)} vectors, {cpu_s:.0f} CPU s", file=log, flush=True)
    torch.save({"model": model.state_dict(), "step": 0, "cpu_s": cpu_s, "wall_s": wall_s},
               run_dir / "state.pt")


def train_decoder_filter(*, run: str, train: list[str], val: list[str], minutes: float,
                         rd_lambdas: list[float], lr: float = 2e-4, batch: int = 16,
                         crop: int = 128, val_crop: int = 256, log_every: int = 50,
                         eval_every_s: float = 300, max_steps: int | None = None) -> None:
    """Train a grouped model's decoder conv path as a post-filter: the encoder, codebooks and
    inverse PCA stay fixed; the conv path learns to remove what quantization left (block
    edges, lost texture) from decoded latents. Each batch is coded at one of `rd_lambdas`.

    Reads and updates `<run>/state.pt` (resumable; its filter_* entries hold the progress).
    The indices do not change, so this can run beside `train_prior`.
    """
    run_dir = Path(run)
    state_path = run_dir / "state.pt"
    config = ImageModelConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    model = VQImageModel(config)
    st = torch.load(state_path, weights_only=True)
    missing, unexpected = model.load_state_dict(st["model"], strict=False)
    assert not unexpected and all(k.startswith(("decoder.net.", "prior.")) for k in missing)
    net = model.decoder.net
    if net is None:
        raise ValueError("this model has no decoder conv path to train")
    if any(k.startswith("decoder.net.") for k in missing):  # fresh filter: start as identity
        with torch.no_grad():
            net[-2].weight.zero_()
            net[-2].bias.zero_()
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.99))
    if "filter_opt" in st:
        opt.load_state_dict(st["filter_opt"])
    step, cpu0 = st.get("filter_step", 0), st.get("filter_cpu_s", 0.0)
    for g in opt.param_groups:
        g["lr"] = lr
    sampler = CropSampler(load_training_images(train), crop, seed=1000 + step)
    val_x = center_crops([im for im in load_training_images(val)[:48]
                          if min(im.shape[1:]) >= val_crop][:16], val_crop)
    val_lambda = rd_lambdas[len(rd_lambdas) // 2]
    with torch.no_grad():
        val_zq = model.quantizer.decode(model.encode(val_x, None, val_lambda))
        val_base = psnr(model.decoder.linear(val_zq).add(1).div(2).clamp(0, 1), val_x).mean()
    log = open(run_dir / "filter_log.txt", "a")
    t_cpu = time.process_time()
    rng = random.Random(step)

    def save() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({**st, "model": model.state_dict(), "filter_opt": opt.state_dict(),
                    "filter_step": step,
                    "filter_cpu_s": cpu0 + time.process_time() - t_cpu}, tmp)
        os.replace(tmp, state_path)

    def evaluate() -> None:
        net.eval()
        with torch.no_grad():
            out = psnr(model.decoder(val_zq).clamp(0, 1), val_x).mean()
        net.train()
        print(f"EVAL step {step} cpu {cpu0 + time.process_time() - t_cpu:.0f}s val psnr "
              f"{out:.3f} (inverse PCA alone {val_base:.3f}, rate weight {val_lambda:.5f})",
              file=log, flush=True)

    def take_step() -> float:
        x = sampler.batch(batch)
        with torch.no_grad():
            zq = model.quantizer.decode(model.encode(x, None, rng.choice(rd_lambdas)))
        loss = F.mse_loss(model.decoder(zq), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    def log_line(at: int, means) -> str:
        return (f"step {at} cpu {cpu0 + time.process_time() - t_cpu:.0f}s "
                f"psnr~{10 * math.log10(1 / means[0]):.2f}")

    def checkpoint(at: int) -> None:
        nonlocal step
        step = at
        evaluate()
        save()

    net.train()
    run_steps(step=step, minutes=minutes, max_steps=max_steps, take_step=take_step,
              log_line=log_line, checkpoint=checkpoint, log=log, log_every=log_every,
              eval_every_s=eval_every_s)
