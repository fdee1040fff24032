"""torchrun: two CPU processes (gloo) train and measure as one process does.

Training: every rank draws the whole batch of a step and keeps its equal shard, the gradients
are averaged over ranks, so 2 processes with per-rank batch b/2 follow the loss curve of 1
process with batch b on the same samples, within float tolerance (the sums run in another
order). rd-curve: rank r measures files r, r+2, ... and rank 0 writes the same JSON and CSV
as one process (times excepted). Tiny models, tiny data, a few steps.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import TINY_GROUPED_CONFIG, make_clip_folder, make_image_folder
from vqcodec.cli.main import cli
from vqcodec.distributed import World
from vqcodec.errors import TrainingError, VqcodecError
from vqcodec.eval.rd import RDRecord, merge_records
from vqcodec.train.data import CropSampler, SegmentSampler

TESTS = Path(__file__).resolve().parent
BATCH = 4
TIME_KEYS = {"encoding_time", "decoding_time", "roundtrip_time"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], *, cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run` on this machine, a free rendezvous port, one thread
    per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{free_port()}", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)






def logged_numbers(path: Path) -> list[tuple[str, list[str]]]:
    """Per log line: its kind ("step N" / "EVAL step N") and the numbers of its text (after
    the wall and CPU seconds), as printed."""
    out = []
    for line in path.read_text().splitlines():
        m = re.match(r"^(EVAL )?step (\d+) wall \S+ cpu \S+ (.*)$", line)
        if m:
            out.append((f"{m[1] or ''}step {m[2]}", re.findall(r"-?\d+\.\d+", m[3])))
    return out


def same_numbers(a: list[str], b: list[str]) -> bool:
    """Equal up to one unit in the last printed digit (a value at a rounding boundary)."""
    return len(a) == len(b) and all(
        abs(float(x) - float(y)) <= 1.01 * 10 ** -len(x.partition(".")[2]) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def training_runs(tmp_path_factory):
    """The worker's runs: 1 process with the whole batch, 2 processes with half each, and
    1 process with half the batch (what a rank would do alone)."""
    from vqcodec.train.image import train_grouped_codebooks
    root = tmp_path_factory.mktemp("dist")
    images = make_image_folder(root / "imgs", np.random.default_rng(0), 3)
    audio = make_clip_folder(root / "clips")
    sys.path.insert(0, str(TESTS))
    import distributed_worker
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_grouped_codebooks(run=str(root / "codebooks"), train=[images],
                                config=TINY_GROUPED_CONFIG, rd_lambda=0.01, crop=32,
                                pca_crops=8, codebook_crops=20, iters=2)
        for name in ("one", "two", "half"):  # the three start from the same state
            shutil.copytree(root / "codebooks", root / name / "grouped")
        distributed_worker.main(root / "one", images, audio, BATCH)
        distributed_worker.main(root / "half", images, audio, BATCH // 2)
    finally:
        torch.set_num_threads(threads)
    r = torchrun([str(TESTS / "distributed_worker.py"), str(root / "two"), images, audio,
                  str(BATCH)], cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    return root


LOGS = ["ae/log.txt", "ae/prior_log.txt", "grouped/filter_log.txt", "grouped/prior_log.txt",
        "audio/log.txt", "audio/prior_log.txt"]


@pytest.mark.parametrize("log", LOGS)
def test_two_processes_follow_the_loss_curve_of_one(training_runs, log):
    one = logged_numbers(training_runs / "one" / log)
    two = logged_numbers(training_runs / "two" / log)
    steps = [f"step {s}" for s in range(1, 4)]
    assert [kind for kind, _ in one] == steps + ["EVAL step 3"]
    assert [kind for kind, _ in two] == [kind for kind, _ in one]  # rank 0's lines only
    for (kind, a), (_, b) in zip(one, two):
        assert same_numbers(a, b), (log, kind, a, b)


def test_the_comparison_tells_other_samples_apart(training_runs):
    """One process on half the batch (a rank's shard alone) draws a different curve."""
    for log in ("ae/log.txt", "grouped/filter_log.txt", "audio/log.txt"):
        one = logged_numbers(training_runs / "one" / log)
        half = logged_numbers(training_runs / "half" / log)
        assert not all(same_numbers(a, b) for (_, a), (_, b) in zip(one[:3], half[:3])), log


def test_two_processes_write_the_state_of_one(training_runs):
    for state in ("ae/state.pt", "ae/prior_state.pt", "grouped/state.pt",
                  "grouped/prior_state.pt", "audio/state.pt", "audio/prior_state.pt"):
        one = torch.load(training_runs / "one" / state, weights_only=True)
        two = torch.load(training_runs / "two" / state, weights_only=True)
        assert {k for k in one if k.endswith("step")} == {k for k in two if k.endswith("step")}
        assert all(one[k] == two[k] for k in one if k.endswith("step")), state
        for key, a in one["model"].items():
            b = two["model"][key]
            if "codebook" in key or "ema_" in key:  # EMA codebooks: the whole batch's sums
                assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (state, key)
            else:  # Adam's steps amplify rounding in near-zero gradients: at most ~lr apart
                assert torch.allclose(a.float(), b.float(), atol=3e-3), (state, key)


def test_shards_make_up_the_batch_of_one_process(tmp_path):
    images = [torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8) for _ in range(3)]
    whole = CropSampler(images, 16, seed=5).batch(6)
    worlds = [World(rank=r, size=3) for r in range(3)]
    parts = [CropSampler(images, 16, seed=5).batch(6, w.shard(6)) for w in worlds]
    assert torch.equal(torch.cat(parts), whole)
    signals = [torch.randn(3000), torch.randn(5000)]
    whole = SegmentSampler(signals, 800, seed=2).batch(4)
    with pytest.raises(VqcodecError, match="does not split evenly over 3 processes"):
        worlds[0].shard(4)
    worlds = [World(rank=r, size=2) for r in range(2)]
    parts = [SegmentSampler(signals, 800, seed=2).batch(4, w.shard(4)) for w in worlds]
    assert torch.equal(torch.cat(parts), whole)


def test_merged_records_take_the_order_of_one_process():
    names = ["a", "b", "c"]
    one = [RDRecord(codec, q, n) for codec in ("m", "jpeg") for q in (1, 2) for n in names]
    shares = [[r for r in one if names.index(r.item) % 2 == k] for k in range(2)]
    assert merge_records(shares, names) == one


def test_one_process_commands_refuse_torchrun(tmp_path, monkeypatch):
    """Under torchrun with 2 processes: a one-line error and exit status 1."""
    from vqcodec.train.image import train_grouped_codebooks
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TrainingError, match="image-codebooks runs in one process only"):
        train_grouped_codebooks(run=str(tmp_path / "r"), train=["x"], rd_lambda=0.01)
    for args in (["image-codebooks", str(tmp_path / "r")],
                 ["export", str(tmp_path / "r"), str(tmp_path / "m.safetensors"), "--name",
                  "m", "--default-quality", "1"],
                 ["integerize", "m.safetensors", str(tmp_path / "i.safetensors"), "--name",
                  "i"]):
        r = CliRunner().invoke(cli, ["train", *args])
        assert r.exit_code == 1, (args, r.output)
        assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
        assert "runs in one process only" in r.output


def _close(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def test_rd_curve_in_two_processes_writes_what_one_writes(tmp_path, tiny_model_path):
    folder = tmp_path / "imgs"
    make_image_folder(folder, np.random.default_rng(0), 5, size=(48, 64))
    (folder / "bad.png").write_bytes(b"not a png")
    args = ["rd-curve", str(folder), "--model", tiny_model_path, "--baselines", "jpeg",
            "--baseline-qualities", "50,90", "--no-plots", "--per-image", "--actual",
            "--batch-size", "2", "--device", "cpu"]
    one = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    r = torchrun(["-m", "vqcodec.cli.main", *args, "--out", str(tmp_path / "two")],
                 cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("wrote ") == 1 and "5 images, 1 skipped" in r.stdout  # rank 0 only
    assert r.stderr.count("skipping bad.png") == 1
    for name in ("tiny-test.json", "jpeg.json"):
        a = json.loads((tmp_path / "one" / name).read_text())
        b = json.loads((tmp_path / "two" / name).read_text())
        assert a["name"] == b["name"] and a["description"] == b["description"]
        assert a["results"].keys() == b["results"].keys()
        for key in set(a["results"]) - TIME_KEYS:
            assert all(_close(x, y) for x, y in zip(a["results"][key], b["results"][key])), key
    for name in ("rd.csv", "per_image.csv"):
        rows = [list(csv.DictReader((tmp_path / run / name).open())) for run in ("one", "two")]
        assert len(rows[0]) == len(rows[1]) > 0
        for x, y in zip(*rows):
            assert x.keys() == y.keys()
            for key in set(x) - TIME_KEYS:
                same = x[key] == y[key] or _close(float(x[key]), float(y[key]))
                assert same, (name, key, x[key], y[key])


def test_leave_and_exit_flushes_and_keeps_the_status():
    """A rank's last words reach its log: stdout is flushed before os._exit."""
    code = ("import sys; from vqcodec.distributed import leave_and_exit; "
            "print('done', end=''); print('warn', end='', file=sys.stderr); leave_and_exit(3)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(TESTS.parent)})
    assert (r.returncode, r.stdout, r.stderr) == (3, "done", "warn")
