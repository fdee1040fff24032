"""The CLI answers without torch whatever needs no model: help, version, `info`, and every error
that a missing file, a bad .vqc header, a wrong suffix or a bad option gives.

Each case runs the console entry `main()` in one subprocess in which torch cannot be imported
(`sys.modules["torch"] = None`): a case that imports torch fails with an ImportError there.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
IMAGE_VQC = GOLDEN / "vqimage-v3i-q6.vqc"
AUDIO_VQC = GOLDEN / "vqaudio-v1i-6kbps.vqc"

# Runs each case (argv) through `main()`; prints one JSON object per case: exit status, stdout,
# stderr, and whether numpy was imported by then.
RUNNER = r"""
import contextlib, io, json, sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
from vqcodec.cli.main import main
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["vqcodec", *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:
            code = f"{type(e).__name__}: {e}"
    print(json.dumps({"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue(),
                      "numpy": "numpy" in sys.modules}))
"""


def run_without_torch(cases: list[list[str]], cwd: Path) -> list[dict]:
    """Run each argv through the CLI entry in one torch-less subprocess."""
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(cases)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(cases), done.stdout + done.stderr
    return results


def assert_one_line_error(result: dict, pattern: str) -> None:
    assert result["code"] == 1, result
    assert "Traceback" not in result["err"] and result["out"] == "", result
    lines = [line for line in result["err"].splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result
    assert pattern in lines[0], result


def test_help_version_and_info_need_neither_torch_nor_numpy(tmp_path):
    from vqcodec.cli.main import cli
    train = cli.commands["train"]
    cases = ([["--help"], ["--version"]] + [[name, "--help"] for name in cli.commands]
             + [["train", name, "--help"] for name in train.commands]
             + [["info", str(IMAGE_VQC)], ["info", str(AUDIO_VQC)]])
    results = run_without_torch(cases, tmp_path)
    for result in results:
        assert result["code"] == 0, result
        assert not result["numpy"], f"{result['argv']} imported numpy"
    by_args = {tuple(r["argv"]): r for r in results}
    assert "Usage" in by_args[("--help",)]["out"]
    assert "0." in by_args[("--version",)]["out"]
    image = by_args[("info", str(IMAGE_VQC))]["out"]
    assert "model: vqimage-v3i" in image and "image: 64x48 RGB" in image
    assert "media: audio" in by_args[("info", str(AUDIO_VQC))]["out"]


def test_errors_that_need_no_model(tmp_path):
    truncated = tmp_path / "cut.vqc"
    truncated.write_bytes(IMAGE_VQC.read_bytes()[:30])
    corrupted = tmp_path / "flip.vqc"
    data = bytearray(IMAGE_VQC.read_bytes())
    data[-3] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    not_vqc = tmp_path / "notes.vqc"
    not_vqc.write_text("hello")
    not_image = tmp_path / "fake.png"
    not_image.write_text("not an image")
    photo = GOLDEN / "vqimage-v3i-q6.png"
    out = tmp_path / "out"
    cases = {
        "no such file": ["info", "missing.vqc"],
        "bad magic": ["info", str(not_vqc)],
        "truncated": ["info", str(truncated)],
        "no such file: missing.vqc": ["decompress", "missing.vqc", "x.png"],
        "magic": ["decompress", str(not_vqc), "x.png"],
        "truncated .vqc": ["decompress", str(truncated), "x.png"],
        "CRC": ["decompress", str(corrupted), "x.png"],
        "cannot write image format '.txt'": ["decompress", str(IMAGE_VQC), "x.txt"],
        "cannot write audio '.txt'": ["decompress", str(AUDIO_VQC), "x.txt"],
        "no such folder": ["decompress", str(IMAGE_VQC), str(tmp_path / "nope" / "x.png")],
        "no such file: missing.png": ["compress", "missing.png", "x.vqc"],
        "not an image": ["compress", str(not_image), "x.vqc"],
        "--bitrate is for audio": ["compress", str(photo), "x.vqc", "--bitrate", "6"],
        "no such folder: ": ["compress", str(photo), str(tmp_path / "nope" / "x.vqc")],
        "no such folder: nodir": ["rd-curve", "nodir"],
    }
    for (pattern, argv), result in zip(cases.items(), run_without_torch(list(cases.values()),
                                                                         tmp_path)):
        assert_one_line_error(result, pattern)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.vqc").exists()
    assert not out.exists()


@pytest.mark.parametrize("argv", [["compress", "--bogus"], ["compress", "a.png"],
                                  ["decompress", "a.vqc", "a.png", "--image-format", "png"],
                                  ["info"]])
def test_bad_usage_exits_2_without_torch(tmp_path, argv):
    (result,) = run_without_torch([argv], tmp_path)
    assert result["code"] == 2, result
    assert "Traceback" not in result["err"] and "Error:" in result["err"], result


def test_batch_of_unreadable_files_needs_no_torch(tmp_path):
    """Every file of the batch refused on its header: one line each, exit 1, nothing written."""
    bad = tmp_path / "bad.vqc"
    bad.write_bytes(b"VQC")
    out = tmp_path / "out"
    (result,) = run_without_torch([["decompress", "missing.vqc", str(bad), "-o", str(out)]],
                                  tmp_path)
    assert result["code"] == 1, result
    lines = result["err"].splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines), result
    assert "missing.vqc" in lines[0] and "bad.vqc" in lines[1], lines
    assert not out.exists() or not any(out.iterdir())
