"""`vqcodec` command line: compress, decompress, info, train."""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import click

from ..format import DEBLOCKED_VERSION, FILTERED_VERSION, read_header
from .batch import AUDIO_FORMATS, IMAGE_FORMATS
from .options import (device_option, jobs_option, model_option, quiet_option, read_input,
                      user_errors)
from .rd_curve import rd_curve
from .sample import sample
from .train import train


@click.group()
@click.version_option(package_name="vqcodec")
def cli() -> None:
    """vqcodec: neural image and audio compression with residual vector quantization."""


def _plan_single_or_batch(paths: tuple[str, ...], out_dir: str | None,
                          batch_only: dict[str, object]) -> tuple[str, str] | None:
    """(INPUT, OUTPUT) of the two-positional form, or None for a batch (`-o DIR`).

    Args:
        paths: the positional arguments.
        out_dir: the value of -o, if given.
        batch_only: option name -> value given (None if not) of the options only a batch has.
    """
    if out_dir is not None:
        return None
    if len(paths) != 2:
        raise click.UsageError("give INPUT OUTPUT, or INPUT... -o DIR for a batch of files")
    for name, value in batch_only.items():
        if value is not None:
            raise click.UsageError(f"{name} is for batches (-o DIR); for one file the "
                                   "suffix of OUTPUT chooses")
    return paths[0], paths[1]


def _refuse_overwriting_media(output: str) -> None:
    """`compress a.png b.png` meant as a batch would replace the image b.png with a .vqc file:
    refused when OUTPUT is an existing image or audio file."""
    from ..errors import InputError
    from ..io.media import media_kind
    kind = media_kind(output)
    if kind is not None and Path(output).is_file():
        raise InputError(f"{output} is an existing {kind} file, not a .vqc name; to compress "
                         "several files use -o DIR")


def _finish_batch(failed: int, total: int, verb: str, out_dir: str, quiet: bool) -> None:
    """The batch's last line, and exit status 1 if any file failed."""
    if not quiet:
        click.echo(f"{verb} {total - failed} of {total} file(s) into {out_dir}"
                   + (f"; {failed} failed" if failed else ""))
    if failed:
        sys.exit(1)


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="INPUT OUTPUT | INPUT... -o DIR")
@click.option("--output-dir", "-o", "out_dir", default=None, metavar="DIR",
              help="Batch: write each INPUT to DIR/<stem>.vqc (DIR is created if missing).")
@click.option("--quality", "-q", type=int, default=None,
              help="Image rate setting 1..N of the model (higher: more bits, better quality).")
@click.option("--bitrate", "-b", type=float, default=None,
              help="Audio bitrate in kbps before entropy coding (e.g. 1.5, 3, 6, 12).")
@model_option
@device_option
@jobs_option
@quiet_option
@user_errors
def compress(paths: tuple[str, ...], out_dir: str | None, quality: int | None,
             bitrate: float | None, model: str | None, device: str, jobs: int,
             quiet: bool) -> None:
    """Compress an image (PNG, JPEG, ...) or audio (WAV, FLAC, OGG) into a .vqc file, or many
    files into a folder (-o DIR).

    The kind is chosen from each INPUT's suffix; --model overrides the default model of that
    kind. In a batch --quality applies to the images and --bitrate to the audio files; each
    file succeeds or fails on its own (one error line each, exit status 1 if any failed), and
    two inputs with the same stem are refused before anything is written.
    """
    import functools

    from .batch import CompressSettings, FileJob, compress_one, plan_compress, run_batch

    single = _plan_single_or_batch(paths, out_dir, {"--jobs": jobs if jobs != 1 else None})
    if single is not None:
        _refuse_overwriting_media(single[1])
        line = compress_one(FileJob(*single), CompressSettings(quality, bitrate, model, device))
        if not quiet:
            click.echo(line)
        return
    planned = plan_compress(paths, out_dir)
    settings = CompressSettings(quality, bitrate, model, device, batch=True)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    failed = run_batch(planned, functools.partial(compress_one, settings=settings),
                       workers=jobs, quiet=quiet)
    _finish_batch(failed, len(planned), "compressed", out_dir, quiet)


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="INPUT OUTPUT | INPUT... -o DIR")
@click.option("--output-dir", "-o", "out_dir", default=None, metavar="DIR",
              help="Batch: write each INPUT to DIR/<stem>.png (images) or DIR/<stem>.wav "
                   "(audio), or the formats below (DIR is created if missing).")
@click.option("--image-format", type=click.Choice(IMAGE_FORMATS), default=None,
              help="Batch: format of the decoded images [default: png].")
@click.option("--audio-format", type=click.Choice(AUDIO_FORMATS), default=None,
              help="Batch: format of the decoded audio [default: wav].")
@click.option("--stages", type=int, default=None,
              help="Decode from the first N stages only: a coarser preview, and all a file "
                   "cut after N stage chunks needs [default: all].")
@model_option
@device_option
@jobs_option
@quiet_option
@user_errors
def decompress(paths: tuple[str, ...], out_dir: str | None, image_format: str | None,
               audio_format: str | None, stages: int | None, model: str | None, device: str,
               jobs: int, quiet: bool) -> None:
    """Decode a .vqc file to an image (.png, ...) or audio (.wav, .flac): format from OUTPUT;
    or many .vqc files into a folder (-o DIR).

    In a batch each file succeeds or fails on its own (one error line each, exit status 1 if
    any failed), and two inputs that would write the same output are refused before anything
    is written.
    """
    import functools

    from .batch import (DecompressSettings, FileJob, decompress_one, plan_decompress,
                        run_batch)

    single = _plan_single_or_batch(paths, out_dir, {
        "--image-format": image_format, "--audio-format": audio_format,
        "--jobs": jobs if jobs != 1 else None})
    settings = DecompressSettings(model, device, stages)
    if single is not None:
        line = decompress_one(FileJob(*single), settings)
        if not quiet:
            click.echo(line)
        return
    planned, failures = plan_decompress(paths, out_dir, image_format=image_format or "png",
                                        audio_format=audio_format or "wav")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    failed = run_batch(planned, functools.partial(decompress_one, settings=settings),
                       workers=jobs, quiet=quiet, failures=failures)
    _finish_batch(failed, len(paths), "decompressed", out_dir, quiet)


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
             *([f"tiles: {h.tile}x{h.tile} latent positions"] if h.tile else []),
             *([f"stages with spatial context: {h.context_stages} (the later ones in one pass)"]
               if h.context_stages is not None else []),
             *([f"adapted anchors: weight {h.anchor_weight}"] if h.anchor_weight else []),
             *(["adapted tables: every pass (its weight in the stream)"] if h.adapted else []),
             *([f"refinement: step {h.refinement_step:g} (8-bit levels), its own chunk"
                + (", deblocked" if h.version >= DEBLOCKED_VERSION else "")
                + (", restored by the refinement filter" if h.version >= FILTERED_VERSION
                   else "")]
               if h.refinement_step else []),
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


def keep_freed_memory() -> None:
    """Have glibc's allocator keep freed blocks of up to 32 MiB for reuse, instead of giving
    them back to the system and faulting in fresh pages on the next allocation.

    The integer prior's passes allocate the same tens-of-MiB temporaries over and over: by
    default each is a new mmap, and page faults took a third of the CPU time of a 4-Mpixel
    decode (benchmarks/large_image.py). Not glibc (macOS, Windows, musl): nothing to do.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 2 ** 20)  # M_MMAP_THRESHOLD (glibc's largest allowed value)
        libc.mallopt(-1, 512 * 2 ** 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def main() -> None:
    keep_freed_memory()
    try:
        cli()
    except SystemExit as e:  # click ends every run with one, success included
        # A rank of a torchrun job exits through the distributed module (it must not reach
        # Python's shutdown); looked up, not imported: plain commands never import torch.
        dist = sys.modules.get("vqcodec.distributed")
        if dist is not None and dist.joined():
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            dist.leave_and_exit(code)
        raise


cli.add_command(train)
cli.add_command(rd_curve)
cli.add_command(sample)


if __name__ == "__main__":
    main()
