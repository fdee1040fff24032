"""Image recipes on CPU (or CUDA): autoencoder + quantizer then prior (vqimage-v2), or block
PCA + grouped codebooks, post-filter and prior (vqimage-v3).

Every job is resumable in its run folder (`loop.TrainingRun`); the prior job is shared with
audio (`prior.fit_prior`).
"""
from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from ..coding import latent_codec
from ..errors import TrainingError
from ..eval.metrics import psnr
from ..nn.grouped_rvq import train_codebooks
from ..nn.image_autoencoder import init_linear_path_from_pca
from ..nn.image_model import GROUPED_RUN_CONFIG, V4_RUN_CONFIG, ImageModelConfig, VQImageModel
from .data import CropSampler, load_training_images, validation_crops
from .loop import TrainingRun, read_run_config, single_process, write_run_config
from .prior import fit_prior

EVAL_STAGES = (2, 4, 8, 12, 16, 20, 24)
# What `vqcodec train image-codebooks --design` builds.
GROUPED_DESIGNS = {"v3": GROUPED_RUN_CONFIG, "v4": V4_RUN_CONFIG}  # stage counts reported in EVAL lines (those <= S)


def train_autoencoder(*, run: str, train: list[str], val: list[str],
                      config: ImageModelConfig | None = None, minutes: float,
                      batch: int = 16, crop: int = 128, lr: float = 4e-4,
                      commit_weight: float = 0.25, log_every: int = 50,
                      eval_every_s: float = 300, device: str = "cpu",
                      max_steps: int | None = None, val_crop: int = 256,
                      init_from: str | None = None, pca_crops_count: int = 512,
                      linear_lr_scale: float = 0.1) -> None:
    """Train encoder, decoder and residual quantizer on random crops, for `minutes` of wall time
    (or `max_steps` more steps), resuming from `<run>/state.pt` when it exists.

    Args:
        run: run folder (state.pt, config.json, log.txt).
        train: image folders or files for training; val: the same for validation.
        config: model sizes (written to config.json); None: the run's config.json, or for a
            new run `init_from`'s config or the config new runs start from.
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
    job = TrainingRun(run, device=device)
    device, part = job.device, job.shard(batch)  # under torchrun: this process's GPU, shard
    if config is None:
        config = read_run_config(run, "image")
        if init_from and not job.resumed:
            from ..zoo.registry import load_model
            config = load_model(init_from).model.config
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
    if job.resumed:
        model.load_state_dict(job.state["model"])
    elif init_from:
        from ..zoo.registry import load_model
        shipped = load_model(init_from, device=device)
        model.load_state_dict(shipped.model.state_dict())
        job.continue_from(step=shipped.training.get("autoencoder_steps", 0),
                          cpu_s=shipped.training.get("autoencoder_cpu_s", 0.0),
                          wall_s=shipped.training.get("autoencoder_wall_s", 0.0))
    job.restore_optimizer(opt, lr=lr)
    write_run_config(run, config)
    train_images = load_training_images(train)
    sampler = CropSampler(train_images, crop, seed=job.step)
    val_x = validation_crops(load_training_images(val), size=val_crop, count=24).to(device)

    def evaluate() -> str:
        model.eval()
        with torch.no_grad():
            idx = model.encode(val_x)
            stride2 = config.stride ** 2
            row = []
            for n in EVAL_STAGES:
                if n <= config.num_stages:
                    p = psnr(model.decode(idx[:, :n]), val_x).mean().item()
                    row.append(f"s{n}:{p:.2f}dB@{n * config.bits_per_code / stride2:.3f}bpp")
        model.train()
        return " ".join(row)

    def take_step() -> tuple[float, float]:
        x = sampler.batch(batch, part).to(device)
        y, _, commit = model(x)
        mse = F.mse_loss(y, x)
        loss = mse + commit_weight * commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        job.average_gradients(opt)
        opt.step()
        return mse.item(), commit.item()

    def describe(means) -> str:
        return (f"mse {means[0]:.5f} psnr~{10 * math.log10(1 / means[0]):.2f} "
                f"commit {means[1]:.5f}")

    with job:
        if job.step == 0 and config.autoencoder.linear_path:
            pca_crops = CropSampler(train_images, crop, seed=12345).batch(pca_crops_count)
            explained = init_linear_path_from_pca(model.encoder, model.decoder,
                                                  pca_crops.to(device))
            job.log(f"PCA init of the linear path: {explained:.4%} of patch variance kept")
        model.train()
        job.train(model=model, optimizer=opt, take_step=take_step, describe=describe,
                  evaluate=evaluate, minutes=minutes, max_steps=max_steps,
                  log_every=log_every, eval_every_s=eval_every_s)


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


def train_prior(*, run: str, train: list[str], val: list[str], minutes: float,
                autoencoder_state: str | None = None, config: ImageModelConfig | None = None,
                crop: int = 256, num_crops: int = 1600, batch: int = 8,
                stages_per_step: int = 6, lr: float = 1e-3,
                log_every: int = 50, eval_every_s: float = 300,
                max_steps: int | None = None, rd_lambdas: list[float] | None = None,
                init_prior_from: str | None = None) -> None:
    """Train the prior on indices of a frozen autoencoder (crops are encoded once, up front).

    Resumes from `<run>/prior_state.pt`; otherwise starts from the autoencoder state file.

    Args:
        run: run folder.
        train, val: image folders or files.
        autoencoder_state: the state file written by `train_autoencoder` or
            `train_grouped_codebooks` (default `<run>/state.pt`).
        config: the model config the autoencoder was trained with (default: the run's).
        minutes: wall-clock budget; max_steps: or this many steps (tests).
        crop, num_crops: size and number of training crops encoded once (cached in the run).
        batch, stages_per_step, lr: the optimisation (each step scores a random subset of stages).
        rd_lambdas: grouped models: the rate weights of the model's qualities (crops are coded
            at each in turn); default the config's ladder (`quality_lambdas`).
        init_prior_from: a grouped model (file or shipped name) whose prior a new job starts
            from where the two models share components (`transfer_grouped_prior`).
    """
    config = read_run_config(run, "image") if config is None else config
    if config.num_groups and rd_lambdas is None:
        rd_lambdas = config.quality_lambdas
    model = VQImageModel(config)
    s_total = config.num_stages

    def start_scales() -> None:
        # Start each stage's scale at the size of its codewords.
        with torch.no_grad():
            books = (model.quantizer.codebooks if config.num_groups
                     else [vq.codebook for vq in model.quantizer.stages])
            for s, book in enumerate(books):
                model.prior.stage_log_scale[s] = book.pow(2).mean().sqrt().clamp_min(1e-6).log()
        if init_prior_from:
            from ..zoo.registry import load_model
            transfer_grouped_prior(model, load_model(init_prior_from).model)

    def encode_index_sets() -> dict[str, torch.Tensor]:
        return {"train": encode_crops(model, load_training_images(train), crop=crop,
                                      count=num_crops, seed=1, rd_lambdas=rd_lambdas),
                "val": encode_crops(model, load_training_images(val), crop=crop,
                                    count=min(64, num_crops), seed=2, rd_lambdas=rd_lambdas)}

    def log2_likelihoods(indices: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        # Each step scores a random subset of the stages (fewer prior passes per step).
        picked = torch.randperm(s_total, generator=rng)[:min(stages_per_step, s_total)]
        stages = picked.sort().values
        return latent_codec(model).forward(indices.long(), stages)

    def evaluate(val_indices: torch.Tensor) -> str:
        bits = prior_bits_per_stage(model, val_indices)
        model.prior.train()
        cum = bits.cumsum(0)
        stride2 = config.stride ** 2
        row = " ".join(f"s{n}:{cum[n - 1].item() / stride2:.4f}bpp"
                       f"({cum[n - 1].item() / (n * config.bits_per_code):.3f})"
                       for n in EVAL_STAGES if n <= s_total)
        return "per-stage " + " ".join(f"{b:.2f}" for b in bits.tolist()) + " | " + row

    fit_prior(model, run=run, autoencoder_state=autoencoder_state or Path(run) / "state.pt",
              index_cache="prior_crops.pt",
              encode_index_sets=encode_index_sets, log2_likelihoods=log2_likelihoods,
              evaluate=evaluate, minutes=minutes, max_steps=max_steps, batch=batch, lr=lr,
              log_every=log_every, eval_every_s=eval_every_s, warm_start=start_scales)


@torch.no_grad()
def shared_component_signs(model: VQImageModel, donor: VQImageModel) -> torch.Tensor:
    """[donor's D]: +1 or -1 where `model`'s PCA component equals the donor's up to sign,
    0 where it differs (the two transforms were fitted to other crops)."""
    d_old = donor.quantizer.dim
    w_new = model.encoder.linear.weight.flatten(1)[:d_old]
    w_old = donor.encoder.linear.weight.flatten(1).to(w_new)
    cos = (w_new * w_old).sum(1) / (w_new.norm(dim=1) * w_old.norm(dim=1))
    return torch.where(cos.abs() > 0.99, cos.sign(), torch.zeros_like(cos))


@torch.no_grad()
def transfer_decoder_filter(model: VQImageModel, donor: VQImageModel) -> None:
    """Start `model`'s post-filter as `donor`'s: same layers, the first one reading the
    shared PCA components (sign-aligned) and ignoring the rest at first."""
    new, old = model.decoder.net, donor.decoder.net
    sign = shared_component_signs(model, donor)
    first_new, first_old = new[0].weight, old[0].weight.to(new[0].weight)
    if first_new.shape[0] != first_old.shape[0] or len(new) != len(old):
        raise TrainingError("the donor post-filter does not fit this model")
    first_new.zero_()
    first_new[:, :len(sign)] = first_old * sign[None, :, None, None]
    new[0].bias.copy_(old[0].bias)
    for a, b in zip(list(new)[1:], list(old)[1:]):
        a.load_state_dict(b.state_dict())


@torch.no_grad()
def transfer_grouped_prior(model: VQImageModel, donor: VQImageModel) -> int:
    """Start `model`'s grouped prior from `donor`'s where they overlap: a wider PCA whose
    leading components are the donor's (same training crops: vqimage-v4 from v3).

    The trunk is copied; stem inputs of the shared components are copied with the sign of
    each PCA component aligned (eigenvectors are defined up to sign); each shared group's
    code embeddings and biases come from the donor's nearest codeword of the same round and
    group. The remaining groups start as their codebooks' static rates (`code_bits`). Returns the number of
    PCA components shared.
    """
    prior, old = model.prior, donor.prior
    d_new, d_old = model.quantizer.dim, donor.quantizer.dim
    g_old, gd = donor.quantizer.num_groups, donor.quantizer.group_dim
    if (gd != model.quantizer.group_dim or d_old > d_new or old.code_embedding.shape[-1]
            != prior.code_embedding.shape[-1] or prior.blocks[0].conv1.weight.shape
            != old.blocks[0].conv1.weight.shape or model.config.num_stages
            != donor.config.num_stages or model.quantizer.num_codes != donor.quantizer.num_codes):
        raise TrainingError("the donor prior does not fit this model")
    sign = shared_component_signs(model, donor)
    shared = int((sign != 0).sum())
    stem_new, stem_old = prior.stem.weight, old.stem.weight.to(prior.stem.weight)
    stem_new.zero_()
    stem_new[:, :d_old] = stem_old[:, :d_old] * sign[None, :, None, None]
    stem_new[:, d_new:d_new + d_old] = stem_old[:, d_old:2 * d_old] * sign[None, :, None, None]
    stem_new[:, 2 * d_new] = stem_old[:, 2 * d_old]
    prior.stem.bias.copy_(old.stem.bias)
    prior.stage_log_scale.copy_(old.stage_log_scale)
    prior.stage_embedding.load_state_dict(old.stage_embedding.state_dict())
    prior.blocks.load_state_dict(old.blocks.state_dict())
    f = prior.code_embedding.shape[-1]
    prior.head.weight[:g_old * f] = old.head.weight
    prior.head.bias[:g_old * f] = old.head.bias
    # Groups the donor does not have start as the static rates of their codebooks: no
    # features (zero head rows; the random code embeddings still give them a gradient).
    prior.head.weight[g_old * f:] = 0
    prior.head.bias[g_old * f:] = 0
    prior.code_bias.copy_(-model.quantizer.code_bits * math.log(2))
    group_sign = sign.view(g_old, gd)
    for s in range(model.config.num_stages):
        for g in range(g_old):
            if (group_sign[g] == 0).any():
                continue
            new_book = model.quantizer.codebooks[s, g] * group_sign[g]
            old_book = donor.quantizer.codebooks[s, g].to(new_book)
            nearest = torch.cdist(new_book, old_book).argmin(1)
            prior.code_embedding[s, g] = old.code_embedding[s, g, nearest]
            prior.code_bias[s, g] = old.code_bias[s, g, nearest]
    return shared


def train_grouped_codebooks(*, run: str, train: list[str], rd_lambda: float,
                            config: ImageModelConfig = GROUPED_RUN_CONFIG, crop: int = 128,
                            pca_crops: int = 1000,
                            codebook_crops: int = 3000, iters: int = 12,
                            seed: int = 0) -> None:
    """Build a grouped model's transform and quantizer (vqimage-v3): the block PCA of training
    crops, then entropy-constrained codebooks on the latents of other crops. Writes
    `<run>/state.pt` (step 0), which `train_prior` and `train_decoder_filter` continue from.

    Args:
        run: a new run folder.
        train: image folders or files.
        rd_lambda: the rate weight the codebooks are designed for (latent units).
        config: a model config with num_groups > 0, linear_path and no conv path (default:
            the config new grouped runs start from).
        crop, pca_crops, codebook_crops: how many random crops of what size feed each step.
        iters: Lloyd iterations per codebook.

    Raises:
        TrainingError: the config is not a grouped PCA-only one, or the run has a state.
    """
    if not (config.num_groups and config.autoencoder.linear_path
            and not config.autoencoder.encoder_conv):
        raise TrainingError("train_grouped_codebooks needs a grouped, PCA-only model config")
    # Its Lloyd iterations see all latents at once: no step loop to shard.
    single_process("image-codebooks")
    job = TrainingRun(run)
    if job.state:
        raise TrainingError(f"{run} already has a state.pt; use a new run folder")
    write_run_config(run, config)
    with job:
        model = VQImageModel(config)
        images = load_training_images(train)
        explained = init_linear_path_from_pca(
            model.encoder, model.decoder, CropSampler(images, crop, seed=12345).batch(pca_crops))
        job.log(f"PCA: {explained:.4%} of patch variance kept")
        sampler = CropSampler(images, crop, seed=54321)
        with torch.no_grad():
            latents = torch.cat([model.encoder(sampler.batch(min(100, codebook_crops - i)))
                                 for i in range(0, codebook_crops, 100)])
        latents = latents.permute(0, 2, 3, 1).reshape(-1, config.autoencoder.latent_dim)
        train_codebooks(model.quantizer, latents, rd_lambda=rd_lambda, iters=iters,
                        seed=seed, log=job.log_stream)
        job.log(f"codebooks done: {len(latents)} vectors, {job.elapsed()[1]:.0f} CPU s")
        job.save(model, None)


def start_prior_run(run: str, base: str, *, width: int | None = None,
                    depth: int | None = None) -> None:
    """A new prior run on the frozen autoencoder and quantizer of the grouped model `base`
    (file or shipped name), with a fresh prior of another size (`width` channels, `depth`
    residual blocks; None: `base`'s): what `train_prior` then trains, on `base`'s transform
    and ladder.

    Raises:
        TrainingError: the run already has a config, or `base` is not a grouped image model.
    """
    from ..zoo.registry import PRIOR_PREFIXES, load_model
    single_process("image-prior --from-model")
    if (Path(run) / "config.json").exists():
        raise TrainingError(f"{run} already holds a run; use a new run folder")
    loaded = load_model(base)
    loaded.require_kind("image")
    old = loaded.model
    if not old.config.num_groups:
        raise TrainingError(f"{base} is not a grouped image model")
    config = dataclasses.replace(old.config, prior_width=width or old.config.prior_width,
                                 prior_depth=depth or old.config.prior_depth)
    weights = {k: v for k, v in old.state_dict().items()
               if not k.startswith(PRIOR_PREFIXES)}
    # The base's own training record travels with its weights (export reports it).
    record = {"step": loaded.training.get("autoencoder_steps", 0),
              "cpu_s": loaded.training.get("autoencoder_cpu_s", 0.0),
              "wall_s": loaded.training.get("autoencoder_wall_s", 0.0)}
    if "filter_steps" in loaded.training:
        record.update(filter_step=loaded.training["filter_steps"],
                      filter_cpu_s=loaded.training["filter_cpu_s"])
    write_run_config(run, config)
    torch.save({"model": weights, "base": loaded.name, **record}, Path(run) / "state.pt")


def start_filter_run(run: str, base: str) -> None:
    """A new post-filter run whose model is the grouped model `base` (file or shipped name)
    with a decoder that also reads the quantizer's rate map (`rate_channels` = its groups).
    The map's input weights start at zero, so the run starts as `base`'s filter exactly;
    `train_decoder_filter` continues it. The integer prior is not part of a run: `export_
    filter_model` takes it from `base` again.

    Raises:
        TrainingError: the run already has a state, or `base` is not a grouped image model.
    """
    from ..zoo.registry import load_model
    single_process("image-filter --from-model")
    job = TrainingRun(run)
    if job.state:
        raise TrainingError(f"{run} already has a state.pt; use a new run folder")
    loaded = load_model(base)
    loaded.require_kind("image")
    old = loaded.model
    if not old.config.num_groups or old.decoder.net is None:
        raise TrainingError(f"{base} is not a grouped image model with a post-filter")
    config = dataclasses.replace(old.config, autoencoder=dataclasses.replace(
        old.config.autoencoder, rate_channels=old.config.num_groups))
    model = VQImageModel(config)
    model.load_state_dict({k: v for k, v in old.state_dict().items()
                           if not k.startswith(("integer_prior.", "decoder.net."))}, strict=False)
    transfer_decoder_filter(model, old)  # the first layer's extra (map) inputs start at zero
    write_run_config(run, config)
    with job:
        job.log(f"start: {base}'s weights, its post-filter reading the rate map too")
        job.save(model, None)


def export_filter_model(run: str, base: str, output: str, *, name: str) -> None:
    """Write `base` (a grouped image model, file or shipped name) with the post-filter of
    `run` (`start_filter_run` + `train_decoder_filter`) as model `name`: every other weight,
    the integer prior and the rate settings are `base`'s, so its indices, tables and file
    sizes are too; only the decoded pictures change.

    Raises:
        TrainingError: the run's model differs from `base` outside the post-filter.
    """
    from ..zoo.registry import load_model, save_model
    single_process("export-filter")
    loaded = load_model(base)
    job = TrainingRun(run, log_file="filter_log.txt", prefix="filter_")
    config = read_run_config(run, "image")
    model = VQImageModel(config)
    model.load_state_dict(job.state["model"])
    old = loaded.model.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("decoder.net.") and not torch.equal(value, old[key].to(value)):
            raise TrainingError(f"{run}'s {key} is not {base}'s: export it with `export`")
    model.integer_prior = loaded.model.integer_prior
    training = {**loaded.training, "filter_base": loaded.name, "filter_steps": job.step,
                "filter_cpu_s": round(job.state.get("filter_cpu_s", 0.0), 1)}
    save_model(model.eval(), output, name=name, qualities=loaded.qualities,
               default_quality=loaded.default_quality, training=training)


def train_decoder_filter(*, run: str, train: list[str], val: list[str], minutes: float,
                         rd_lambdas: list[float] | None = None, lr: float = 2e-4,
                         batch: int = 16,
                         crop: int = 128, val_crop: int = 256, log_every: int = 50,
                         eval_every_s: float = 300, max_steps: int | None = None,
                         init_filter_from: str | None = None) -> None:
    """Train a grouped model's decoder conv path as a post-filter: the encoder, codebooks and
    inverse PCA stay fixed; the conv path learns to remove what quantization left (block
    edges, lost texture) from decoded latents. Each batch is coded at one of `rd_lambdas`.

    Reads and updates `<run>/state.pt` (resumable; its filter_* entries hold the progress).
    The indices do not change, so this can run beside `train_prior`. `init_filter_from`: a
    grouped model whose post-filter a new job starts from (`transfer_decoder_filter`).

    Raises:
        TrainingError: the run has no grouped model state, or its model has no conv path.
    """
    job = TrainingRun(run, log_file="filter_log.txt", prefix="filter_")
    if "model" not in job.state or not (job.folder / "config.json").exists():
        raise TrainingError(f"{run} has no model state: build it with image-codebooks first")
    config = read_run_config(run, "image")
    rd_lambdas = config.quality_lambdas if rd_lambdas is None else rd_lambdas
    model = VQImageModel(config)
    missing, unexpected = model.load_state_dict(job.state["model"], strict=False)
    if unexpected or not all(k.startswith(("decoder.net.", "prior.")) for k in missing):
        raise TrainingError(f"{job.state_path} does not fit the run's config.json")
    net = model.decoder.net
    if net is None:
        raise TrainingError("this model has no decoder conv path to train")
    if any(k.startswith("decoder.net.") for k in missing):  # fresh filter: start as identity
        with torch.no_grad():
            net[-2].weight.zero_()
            net[-2].bias.zero_()
    if init_filter_from and job.step == 0:
        from ..zoo.registry import load_model
        transfer_decoder_filter(model, load_model(init_filter_from).model)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.99))
    job.restore_optimizer(opt, lr=lr)
    part = job.shard(batch)
    sampler = CropSampler(load_training_images(train), crop, seed=1000 + job.step)
    val_x = validation_crops(load_training_images(val), size=val_crop, count=16)
    val_lambda = rd_lambdas[len(rd_lambdas) // 2]
    with torch.no_grad():
        val_idx = model.encode(val_x, None, val_lambda)
        val_zq = model.quantizer.decode(val_idx)
        val_base = psnr(model.decoder.linear(val_zq).add(1).div(2).clamp(0, 1), val_x).mean()
    rng = random.Random(job.step)  # which rate weight each batch is coded at

    def evaluate() -> str:
        net.eval()
        with torch.no_grad():
            out = psnr(model.reconstruct(val_idx).clamp(0, 1), val_x).mean()
        net.train()
        return (f"val psnr {out:.3f} (inverse PCA alone {val_base:.3f}, "
                f"rate weight {val_lambda:.5f})")

    def take_step() -> float:
        x = sampler.batch(batch, part)
        with torch.no_grad():
            idx = model.encode(x, None, rng.choice(rd_lambdas))
        loss = F.mse_loss(model.reconstruct(idx), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        job.average_gradients(opt)
        opt.step()
        return loss.item()

    net.train()
    with job:
        job.train(model=model, optimizer=opt, take_step=take_step,
                  describe=lambda means: f"psnr~{10 * math.log10(1 / means[0]):.2f}",
                  evaluate=evaluate, minutes=minutes, max_steps=max_steps,
                  log_every=log_every, eval_every_s=eval_every_s)
