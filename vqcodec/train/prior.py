"""Training of a prior (image or audio) on the indices of a frozen autoencoder.

The indices are encoded once, up front, and cached in the run folder; each step scores a
batch of them teacher-forced through the model's latent codec (`coding.latent_codec`) and
minimises the bits. What differs between the media is which stages a step scores and what
validation reports; the recipes in `image.py` and `audio.py` pass those in.

The job's state is `<run>/prior_state.pt`, its log `<run>/prior_log.txt`. A new job starts
from the autoencoder's state file, with a fresh prior.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..errors import TrainingError
from ..nn.audio_model import VQAudioModel
from ..nn.image_model import VQImageModel
from .loop import TrainingRun


def load_autoencoder(model: VQImageModel | VQAudioModel, state_file: str | Path) -> None:
    """Load everything but the prior from an autoencoder's state file into `model`.

    The prior starts fresh: whatever prior the autoencoder run carried is untrained.

    Raises:
        TrainingError: the state file does not hold this model's autoencoder.
    """
    if not Path(state_file).exists():
        raise TrainingError(f"no autoencoder state {state_file}: train the autoencoder first")
    weights = torch.load(state_file, weights_only=True)["model"]
    weights = {k: v for k, v in weights.items() if not k.startswith("prior.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    wrong = [k for k in missing if not k.startswith("prior.")] + list(unexpected)
    if wrong:
        raise TrainingError(f"{state_file} does not fit this model config "
                            f"({len(wrong)} weights differ, e.g. {wrong[0]})")


def fit_prior(model: VQImageModel | VQAudioModel, *, run: str | Path,
              autoencoder_state: str | Path, index_cache: str,
              encode_index_sets: Callable[[], dict[str, torch.Tensor]],
              log2_likelihoods: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
              evaluate: Callable[[torch.Tensor], str], minutes: float,
              max_steps: int | None, batch: int, lr: float, log_every: int,
              eval_every_s: float, warm_start: Callable[[], None] | None = None) -> None:
    """Train `model.prior` on cached indices, resuming from `<run>/prior_state.pt`.

    Args:
        model: a freshly built model of the run's config.
        run: the run folder.
        autoencoder_state: the state file a new job takes the autoencoder from.
        index_cache: file name in the run folder for the encoded indices.
        encode_index_sets: encodes {"train": [N, S, ...], "val": [M, S, ...]} int16 indices
            with the model (called once, when the cache is missing).
        log2_likelihoods: (a batch of training indices, the job's generator) -> the
            log2-likelihoods to maximise; the recipe picks the stages scored with the generator.
        evaluate: validation indices -> the text of the EVAL line.
        minutes, max_steps: the budget of this call.
        batch, lr: indices per step, Adam's learning rate.
        log_every, eval_every_s: steps per log line, seconds between checkpoints.
        warm_start: called once after a new job loads the autoencoder (image: initial scales).
    """
    job = TrainingRun(run, state_file="prior_state.pt", log_file="prior_log.txt")
    opt = torch.optim.Adam(model.prior.parameters(), lr=lr)
    if job.resumed:
        model.load_state_dict(job.state["model"])
    else:
        load_autoencoder(model, autoencoder_state)
        if warm_start is not None:
            warm_start()
    job.restore_optimizer(opt, lr=lr)
    part = job.shard(batch)
    cache = job.folder / index_cache
    with job.world.main_first():  # under torchrun rank 0 encodes, the others read its cache
        if cache.exists():
            indices = torch.load(cache, weights_only=True)
        else:
            indices = encode_index_sets()
            torch.save(indices, cache)
    # The draws of a resumed job differ from the first call's but are fixed by the step.
    rng = torch.Generator().manual_seed(job.step)
    train_indices = indices["train"]

    def take_step() -> float:
        # The whole batch's draws on every rank, this rank's shard scored.
        pick = torch.randint(0, len(train_indices), (batch,), generator=rng)[part]
        bits = -log2_likelihoods(train_indices[pick], rng).mean()
        opt.zero_grad(set_to_none=True)
        bits.backward()
        job.average_gradients(opt)
        torch.nn.utils.clip_grad_norm_(model.prior.parameters(), 1.0)
        opt.step()
        return bits.item()

    model.prior.train()
    with job:
        job.train(model=model, optimizer=opt, take_step=take_step,
                  describe=lambda means: f"bits/index {means[0]:.3f}",
                  evaluate=lambda: evaluate(indices["val"]), minutes=minutes,
                  max_steps=max_steps, log_every=log_every, eval_every_s=eval_every_s)

