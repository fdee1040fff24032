"""`vqcodec` command line: compress, decompress, info, train."""
from __future__ import annotations

import click

from ..errors import InputError
from ..format import read_header
from .options import device_option, model_option, read_input, user_errors
from .rd_curve import rd_curve
from .train import train


@click.group()
@click.version_option(package_name="vqcodec")
def cli() -> None:
    """vqcodec: neural image and audio compression with residual vector quantization."""


@cli.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT")
@click.option("--quality", "-q", type=int, default=None,
              help="Image rate setting 1..N of the model (higher: more bits, better quality).")
@click.option("--bitrate", "-b", type=float, default=None,
              help="Audio bitrate in kbps before entropy coding (e.g. 1.5, 3, 6, 12).")
@model_option
@device_option
@user_errors
def compress(input_path: str, output_path: str, quality: int | None, bitrate: float | None,
             model: str | None, device: str) -> None:
    """Compress an image (PNG, JPEG, ...) or audio (WAV, FLAC, OGG) into a .vqc file.

    The kind is chosen from INPUT's suffix; --model overrides the default model of that kind.
    """
    from ..io.atomic import write_atomically
    from ..io.media import is_audio_path

    if is_audio_path(input_path):
        if quality is not None:
            raise InputError("--quality is for images; audio takes --bitrate")
        from ..pipelines.audio import compress_audio
        from ..io.audio import load_audio
        from ..zoo.registry import DEFAULT_AUDIO_MODEL

        clip = load_audio(input_path)
        result = compress_audio(clip, model=model or DEFAULT_AUDIO_MODEL, bitrate=bitrate,
                                device=device)
        write_atomically(output_path, result.data)
        click.echo(f"{input_path} -> {output_path}: {len(result.data)} bytes, "
                   f"{result.kbps:.3f} kbps (payload {result.payload_kbps:.3f} kbps, "
                   f"{result.raw_kbps:g} kbps before the prior), {clip.seconds:.2f} s of audio, "
                   f"{clip.channels} ch at {clip.sample_rate} Hz, {result.header.num_stages} "
                   f"stages, {result.seconds:.2f} s")
        return
    if bitrate is not None:
        raise InputError("--bitrate is for audio; images take --quality")
    from ..pipelines.image import compress_image
    from ..io.image import load_image
    from ..zoo.registry import DEFAULT_IMAGE_MODEL

    image = load_image(input_path)
    result = compress_image(image, model=model or DEFAULT_IMAGE_MODEL, quality=quality,
                            device=device)
    write_atomically(output_path, result.data)
    h = result.header
    click.echo(f"{input_path} -> {output_path}: {len(result.data)} bytes, {result.bpp:.4f} bpp "
               f"(payload {result.payload_bpp:.4f} bpp, prior NLL "
               f"{result.nll_bits / result.num_pixels:.4f} bpp), {h.shape[2]}x{h.shape[1]}, "
               f"{h.num_stages} stages, {result.seconds:.2f} s")


@cli.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT")
@model_option
@device_option
@user_errors
def decompress(input_path: str, output_path: str, model: str | None, device: str) -> None:
    """Decode a .vqc file to an image (.png, ...) or audio (.wav, .flac): format from OUTPUT."""
    import time

    start = time.perf_counter()
    data = read_input(input_path)
    if read_header(data).media_type.name == "AUDIO":
        from ..pipelines.audio import decompress_audio
        from ..io.audio import save_audio

        clip = decompress_audio(data, model=model, device=device)
        save_audio(output_path, clip)
        click.echo(f"{input_path} -> {output_path}: {clip.seconds:.2f} s, {clip.channels} ch at "
                   f"{clip.sample_rate} Hz, {time.perf_counter() - start:.2f} s")
        return
    from ..pipelines.image import decompress_image
    from ..io.image import save_image

    array = decompress_image(data, model=model, device=device)
    save_image(array, output_path)
    click.echo(f"{input_path} -> {output_path}: {array.shape[1]}x{array.shape[0]}, "
               f"{time.perf_counter() - start:.2f} s")


@cli.command()
@click.argument("input_path", metavar="FILE")
@user_errors
def info(input_path: str) -> None:
    """Show what a .vqc file holds."""
    data = read_input(input_path)
    h = read_header(data)
    lines = [f"media: {h.media_type.name.lower()}", f"model: {h.model_id}",
             f"weights hash: {h.weights_hash.hex()}", f"stages coded: {h.num_stages}",
             f"latent grid: {'x'.join(map(str, h.latent_shape))}",
             f"format version: {h.version}",
             f"portable: {'yes (exact integer tables: decodes on any machine)' if h.portable else 'no (float tables: decodes where the CPU kernels round as the writer' + chr(39) + 's)'}",
             f"file size: {len(data)} bytes"]
    if h.media_type.name == "IMAGE":
        c, height, width = h.shape
        lines[1:1] = [f"image: {width}x{height} {'grayscale' if c == 1 else 'RGB'}"]
        lines.append(f"bits per pixel: {8 * len(data) / (width * height):.4f}")
    else:
        channels, samples = h.shape
        seconds = samples / h.sample_rate
        lines[1:1] = [f"audio: {channels} channel(s), {samples} samples at {h.sample_rate} Hz "
                      f"({seconds:.2f} s)"]
        lines.append(f"kilobits per second: {8 * len(data) / seconds / 1000:.3f}")
    click.echo("\n".join(lines))


def main() -> None:
    cli()


cli.add_command(train)
cli.add_command(rd_curve)


if __name__ == "__main__":
    main()
