"""`vqcodec sample`: draw a picture or a clip from a model's prior and decode it."""
from __future__ import annotations

import click

from .options import device_option, user_errors


@click.command()
@click.option("--output", "-o", "output_path", required=True, metavar="OUTPUT",
              help="Where to write it: an image (.png, ...) or audio (.wav, .flac, .ogg); the "
                   "suffix chooses the kind.")
@click.option("--model", default=None,
              help="Shipped model name or .safetensors file [default: the default model of "
                   "the kind].")
@click.option("--size", default=None, metavar="WxH",
              help="Image: the picture's size in pixels [default: 256x256].")
@click.option("--seconds", type=float, default=None,
              help="Audio: the clip's length in seconds [default: 5].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the draws: the same seed gives the same output.")
@click.option("--temperature", "-t", type=float, default=1.0, show_default=True,
              help="Divides the prior's log-probabilities (below 1: likelier codes).")
@click.option("--stages", type=int, default=None,
              help="How many stages to draw, from stage 0 [default: all the model has].")
@device_option
@user_errors
def sample(output_path: str, model: str | None, size: str | None, seconds: float | None,
           seed: int, temperature: float, stages: int | None, device: str) -> None:
    """Draw indices from a model's prior, stage by stage and pass by pass in the order the
    codec codes them, and decode them to an image or a sound.

    With a model that has an exact integer prior (the shipped ones) and temperature 1, a seed
    gives the same output on every machine (up to the float decoder's last-bit rounding).
    """
    from ..errors import InputError
    from ..io.audio import check_audio_target
    from ..io.image import check_image_target
    from ..io.media import is_audio_path
    from ..pipelines import save_decoded
    from ..pipelines.sample import parse_size, sample_audio, sample_image
    from ..zoo.registry import DEFAULT_AUDIO_MODEL, DEFAULT_IMAGE_MODEL

    if is_audio_path(output_path):
        if size is not None:
            raise InputError("--size is for images; audio takes --seconds")
        check_audio_target(output_path)  # before the work, not after
        drawn = sample_audio(5.0 if seconds is None else seconds,
                             model=model or DEFAULT_AUDIO_MODEL, seed=seed,
                             temperature=temperature, stages=stages, device=device)
    else:
        if seconds is not None:
            raise InputError("--seconds is for audio (an OUTPUT like sample.wav); images take "
                             "--size")
        check_image_target(output_path)
        height, width = parse_size(size or "256x256")
        drawn = sample_image(height, width, model=model or DEFAULT_IMAGE_MODEL, seed=seed,
                             temperature=temperature, stages=stages, device=device)
    save_decoded(drawn.decoded, output_path)
    click.echo(f"{output_path}: {drawn.describe()} (seed {seed}, temperature {temperature:g})")
