"""The refinement filter (`nn.refinement_filter`, format version 8): its training examples,
training and export.

    vqcodec train refinement-examples ../shared/data/images/bsds500/train EXAMPLES
    vqcodec train refinement-filter RUN --examples EXAMPLES --val VAL_EXAMPLES
    vqcodec train export-refinement-filter RUN OUT.safetensors

An example is one photo: the original, the default model's picture at the refinement's base
quality, and that picture refined at each of `EXAMPLE_STEPS` (deblocked, as a version 7
decoder returns it), in one .npz. Training takes random crops aligned to the 8x8 block grid
(the filter sees each pixel's place in its block) at a random step and minimises the squared
error against the original.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..coding.refinement import BLOCK, encode_refinement
from ..errors import TrainingError
from ..eval.metrics import psnr
from ..io.image import as_rgb, load_image
from ..nn.refinement_filter import (RefinementFilter, RefinementFilterConfig,
                                    restore_picture)
from ..pipelines.image import image_to_indices, image_to_tensor, indices_to_image
from ..zoo.filters import save_refinement_filter
from ..zoo.registry import DEFAULT_IMAGE_MODEL, IMAGE_REFINEMENT_BASE, load_model
from .data import media_files
from .loop import TrainingRun, single_process

# Steps of the examples: the shipped ladder's (56 .. 14) and coarser ones, which a filtered
# refinement may reach at rates where the quantizer's rungs stand today.
EXAMPLE_STEPS = (80, 72, 64, 60, 56, 52, 48, 40, 32, 26, 21, 17, 14)
# The shipped filter's training steps (its model card); the cosine schedule ends there.
TOTAL_STEPS = 6000


def make_examples(paths: list[str], out: str | Path, *, model: str = DEFAULT_IMAGE_MODEL,
                  steps: tuple[int, ...] = EXAMPLE_STEPS, rank: int = 0,
                  world: int = 1) -> int:
    """Write one example (.npz) per photo into `out`; photos whose example exists are
    skipped (resumable), and of the photos this call takes every `world`-th from `rank`
    (several processes side by side). Returns how many it wrote.

    Args:
        paths: photo folders (searched recursively) and files.
        out: the examples' folder.
        model: the image model whose base pictures are refined.
        steps: refinement steps.
        rank, world: this process's share of the photos.
    """
    loaded = load_model(model)
    net, device = loaded.model, torch.device("cpu")
    stages, rd_lambda = loaded.rate_for_quality(IMAGE_REFINEMENT_BASE)
    photos = sorted(media_files(paths, "image"))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for i, path in enumerate(photos):
        target = folder / f"{path.stem}.npz"
        if i % world != rank or target.exists():
            continue
        original = as_rgb(load_image(path))
        indices = image_to_indices(net, original, stages, rd_lambda, device)
        base = indices_to_image(net, indices, 3, *original.shape[:2], device)
        refined = np.stack([encode_refinement(original, base, float(s))[2] for s in steps])
        tmp = folder / f"{path.stem}.tmp.npz"
        np.savez(tmp, original=original, base=base, refined=refined,
                 steps=np.array(steps, dtype=np.float64))
        os.replace(tmp, target)
        written += 1
    return written


def load_examples(folder: str | Path) -> list[dict[str, np.ndarray]]:
    """The examples (`make_examples`) of a folder.

    Raises:
        TrainingError: it holds none.
    """
    files = sorted(Path(folder).glob("*.npz"))
    files = [f for f in files if not f.name.endswith(".tmp.npz")]
    if not files:
        raise TrainingError(f"no refinement examples (.npz) in {folder}")
    examples = []
    for f in files:
        with np.load(f, allow_pickle=False) as d:
            examples.append({k: d[k] for k in ("original", "base", "refined", "steps")})
    return examples


def _crops(examples: list[dict[str, np.ndarray]], batch: int, crop: int,
           rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """A batch of block-aligned crops: (refined, base, original) [B, 3, crop, crop] and the
    steps [B]."""
    refined, base, original, steps = [], [], [], []
    for _ in range(batch):
        d = examples[rng.integers(len(examples))]
        k = rng.integers(len(d["steps"]))
        h, w = d["original"].shape[:2]
        top = BLOCK * rng.integers((h - crop) // BLOCK + 1)
        left = BLOCK * rng.integers((w - crop) // BLOCK + 1)
        window = (slice(top, top + crop), slice(left, left + crop))
        refined.append(d["refined"][k][window])
        base.append(d["base"][window])
        original.append(d["original"][window])
        steps.append(float(d["steps"][k]))

    def planes(pictures):
        return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float()

    return planes(refined), planes(base), planes(original), torch.tensor(steps)


def filter_gains(net: RefinementFilter, examples: list[dict[str, np.ndarray]]
                 ) -> dict[float, tuple[float, float]]:
    """Mean PSNR (RGB, dB) over the examples at each step: (refined, restored)."""
    sums: dict[float, list[float]] = {}
    cpu = torch.device("cpu")

    def planes(picture: np.ndarray) -> torch.Tensor:  # psnr's input; float64 sums as before
        return image_to_tensor(picture, 1, cpu).double()

    for d in examples:
        original = planes(d["original"])
        for k, step in enumerate(d["steps"]):
            restored = restore_picture(net, d["refined"][k], d["base"], float(step))
            for j, picture in enumerate((d["refined"][k], restored)):
                sums.setdefault(float(step), [0.0, 0.0])[j] += float(
                    psnr(planes(picture), original)[0])
    return {s: (a / len(examples), b / len(examples)) for s, (a, b) in sorted(sums.items())}


def train_refinement_filter(*, run: str, examples: str, val: str, minutes: float,
                            max_steps: int | None = None, total_steps: int = TOTAL_STEPS,
                            lr: float = 1e-3, batch: int = 16, crop: int = 64,
                            config: RefinementFilterConfig = RefinementFilterConfig(),
                            seed: int = 0) -> None:
    """Train a refinement filter (resumable: `<run>/state.pt`).

    Args:
        run: the run folder.
        examples, val: folders of training and validation examples.
        minutes, max_steps: the budget of this call; training also stops at `total_steps`.
        total_steps: the learning rate falls from `lr` to 0 over these steps (cosine), and
            the run ends there.
        lr, batch, crop: Adam's learning rate, crops per step, their side (a multiple of 8).
        config: the filter's size (a new run's; a resumed run keeps its own).
        seed: of the crops (a resumed run draws on from a seed of its step).
    """
    single_process("refinement-filter")
    if crop % BLOCK:
        raise TrainingError(f"crop must be a multiple of {BLOCK}, got {crop}")
    job = TrainingRun(run)
    if "config" in job.state:
        config = RefinementFilterConfig(**job.state["config"])
    net = RefinementFilter(config=config)
    if "model" in job.state:
        net.load_state_dict(job.state["model"])
    job.state["config"] = config.to_dict()
    train_set, val_set = load_examples(examples), load_examples(val)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    job.restore_optimizer(optimizer, lr=lr)
    rng = np.random.default_rng([seed, job.step])
    # The schedule ends at total_steps: steps past it would run at learning rate 0.
    left = max(0, total_steps - job.step)
    max_steps = left if max_steps is None else min(max_steps, left)

    def take_step() -> list[float]:
        progress = job.step / total_steps
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * progress))
        refined, base, original, steps = _crops(train_set, batch, crop, rng)
        loss = F.mse_loss(net(refined, base, steps), original)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        job.step += 1
        return [loss.item() / max(F.mse_loss(refined, original).item(), 1e-10)]

    def evaluate() -> str:
        net.eval()
        gains = filter_gains(net, val_set)
        net.train()
        return " ".join(f"{s:g}:{b - a:+.3f}dB" for s, (a, b) in gains.items())

    with job:
        if not job.resumed:
            job.log(f"start: {config.to_dict()}, {len(train_set)} training and "
                    f"{len(val_set)} validation examples")
        job.train(model=net, optimizer=optimizer, take_step=take_step,
                  describe=lambda m: f"mse/refined {m[0]:.4f}", evaluate=evaluate,
                  minutes=minutes, max_steps=max_steps, log_every=100, eval_every_s=900)


def export_refinement_filter(run: str, output: str) -> None:
    """Write the run's filter (`zoo.filters.save_refinement_filter`), with its training
    steps and CPU seconds."""
    job = TrainingRun(run)
    if "model" not in job.state or "config" not in job.state:
        raise TrainingError(f"{run} holds no refinement filter run")
    net = RefinementFilter(config=RefinementFilterConfig(**job.state["config"]))
    net.load_state_dict(job.state["model"])
    save_refinement_filter(net, output, training={
        "steps": job.step, "cpu_s": round(job.state.get("cpu_s", 0.0), 1),
        "wall_s": round(job.state.get("wall_s", 0.0), 1)})
