"""What every command shares: one-line user errors and the `--model` / `--device` options."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from ..errors import InputError, VqcodecError


def user_errors(func):
    """Turn expected failures into one line on stderr and exit status 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except VqcodecError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except OSError as e:
            click.echo(f"error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def read_input(path: str) -> bytes:
    """The bytes of an input file, or a one-line error."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such file: {path}")
    if p.is_dir():
        raise InputError(f"is a folder, not a file: {path}")
    return p.read_bytes()


device_option = click.option("--device", default="auto", show_default=True,
                             type=click.Choice(["auto", "cpu", "cuda"]),
                             help="Where the networks run.")
model_option = click.option("--model", default=None,
                            help="Shipped model name or path to a .safetensors model file.")
jobs_option = click.option("--jobs", "-j", type=click.IntRange(min=1), default=1,
                           show_default=True,
                           help="Batch: files coded at once, each in a process of its own. "
                                "The .vqc files are the same whatever the number; decoded "
                                "pixels or samples may differ by one step (float decoder, "
                                "threads split by jobs).")
quiet_option = click.option("--quiet", "-Q", is_flag=True,
                            help="No progress bar and no line per file; errors only.")
