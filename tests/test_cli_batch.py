"""Batches: `vqcodec compress A B C -o DIR` and `decompress X Y -o DIR` in one process or a
pool; each file succeeds or fails on its own, no partial outputs, same files whatever --jobs;
the progress bar (a terminal only, not with --quiet)."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from vqcodec.cli.batch import AUDIO_FORMATS, IMAGE_FORMATS, FileJob, run_batch
from vqcodec.cli.main import cli

GOLDEN = Path(__file__).resolve().parent / "golden"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def no_temporary_files(folder: Path) -> bool:
    return not any(p.name.startswith(".") for p in folder.iterdir())


@pytest.fixture
def photos(tmp_path, rng) -> list[Path]:
    """Two small images of different sizes."""
    paths = []
    for name, (h, w) in {"one": (40, 56), "two": (33, 47)}.items():
        path = tmp_path / "in" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_compress_batch_with_bad_files(tmp_path, photos, tiny_integer_model_path):
    corrupt = tmp_path / "in" / "corrupt.png"
    corrupt.write_bytes(photos[0].read_bytes()[:60])
    out = tmp_path / "out"
    r = run("compress", photos[0], corrupt, tmp_path / "missing.png", photos[1], "-o", out,
            "--model", tiny_integer_model_path)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    errors = error_lines(r)
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors), errors
    assert "corrupt.png" in errors[0] and "missing.png" in errors[1], errors
    assert sorted(p.name for p in out.iterdir()) == ["one.vqc", "two.vqc"]
    assert "compressed 2 of 4 file(s)" in r.stdout

    decoded = tmp_path / "decoded"
    r = run("decompress", out / "one.vqc", out / "two.vqc", "-o", decoded,
            "--model", tiny_integer_model_path)
    assert r.exit_code == 0, r.output
    assert Image.open(decoded / "one.png").size == (56, 40)
    assert Image.open(decoded / "two.png").size == (47, 33)


def test_decompress_batch_with_bad_files(tmp_path, photos, tiny_integer_model_path):
    vqc = tmp_path / "vqc"
    assert run("compress", *photos, "-o", vqc, "--model", tiny_integer_model_path).exit_code == 0
    data = (vqc / "one.vqc").read_bytes()
    (vqc / "cut.vqc").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[-2] ^= 0xFF
    (vqc / "flip.vqc").write_bytes(bytes(flipped))
    out = tmp_path / "out"
    r = run("decompress", vqc / "cut.vqc", vqc / "one.vqc", vqc / "flip.vqc", vqc / "two.vqc",
            "-o", out, "--model", tiny_integer_model_path, "--image-format", "bmp")
    assert r.exit_code == 1, r.output
    errors = error_lines(r)
    assert len(errors) == 2, errors
    assert any("cut.vqc" in e and "truncated" in e for e in errors), errors
    assert any("flip.vqc" in e and "CRC" in e for e in errors), errors
    assert sorted(p.name for p in out.iterdir()) == ["one.bmp", "two.bmp"]
    assert Image.open(out / "two.bmp").size == (47, 33)


def test_same_output_name_refused_before_writing(tmp_path, photos, tiny_integer_model_path):
    other = tmp_path / "other" / "one.jpg"
    other.parent.mkdir()
    Image.open(photos[0]).save(other)
    out = tmp_path / "out"
    r = run("compress", photos[0], photos[1], other, "-o", out,
            "--model", tiny_integer_model_path)
    assert r.exit_code == 1
    assert error_lines(r) == [f"error: {photos[0]} and {other} would both be written to "
                              f"{out / 'one.vqc'}"]
    assert not out.exists()


def test_jobs_give_the_same_files(tmp_path, photos, tiny_integer_model_path):
    """A pool of 2 processes writes the same .vqc bytes as one process (exact integer prior,
    same indices) and decodes to the same images up to one level (the float decoder's sums are
    split by the thread count); a file that fails in a worker is one line."""
    missing = tmp_path / "missing.png"
    outputs = {}
    for jobs in (1, 2):
        vqc, png = tmp_path / f"vqc{jobs}", tmp_path / f"png{jobs}"
        r = run("compress", photos[0], missing, photos[1], "-o", vqc, "-j", jobs,
                "--model", tiny_integer_model_path)
        assert r.exit_code == 1, r.output
        assert error_lines(r) == [f"error: no such file: {missing}"]
        r = run("decompress", vqc / "one.vqc", vqc / "two.vqc", "-o", png, "-j", jobs,
                "--model", tiny_integer_model_path)
        assert r.exit_code == 0, r.output
        assert no_temporary_files(vqc) and no_temporary_files(png)
        outputs[jobs] = ({p.name: p.read_bytes() for p in vqc.iterdir()},
                         {p.name: np.asarray(Image.open(p), dtype=int) for p in png.iterdir()})
    assert len(outputs[1][0]) == 2 and outputs[1][0] == outputs[2][0]
    assert outputs[1][1].keys() == outputs[2][1].keys() == {"one.png", "two.png"}
    for name, image in outputs[1][1].items():
        assert np.abs(image - outputs[2][1][name]).max() <= 1


def test_mixed_batch_with_shipped_models(tmp_path):
    """Images and audio in one batch: --quality for the images, --bitrate for the audio, and
    the decoded formats chosen by media type."""
    image = GOLDEN / "vqimage-v3i-q6.png"
    clip = GOLDEN / "vqaudio-v1i-1.5kbps.flac"
    vqc, out = tmp_path / "vqc", tmp_path / "out"
    r = run("compress", image, clip, "-o", vqc, "-q", "2", "-b", "1.5")
    assert r.exit_code == 0, r.output
    r = run("info", vqc / "vqimage-v3i-q6.vqc")
    assert "model: vqimage-v3i" in r.output
    r = run("decompress", vqc / "vqimage-v3i-q6.vqc", vqc / "vqaudio-v1i-1.5kbps.vqc", "-o", out,
            "--audio-format", "flac", "-Q")
    assert r.exit_code == 0, r.output
    assert r.stdout == "" and r.stderr == ""
    assert sorted(p.name for p in out.iterdir()) == ["vqaudio-v1i-1.5kbps.flac",
                                                      "vqimage-v3i-q6.png"]


def test_quiet_single_file(tmp_path, photos, tiny_integer_model_path):
    r = run("compress", photos[0], tmp_path / "a.vqc", "-Q", "--model", tiny_integer_model_path)
    assert r.exit_code == 0 and r.output == ""
    assert (tmp_path / "a.vqc").exists()


@pytest.mark.parametrize("args", [["compress", "a.png"], ["compress", "a.png", "b", "c"],
                                  ["compress", "a.png", "a.vqc", "-j", "2"],
                                  ["decompress", "a.vqc", "a.png", "--audio-format", "wav"]])
def test_batch_options_need_a_batch(args):
    r = run(*args)
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_format_choices_are_writable():
    from vqcodec.io.audio import SAVE_EXTENSIONS as AUDIO_SAVE
    from vqcodec.io.image import SAVE_EXTENSIONS as IMAGE_SAVE
    assert {f".{f}" for f in IMAGE_FORMATS} <= IMAGE_SAVE
    assert {f".{f}" for f in AUDIO_FORMATS} - {".ogg"} <= AUDIO_SAVE


def echo_job(job: FileJob) -> str:
    if job.source == "bad":
        raise ValueError("a bug\nwith a second line")
    return f"{job.source} done"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_on_a_terminal_only(monkeypatch, quiet):
    jobs = [FileJob("a", "a.out"), FileJob("bad", "bad.out"), FileJob("c", "c.out")]
    for terminal in (True, False):
        err, out = (Terminal() if terminal else io.StringIO()), io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        monkeypatch.setattr(sys, "stdout", out)
        assert run_batch(jobs, echo_job, workers=1, quiet=quiet) == 1
        lines = [line for line in err.getvalue().replace("\r", "\n").splitlines()
                 if line.strip()]
        assert "error: bad: unexpected ValueError: a bug" in lines
        bar = [line for line in lines if "3/3" in line]
        assert bool(bar) == (terminal and not quiet), lines
        assert out.getvalue() == ("" if quiet else "a done\nc done\n")


@pytest.mark.parametrize("quiet", [False, True])
def test_rd_curve_progress_bar(tmp_path, photos, tiny_model_path, monkeypatch, quiet):
    """rd-curve draws a bar on a terminal (one step per image and rate setting), none with -Q."""
    import click.testing
    monkeypatch.setattr(click.testing._NamedTextIOWrapper, "isatty", lambda self: True)
    r = run("rd-curve", photos[0].parent, "--model", tiny_model_path, "--qualities", "1,2",
            "--baselines", "none", "--no-plots", "--out", tmp_path / "rd",
            *(["-Q"] if quiet else []))
    assert r.exit_code == 0, r.output
    assert "PSNR" in r.stdout
    assert ("4/4" in r.stderr) == (not quiet), r.stderr


def interrupted_job(job: FileJob) -> str:
    raise KeyboardInterrupt


def test_ctrl_c_stops_a_worker_and_a_sequential_batch(monkeypatch):
    """In this process Ctrl-C ends the batch; in a pool's worker (which gets it too, from the
    terminal's process group) it ends the file at hand and skips the files queued to it."""
    import vqcodec.cli.batch as batch
    with pytest.raises(KeyboardInterrupt):
        run_batch([FileJob("a", "a.out")], interrupted_job, workers=1, quiet=True)
    monkeypatch.setattr(batch, "_in_worker", True)
    monkeypatch.setattr(batch, "_interrupted", False)
    assert batch._attempt(interrupted_job, FileJob("a", "a.out")) == (False, "interrupted")
    assert batch._attempt(echo_job, FileJob("b", "b.out")) == (False, "interrupted")


def test_two_images_without_o_do_not_overwrite_the_second(tmp_path, photos,
                                                          tiny_integer_model_path):
    before = photos[1].read_bytes()
    r = run("compress", photos[0], photos[1], "--model", tiny_integer_model_path)
    assert r.exit_code == 1 and "use -o DIR" in r.stderr and "Traceback" not in r.output
    assert photos[1].read_bytes() == before
