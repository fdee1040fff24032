"""`vqcodec train ...`: train the image model (autoencoder, then prior) and export it."""
from __future__ import annotations

import json
from pathlib import Path

import click

SHARED = "../shared/data/images"


def _config(run: str, kind: str | None = None):
    """The model config of a run folder (config.json; its "kind" defaults to image), or the
    default config of `kind` for a new run."""
    from ..zoo.registry import MODEL_KINDS
    path = Path(run) / "config.json"
    if not path.exists():
        if (kind or "image") == "image":
            from ..nn.image_model import NEW_RUN_CONFIG
            return NEW_RUN_CONFIG
        return MODEL_KINDS[kind][0]()
    d = json.loads(path.read_text())
    found = d.pop("kind", "image")
    if kind is not None and found != kind:
        raise click.ClickException(f"{run} holds a {found} model run, not {kind}")
    return MODEL_KINDS[found][0].from_dict(d)


def _default_train() -> list[str]:
    return [f"{SHARED}/bsds500/train", f"{SHARED}/bsds500/val"] + \
        [f"{SHARED}/wikipedia/{i:03d}.jpg" for i in range(1, 41)]


def data_options(command):
    """--train (repeatable) and --val, shared by the training commands."""
    command = click.option("--val", "val_path", default=f"{SHARED}/bsds500/test",
                           show_default=True)(command)
    return click.option("--train", "train_paths", multiple=True,
                        help="Image folders/files (repeatable).")(command)


@click.group()
def train() -> None:
    """Train and export models (resumable: run again with the same RUN folder)."""


@train.command("image-autoencoder")
@click.argument("run")
@data_options
@click.option("--minutes", type=float, default=60, show_default=True)
@click.option("--lr", type=float, default=4e-4, show_default=True)
@click.option("--batch", type=int, default=16, show_default=True)
@click.option("--crop", type=int, default=128, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--init", "init_from", default=None,
              help="Start from this model file or shipped model (when RUN has no state yet).")
def image_autoencoder(run, train_paths, val_path, minutes, lr, batch, crop, device,
                      init_from) -> None:
    """Train the autoencoder + residual quantizer into RUN/state.pt."""
    from ..train.image import train_autoencoder
    config = _config(run, "image")
    if init_from and not (Path(run) / "state.pt").exists():
        from ..zoo.registry import load_model
        config = load_model(init_from).model.config
    train_autoencoder(run=run, train=list(train_paths) or _default_train(), val=[val_path],
                      config=config, minutes=minutes, lr=lr, batch=batch, crop=crop,
                      device=device, init_from=init_from)


@train.command("image-codebooks")
@click.argument("run")
@data_options
@click.option("--lambda", "rd_lambda", type=float, default=400.0, show_default=True,
              help="Rate weight the codebooks are designed for, in squared 8-bit pixel error "
                   "per bit.")
def image_codebooks(run, train_paths, val_path, rd_lambda) -> None:
    """Build a grouped model (vqimage-v3 design): block PCA + entropy-constrained codebooks,
    into RUN/state.pt; then train its prior with `image-prior RUN`."""
    from ..nn.image_model import GROUPED_RUN_CONFIG
    from ..train.image import train_grouped_codebooks
    if (Path(run) / "state.pt").exists():
        raise click.ClickException(f"{run} already has a state.pt; use a new run folder")
    train_grouped_codebooks(run=run, train=list(train_paths) or _default_train(),
                            config=GROUPED_RUN_CONFIG, rd_lambda=rd_lambda / 16256)


@train.command("image-filter")
@click.argument("run")
@data_options
@click.option("--minutes", type=float, default=60, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--batch", type=int, default=16, show_default=True)
def image_filter(run, train_paths, val_path, minutes, lr, batch) -> None:
    """Train a grouped model's decoder post-filter (RUN/state.pt, from `image-codebooks`)."""
    from ..nn.image_model import GROUPED_RD_LAMBDAS
    from ..train.image import train_decoder_filter
    train_decoder_filter(run=run, train=list(train_paths) or _default_train(), val=[val_path],
                         minutes=minutes, rd_lambdas=GROUPED_RD_LAMBDAS, lr=lr, batch=batch)


@train.command("image-prior")
@click.argument("run")
@data_options
@click.option("--minutes", type=float, default=30, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
def image_prior(run, train_paths, val_path, minutes, lr) -> None:
    """Train the prior on a frozen autoencoder (RUN/state.pt) into RUN/prior_state.pt."""
    from ..train.image import train_prior
    from ..nn.image_model import GROUPED_RD_LAMBDAS
    config = _config(run, "image")
    train_prior(run=run, autoencoder_state=str(Path(run) / "state.pt"),
                train=list(train_paths) or _default_train(), val=[val_path],
                config=config, minutes=minutes, lr=lr,
                rd_lambdas=GROUPED_RD_LAMBDAS if config.num_groups else None)


def _audio_files(train_paths, val_paths):
    from ..train.audio import default_audio_split
    train_files, val_files = default_audio_split()
    from ..io.media import list_media
    expand = lambda paths: [f for p in paths for f in (  # noqa: E731
        list_media(p, "audio", recursive=True) if Path(p).is_dir() else [Path(p)])]
    return (expand(train_paths) or train_files), (expand(val_paths) or val_files)


audio_data_options = [
    click.option("--train", "train_paths", multiple=True,
                 help="Audio folders/files (repeatable); default: the ../shared/data/audio split."),
    click.option("--val", "val_paths", multiple=True, help="Validation audio (repeatable)."),
]


def _with(options):
    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command
    return apply


@train.command("audio-autoencoder")
@click.argument("run")
@_with(audio_data_options)
@click.option("--minutes", type=float, default=60, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--seconds", type=float, default=1.0, show_default=True, help="Segment length.")
@click.option("--mel-weight", type=float, default=0.1, show_default=True,
              help="Weight of the multi-scale mel loss against the waveform L1 loss.")
@click.option("--device", default="cpu", show_default=True)
def audio_autoencoder(run, train_paths, val_paths, minutes, lr, batch, seconds, mel_weight,
                      device) -> None:
    """Train the audio autoencoder + residual quantizer into RUN/state.pt."""
    from ..train.audio import train_audio_autoencoder
    train_files, val_files = _audio_files(train_paths, val_paths)
    train_audio_autoencoder(run=run, train=train_files, val=val_files,
                            config=_config(run, "audio"), minutes=minutes, lr=lr, batch=batch,
                            seconds=seconds, mel_weight=mel_weight, device=device)


@train.command("audio-prior")
@click.argument("run")
@_with(audio_data_options)
@click.option("--minutes", type=float, default=30, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True)
@click.option("--batch", type=int, default=8, show_default=True)
def audio_prior(run, train_paths, val_paths, minutes, lr, batch) -> None:
    """Train the frame prior on a frozen audio autoencoder (RUN/state.pt)."""
    from ..train.audio import train_audio_prior
    train_files, val_files = _audio_files(train_paths, val_paths)
    train_audio_prior(run=run, config=_config(run, "audio"), train=train_files, val=val_files,
                      minutes=minutes, lr=lr, batch=batch)


@train.command("export")
@click.argument("run")
@click.argument("output")
@click.option("--name", required=True, help="Model id written into every .vqc file.")
@click.option("--qualities", default=None,
              help="Stages per rate setting, e.g. 4,6,8,12,16,24 (audio: 2,4,8,16). Grouped "
                   "image models: all rounds at each of the shipped rate weights if omitted.")
@click.option("--default-quality", type=int, required=True)
def export(run, output, name, qualities, default_quality) -> None:
    """Write RUN/prior_state.pt (image or audio run) as a float16 safetensors model file."""
    import torch

    from ..nn.audio_model import AudioModelConfig, VQAudioModel
    from ..nn.image_model import VQImageModel

    from ..zoo.registry import save_model
    config = _config(run)
    model = (VQAudioModel if isinstance(config, AudioModelConfig) else VQImageModel)(config)
    prior_state = torch.load(Path(run) / "prior_state.pt", weights_only=True)
    ae_state = torch.load(Path(run) / "state.pt", weights_only=True)
    weights = prior_state["model"]
    if getattr(config, "num_groups", 0):
        # A grouped model's post-filter trains into state.pt beside the prior (it does not
        # change the indices): the prior from its run, everything else from state.pt.
        weights = {**{k: v for k, v in ae_state["model"].items() if not k.startswith("prior.")},
                   **{k: v for k, v in weights.items() if k.startswith("prior.")}}
    model.load_state_dict(weights)
    training = {"autoencoder_steps": ae_state["step"], "autoencoder_cpu_s": ae_state["cpu_s"],
                "autoencoder_wall_s": ae_state["wall_s"], "prior_steps": prior_state["step"],
                "prior_cpu_s": prior_state["cpu_s"]}
    if "filter_step" in ae_state:
        training.update(filter_steps=ae_state["filter_step"], filter_cpu_s=ae_state["filter_cpu_s"])
    if qualities:
        rates: list = [int(q) for q in qualities.split(",")]
    elif getattr(config, "num_groups", 0):
        from ..nn.image_model import GROUPED_RD_LAMBDAS
        rates = [[config.num_stages, lam] for lam in GROUPED_RD_LAMBDAS]
    else:
        raise click.UsageError("--qualities is required for this model")
    save_model(model, output, name=name, qualities=rates, default_quality=default_quality,
               training=training)
    click.echo(f"wrote {output} ({Path(output).stat().st_size / 1e6:.1f} MB)")


@train.command("integerize")
@click.argument("model")
@click.argument("output")
@click.option("--name", required=True, help="Model id of the integerized model.")
@click.option("--calibration", "calibration", default=None,
              help="Folder of calibration images (default: BSDS500 train).")
def integerize(model, output, name, calibration) -> None:
    """Add the exact integer prior (portable files) to MODEL and write it to OUTPUT."""
    import sys
    import time

    from ..train.integerize import integerize_model, training_crops
    from ..zoo.registry import load_model, save_model
    t0 = time.process_time()
    loaded = load_model(model)
    images = training_crops(calibration) if calibration and loaded.kind == "image" else None
    net = integerize_model(loaded, images=images, log=sys.stderr)
    save_model(net, output, name=name, qualities=loaded.qualities,
               default_quality=loaded.default_quality,
               training={**loaded.training, "integerize_cpu_s": round(time.process_time() - t0, 1)})
    click.echo(f"wrote {output} ({Path(output).stat().st_size / 1e6:.1f} MB) in "
               f"{time.process_time() - t0:.1f} CPU s")
