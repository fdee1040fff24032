"""`vqcodec train ...`: train image and audio models and export them. The recipes live in
`vqcodec.train`; these commands read options and call them (imported inside each command, so
`vqcodec --help` stays quick)."""
from __future__ import annotations

from pathlib import Path

import click

from .options import user_errors


def data_options(media: str):
    """--train and --val (folders or files, repeatable) of a training command; their
    defaults are the ../shared/data split of `media` ("image" or "audio")."""
    def apply(command):
        command = click.option("--val", "val_paths", multiple=True,
                               help=f"Validation {media} folders/files (repeatable).")(command)
        return click.option("--train", "train_paths", multiple=True,
                            help=f"Training {media} folders/files (repeatable); default: the "
                                 f"../shared/data/{media}s split.")(command)
    return apply


def budget_options(*, minutes: float, lr: float, batch: int | None = None):
    """--minutes, --lr and (with a default) --batch of a training command."""
    def apply(command):
        if batch is not None:
            command = click.option("--batch", type=int, default=batch, show_default=True)(command)
        command = click.option("--lr", type=float, default=lr, show_default=True)(command)
        return click.option("--minutes", type=float, default=minutes, show_default=True,
                            help="Wall-clock budget of this call.")(command)
    return apply


def _image_split(train_paths: tuple[str, ...], val_paths: tuple[str, ...]):
    from ..train.data import image_split
    return image_split(list(train_paths), list(val_paths))


@click.group()
def train() -> None:
    """Train and export models (resumable: run again with the same RUN folder).

    The training loops also run data-parallel under torchrun (`torchrun --standalone
    --nproc-per-node N -m vqcodec.cli.main train ...`): --batch is the whole batch, split
    evenly over the processes; rank 0 writes the logs and checkpoints. image-codebooks,
    export and integerize run in one process only."""


@train.command("image-autoencoder")
@click.argument("run")
@data_options("image")
@budget_options(minutes=60, lr=4e-4, batch=16)
@click.option("--crop", type=int, default=128, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--init", "init_from", default=None,
              help="Start from this model file or shipped model (when RUN has no state yet).")
@user_errors
def image_autoencoder(run, train_paths, val_paths, minutes, lr, batch, crop, device,
                      init_from) -> None:
    """Train the autoencoder + residual quantizer into RUN/state.pt."""
    from ..train.image import train_autoencoder
    train_set, val_set = _image_split(train_paths, val_paths)
    train_autoencoder(run=run, train=train_set, val=val_set, minutes=minutes, lr=lr,
                      batch=batch, crop=crop, device=device, init_from=init_from)


@train.command("image-codebooks")
@click.argument("run")
@data_options("image")
@click.option("--lambda", "rd_lambda", type=float, default=400.0, show_default=True,
              help="Rate weight the codebooks are designed for, in squared 8-bit pixel error "
                   "per bit.")
@click.option("--design", type=click.Choice(["v3", "v4"]), default="v3", show_default=True,
              help="v3: 128 PCA components in 16 groups, 12 qualities; v4: 256 in 32 groups, "
                   "14 qualities up to ~37 dB.")
@click.option("--crops", "codebook_crops", type=int, default=3000, show_default=True,
              help="Random 128x128 crops whose latents train the codebooks.")
@user_errors
def image_codebooks(run, train_paths, val_paths, rd_lambda, design, codebook_crops) -> None:
    """Build a grouped model (vqimage-v3/v4 design): block PCA + entropy-constrained
    codebooks, into RUN/state.pt; then train its prior with `image-prior RUN`."""
    from ..train.image import GROUPED_DESIGNS, train_grouped_codebooks
    train_set, _ = _image_split(train_paths, val_paths)
    config = GROUPED_DESIGNS[design]
    # 16256 = 127.5**2 (rounded, as GROUPED_RD_LAMBDAS): pixel error per bit -> latent units
    train_grouped_codebooks(run=run, train=train_set, rd_lambda=rd_lambda / 16256,
                            config=config, codebook_crops=codebook_crops)


@train.command("image-filter")
@click.argument("run")
@data_options("image")
@budget_options(minutes=60, lr=2e-4, batch=16)
@click.option("--init-filter", "init_filter_from", default=None,
              help="A grouped model (file or shipped name) whose post-filter a new job starts "
                   "from (vqimage-v4 from v3i).")
@click.option("--from-model", "from_model", default=None,
              help="Start a new RUN as this grouped model (file or shipped name), its "
                   "post-filter also reading the quantizer's rate map (vqimage-v3r from v3i); "
                   "then `export-filter`.")
@user_errors
def image_filter(run, train_paths, val_paths, minutes, lr, batch, init_filter_from,
                 from_model) -> None:
    """Train a grouped model's decoder post-filter (RUN/state.pt, from `image-codebooks`
    or --from-model)."""
    from ..train.image import start_filter_run, train_decoder_filter
    train_set, val_set = _image_split(train_paths, val_paths)
    if from_model and not (Path(run) / "state.pt").exists():
        start_filter_run(run, from_model)
    train_decoder_filter(run=run, train=train_set, val=val_set, minutes=minutes, lr=lr,
                         batch=batch, init_filter_from=init_filter_from)


@train.command("export-filter")
@click.argument("run")
@click.argument("output")
@click.option("--base", required=True, help="The model RUN was started from (--from-model).")
@click.option("--name", required=True, help="Model id written into every .vqc file.")
@user_errors
def export_filter(run, output, base, name) -> None:
    """Write BASE with RUN's post-filter (from `image-filter --from-model`) as a model file."""
    import os

    from ..train.image import export_filter_model
    export_filter_model(run, base, output, name=name)
    click.echo(f"wrote {output} ({os.path.getsize(output) / 1e6:.1f} MB)")


@train.command("image-prior")
@click.argument("run")
@data_options("image")
@budget_options(minutes=30, lr=1e-3)
@click.option("--init-prior", "init_prior_from", default=None,
              help="A grouped model (file or shipped name) whose prior a new job starts from "
                   "where the models share PCA components (vqimage-v4 from v3i).")
@click.option("--from-model", "from_model", default=None,
              help="Start a new RUN on this grouped model's (file or shipped name) frozen "
                   "transform and quantizer, with a fresh prior of --width and --depth.")
@click.option("--width", type=click.IntRange(min=1), default=None,
              help="With --from-model: the new prior's channels (default: the model's).")
@click.option("--depth", type=click.IntRange(min=1), default=None,
              help="With --from-model: the new prior's residual blocks (default: the model's).")
@user_errors
def image_prior(run, train_paths, val_paths, minutes, lr, init_prior_from, from_model, width,
                depth) -> None:
    """Train the prior on a frozen autoencoder (RUN/state.pt) into RUN/prior_state.pt."""
    from ..train.image import start_prior_run, train_prior
    if (width or depth) and not from_model:
        raise click.UsageError("--width and --depth size a new run's prior: give --from-model")
    if from_model:
        start_prior_run(run, from_model, width=width, depth=depth)
    train_set, val_set = _image_split(train_paths, val_paths)
    train_prior(run=run, train=train_set, val=val_set, minutes=minutes, lr=lr,
                init_prior_from=init_prior_from)


def _audio_split(train_paths: tuple[str, ...], val_paths: tuple[str, ...]):
    from ..train.data import audio_split
    return audio_split(list(train_paths), list(val_paths))


@train.command("audio-autoencoder")
@click.argument("run")
@data_options("audio")
@budget_options(minutes=60, lr=3e-4, batch=8)
@click.option("--seconds", type=float, default=1.0, show_default=True, help="Segment length.")
@click.option("--mel-weight", type=float, default=0.1, show_default=True,
              help="Weight of the multi-scale mel loss against the waveform L1 loss.")
@click.option("--device", default="cpu", show_default=True)
@user_errors
def audio_autoencoder(run, train_paths, val_paths, minutes, lr, batch, seconds, mel_weight,
                      device) -> None:
    """Train the audio autoencoder + residual quantizer into RUN/state.pt."""
    from ..train.audio import train_audio_autoencoder
    train_files, val_files = _audio_split(train_paths, val_paths)
    train_audio_autoencoder(run=run, train=train_files, val=val_files, minutes=minutes, lr=lr,
                            batch=batch, seconds=seconds, mel_weight=mel_weight, device=device)


@train.command("audio-prior")
@click.argument("run")
@data_options("audio")
@budget_options(minutes=30, lr=5e-4, batch=8)
@user_errors
def audio_prior(run, train_paths, val_paths, minutes, lr, batch) -> None:
    """Train the frame prior on a frozen audio autoencoder (RUN/state.pt)."""
    from ..train.audio import train_audio_prior
    train_files, val_files = _audio_split(train_paths, val_paths)
    train_audio_prior(run=run, train=train_files, val=val_files, minutes=minutes, lr=lr,
                      batch=batch)


@train.command("export")
@click.argument("run")
@click.argument("output")
@click.option("--name", required=True, help="Model id written into every .vqc file.")
@click.option("--qualities", default=None,
              help="Stages per rate setting, e.g. 4,6,8,12,16,24 (audio: 2,4,8,16). Grouped "
                   "image models: all rounds at each of the shipped rate weights if omitted.")
@click.option("--default-quality", type=int, required=True)
@user_errors
def export(run, output, name, qualities, default_quality) -> None:
    """Write RUN/prior_state.pt (image or audio run) as a float16 safetensors model file."""
    import os

    from ..train.export import export_run
    export_run(run, output, name=name, default_quality=default_quality,
               qualities=[int(q) for q in qualities.split(",")] if qualities else None)
    click.echo(f"wrote {output} ({os.path.getsize(output) / 1e6:.1f} MB)")


@train.command("integerize")
@click.argument("model")
@click.argument("output")
@click.option("--name", required=True, help="Model id of the integerized model.")
@click.option("--calibration", "calibration", default=None,
              help="Folder of calibration images (default: BSDS500 train).")
@click.option("--prior-of", "prior_of", default=None,
              help="A shipped model whose weights MODEL shares but for its prior: write the "
                   "priors alone, loading takes the rest from it.")
@user_errors
def integerize(model, output, name, calibration, prior_of) -> None:
    """Add the exact integer prior (portable files) to MODEL and write it to OUTPUT."""
    import sys
    import time

    from ..train.integerize import integerize_model, training_crops
    from ..train.loop import single_process
    single_process("integerize")
    from ..zoo.registry import load_model, save_model
    t0 = time.process_time()
    loaded = load_model(model)
    images = training_crops(calibration) if calibration and loaded.kind == "image" else None
    net = integerize_model(loaded, images=images, log=sys.stderr)
    save_model(net, output, name=name, qualities=loaded.qualities,
               default_quality=loaded.default_quality,
               training={**loaded.training, "integerize_cpu_s": round(time.process_time() - t0, 1)},
               prior_of=load_model(prior_of) if prior_of else None)
    click.echo(f"wrote {output} ({Path(output).stat().st_size / 1e6:.1f} MB) in "
               f"{time.process_time() - t0:.1f} CPU s")


@train.command("refinement-examples")
@click.argument("photos", nargs=-1, required=True)
@click.option("--out", required=True, help="Folder of the examples (.npz, one per photo).")
@click.option("--rank", type=int, default=0, show_default=True,
              help="With --world: this process's share of the photos (side by side).")
@click.option("--world", type=int, default=1, show_default=True)
@user_errors
def refinement_examples(photos, out, rank, world) -> None:
    """Write the refinement filter's examples of PHOTOS (folders or files; resumable)."""
    from ..train.refinement_filter import make_examples
    if not 0 <= rank < world:
        raise click.BadParameter("need 0 <= --rank < --world")
    click.echo(f"wrote {make_examples(list(photos), out, rank=rank, world=world)} examples "
               f"to {out}")


@train.command("refinement-filter")
@click.argument("run")
@click.option("--examples", required=True, help="Folder of training examples.")
@click.option("--val", "val_examples", required=True, help="Folder of validation examples.")
@budget_options(minutes=30, lr=1e-3, batch=16)
@click.option("--total-steps", type=click.IntRange(min=1), default=None,
              help="The learning rate falls to 0 over these steps (cosine); training ends "
                   "there [default: the shipped filter's].")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps.")
@user_errors
def refinement_filter(run, examples, val_examples, minutes, lr, batch, total_steps,
                      max_steps) -> None:
    """Train the refinement filter (format version 8) in RUN (resumable)."""
    from ..train.refinement_filter import train_refinement_filter
    schedule = {} if total_steps is None else {"total_steps": total_steps}
    train_refinement_filter(run=run, examples=examples, val=val_examples, minutes=minutes,
                            lr=lr, batch=batch, max_steps=max_steps, **schedule)


@train.command("export-refinement-filter")
@click.argument("run")
@click.argument("output")
@user_errors
def export_refinement_filter(run, output) -> None:
    """Write RUN's refinement filter as a safetensors file."""
    from ..train.refinement_filter import export_refinement_filter as export
    export(run, output)
    click.echo(f"wrote {output} ({Path(output).stat().st_size / 1e3:.0f} kB)")
