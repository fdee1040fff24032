"""`vqcodec` command line: compress, decompress, info, train."""
from __future__ import annotations

import click

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
    from ..pipelines import compress_file

    result = compress_file(input_path, quality=quality, bitrate=bitrate, model=model,
                           device=device)
    write_atomically(output_path, result.data)
    click.echo(f"{input_path} -> {output_path}: {result.describe()}")


@cli.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("output_path", metavar="OUTPUT")
@model_option
@device_option
@user_errors
def decompress(input_path: str, output_path: str, model: str | None, device: str) -> None:
    """Decode a .vqc file to an image (.png, ...) or audio (.wav, .flac): format from OUTPUT."""
    import time

    from ..pipelines import decompress as decode, describe_decoded, save_decoded

    start = time.perf_counter()
    decoded = decode(read_input(input_path), model=model, device=device)
    save_decoded(decoded, output_path)
    click.echo(f"{input_path} -> {output_path}: {describe_decoded(decoded)}, "
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
