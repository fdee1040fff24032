"""The work of `vqcodec compress` and `decompress` on one file, the output names of a batch
(`-o DIR`), and running a batch in this process or a pool of processes, with a progress bar.

Everything a file can be refused for without a model (missing, empty, not a readable image or
audio, a bad .vqc header or CRC, an output format that cannot be written, a missing output
folder) is checked before torch is imported: those errors come back at once. Outputs are written
atomically, so a failure never leaves a partial file.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, VqcodecError
from .options import read_input

IMAGE_FORMATS = ("png", "bmp", "tiff", "ppm", "jpg")
"""Image formats a decompressed batch can be written in (`--image-format`)."""
AUDIO_FORMATS = ("wav", "flac", "ogg")
"""Audio formats a decompressed batch can be written in (`--audio-format`)."""


@dataclass(frozen=True)
class FileJob:
    """One input file and the output it is written to."""

    source: str
    target: str


@dataclass(frozen=True)
class CompressSettings:
    """What every file of a `compress` call is coded with.

    In a batch, `quality` applies to the images and `bitrate` to the audio files; for a single
    file, the option of the other medium is an error (as `pipelines.compress_file` has it).
    """

    quality: int | None
    bitrate: float | None
    model: str | None
    device: str
    batch: bool = False


@dataclass(frozen=True)
class DecompressSettings:
    """What every file of a `decompress` call is decoded with."""

    model: str | None
    device: str
    stages: int | None = None  # decode from the first `stages` stages only (None: all)


def _check_output_folder(target: str) -> None:
    folder = Path(target).parent
    if not folder.is_dir():
        raise InputError(f"no such folder: {folder}")


def compress_one(job: FileJob, settings: CompressSettings) -> str:
    """Compress one image or audio file (the kind from its suffix) into a .vqc file.

    Args:
        job: the input file and the .vqc file to write (atomically).
        settings: quality, bitrate, model and device.

    Returns:
        The line to print: input, output and what the compression measured.

    Raises:
        VqcodecError, OSError: the file cannot be compressed (one-line message).
    """
    from ..io.atomic import write_atomically
    from ..io.media import is_audio_path

    audio = is_audio_path(job.source)
    quality, bitrate = settings.quality, settings.bitrate
    if settings.batch:  # each option applies to the files of its medium
        quality, bitrate = (None, bitrate) if audio else (quality, None)
    elif audio and quality is not None:
        raise InputError("--quality is for images; audio takes --bitrate")
    elif not audio and bitrate is not None:
        raise InputError("--bitrate is for audio; images take --quality")
    from ..io.image import check_input_file
    check_input_file(job.source)
    _check_output_folder(job.target)
    if audio:
        from ..io.audio import AudioReader
        media = AudioReader(job.source)  # header checks now; samples read window by window
    else:
        from ..io.image import load_image
        media = load_image(job.source)

    # Only now, with a readable input, are torch and the model needed.
    from ..pipelines import compress_audio, compress_image
    from ..zoo.registry import DEFAULT_AUDIO_MODEL
    if audio:
        with media:
            result = compress_audio(media, model=settings.model or DEFAULT_AUDIO_MODEL,
                                    bitrate=bitrate, device=settings.device)
    else:
        result = compress_image(media, model=settings.model, quality=quality,
                                device=settings.device)
    write_atomically(job.target, result.data)
    return f"{job.source} -> {job.target}: {result.describe()}"


def check_decompress_target(header, target: str) -> None:
    """Refuse an output the decoded file cannot be written to, before decoding it.

    Args:
        header: the .vqc file's `ContainerHeader` (its media type picks the writer).
        target: the output path (its suffix names the format).
    """
    from ..format import MediaType
    if header.media_type == MediaType.AUDIO:
        from ..io.audio import check_audio_target
        check_audio_target(target)
    else:
        from ..io.image import check_image_target
        check_image_target(target)


def decompress_one(job: FileJob, settings: DecompressSettings) -> str:
    """Decode one .vqc file to an image or audio file (the format from the output's suffix).

    Args:
        job: the .vqc file and the output to write (atomically).
        settings: model and device.

    Returns:
        The line to print: input, output, what was decoded and the seconds it took.

    Raises:
        VqcodecError, OSError: the file cannot be decoded or written (one-line message).
    """
    import time

    from ..format import unpack_container

    start = time.perf_counter()
    data = read_input(job.source)
    # header and CRC: refused here without a model (a file cut after whole stage chunks is
    # accepted: the pipeline decides whether it holds the stages asked for)
    header, _ = unpack_container(data, allow_truncation=True)
    check_decompress_target(header, job.target)

    from ..pipelines import decompress_to_file
    described = decompress_to_file(data, job.target, model=settings.model,
                                   device=settings.device, stages=settings.stages)
    return f"{job.source} -> {job.target}: {described}, {time.perf_counter() - start:.2f} s"


def _same_file_key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))


def _refuse_collisions(jobs: Sequence[FileJob]) -> None:
    """Two inputs that would write the same output: an error before anything is written."""
    seen: dict[str, str] = {}
    for job in jobs:
        key = _same_file_key(Path(job.target))
        if key in seen:
            raise InputError(f"{seen[key]} and {job.source} would both be written to "
                             f"{job.target}")
        seen[key] = job.source


def plan_compress(sources: Sequence[str], out_dir: str) -> list[FileJob]:
    """The batch `compress SOURCES... -o OUT_DIR`: each input to OUT_DIR/<stem>.vqc.

    Raises:
        InputError: two inputs have the same stem, or OUT_DIR is a file.
    """
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"-o must be a folder, not a file: {out_dir}")
    jobs = [FileJob(s, str(folder / f"{Path(s).stem}.vqc")) for s in sources]
    _refuse_collisions(jobs)
    return jobs


def plan_decompress(sources: Sequence[str], out_dir: str, *, image_format: str,
                    audio_format: str) -> tuple[list[FileJob], list[tuple[str, str]]]:
    """The batch `decompress SOURCES... -o OUT_DIR`: each .vqc file to OUT_DIR/<stem>.<format>,
    the format by the media type its header names.

    Args:
        sources: the .vqc files.
        out_dir: the output folder.
        image_format: suffix (without the dot) for images, e.g. "png".
        audio_format: suffix for audio, e.g. "wav".

    Returns:
        (jobs, failures): the files to decode, and (file, message) for those whose header
        could not be read (they have no output name).

    Raises:
        InputError: two inputs would write the same output, or OUT_DIR is a file.
    """
    from ..format import MediaType, read_header

    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"-o must be a folder, not a file: {out_dir}")
    jobs, failures = [], []
    for source in sources:
        try:
            media_type = read_header(read_input(source)).media_type
        except (VqcodecError, OSError) as e:
            failures.append((source, failure_message(e)))
            continue
        suffix = audio_format if media_type == MediaType.AUDIO else image_format
        jobs.append(FileJob(source, str(folder / f"{Path(source).stem}.{suffix}")))
    _refuse_collisions(jobs)
    return jobs, failures


def failure_message(error: BaseException) -> str:
    """The one-line message of an error (an OSError without its strerror noise)."""
    if isinstance(error, OSError) and not isinstance(error, VqcodecError):
        return f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# In a pool's worker process: whether it runs in one, and whether Ctrl-C (which reaches the
# whole process group) has been seen, after which the files still queued to it are skipped.
_in_worker = False
_interrupted = False


def _attempt(work: Callable[[FileJob], str], job: FileJob) -> tuple[bool, str]:
    """Run one file's work; (True, line) or (False, one-line message), never an exception
    (but Ctrl-C in this process), so that nothing unpicklable crosses a process boundary and a
    batch goes on."""
    global _interrupted
    if _interrupted:
        return False, "interrupted"
    try:
        return True, work(job)
    except (VqcodecError, OSError) as e:
        return False, failure_message(e)
    except KeyboardInterrupt:
        if not _in_worker:
            raise
        _interrupted = True
        return False, "interrupted"
    except Exception as e:  # a bug for one file must not cost the others their outputs
        return False, f"unexpected {type(e).__name__}: {failure_message(e)}"


def _start_worker(threads: int) -> None:
    """Worker start-up: `threads` torch threads each, so N workers share the cores instead of
    each taking all of them. The priors code exactly with any thread count."""
    global _in_worker
    _in_worker = True
    import torch
    torch.set_num_threads(threads)


def _failure_line(source: str, message: str) -> str:
    # Most messages already name the file ("no such file: a.png"); do not name it twice.
    return f"error: {message}" if source in message else f"error: {source}: {message}"


def run_batch(jobs: Sequence[FileJob], work: Callable[[FileJob], str], *, workers: int,
              quiet: bool, failures: Sequence[tuple[str, str]] = ()) -> int:
    """Run `work` on every job, each file succeeding or failing on its own.

    Args:
        jobs: the files to process.
        work: a module-level function of one job (picklable, for the process pool), e.g.
            `functools.partial(compress_one, settings=...)`; returns the line to print.
        workers: 1: one after another in this process (each model loaded once); more: a pool
            of that many processes (each loads the model once).
        quiet: no progress bar and no line per file written; errors are still printed.
        failures: (file, message) of files already refused while planning the batch.

    Returns:
        The number of files that failed (the ones in `failures` included).
    """
    from tqdm import tqdm

    for source, message in failures:
        print(_failure_line(source, message), file=sys.stderr, flush=True)
    failed = len(failures)
    bar = tqdm(total=len(jobs), file=sys.stderr, unit="file", dynamic_ncols=True,
               disable=quiet or not sys.stderr.isatty())

    def report(job: FileJob, ok: bool, line: str) -> None:
        nonlocal failed
        if not ok:
            failed += 1
            tqdm.write(_failure_line(job.source, line), file=sys.stderr)
        elif not quiet:
            tqdm.write(line, file=sys.stdout)
        bar.update(1)

    with bar:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                report(job, *_attempt(work, job))
            return failed
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        workers = min(workers, len(jobs))
        threads = max(1, (os.cpu_count() or 1) // workers)
        # spawn: fresh interpreters, safe whatever threads this process (or torch) has started.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(_attempt, work, job): job for job in jobs}
            try:
                for future in as_completed(futures):
                    try:
                        ok, line = future.result()
                    except BrokenProcessPool:
                        ok, line = False, "a worker process died (out of memory?)"
                    report(futures[future], ok, line)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return failed
