"""The run loop every trainer shares.

A run folder holds one model being trained: `config.json`, state files (our own files, loaded
with weights_only=True) and log files. `TrainingRun` is one training job in it: it resumes
from the job's state file, writes checkpoints atomically (a run stopped at any point loses at
most `eval_every_s` of work), and writes log lines that all carry the run's wall and CPU
seconds, so quality can be read against compute. `run_steps` is the bare step loop.

Under torchrun (`vqcodec.distributed`) every process runs the same job on its shard of each
batch: rank 0's clock decides when to stop and when to checkpoint, the numbers logged and the
gradients are means over ranks (`TrainingRun.average_gradients`), the CPU seconds are summed
over ranks, and rank 0 alone evaluates, logs and writes the state file.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence, TextIO

import numpy as np
import torch

from .. import distributed
from ..errors import TrainingError, VqcodecError
from ..nn.audio_model import AudioModelConfig
from ..nn.image_model import ImageModelConfig

ModelConfig = ImageModelConfig | AudioModelConfig


def run_steps(*, step: int, minutes: float, max_steps: int | None,
              take_step: Callable[[], float | Sequence[float]],
              log_line: Callable[[int, np.ndarray], str],
              checkpoint: Callable[[int], None], log: TextIO, log_every: int,
              eval_every_s: float, agree: Callable[[bool], bool] = bool) -> int:
    """Train until `minutes` have passed or `max_steps` more steps are done; returns the step.

    Args:
        step: steps done before this call.
        take_step: one optimisation step; returns the numbers to average for the log.
        log_line: (step, means of take_step's numbers over the interval) -> one log line.
        checkpoint: evaluates and saves at a step; called every `eval_every_s` and at the end.
        agree: a decision taken by this process's clock -> the one every process takes
            (`World.agree`, rank 0's; a plain run's own).
    """
    deadline = time.time() + minutes * 60
    last_step = step + max_steps if max_steps is not None else None
    last_eval, running = time.time(), 0.0
    while agree(time.time() < deadline) and (last_step is None or step < last_step):
        running = running + np.atleast_1d(np.asarray(take_step(), dtype=float))
        step += 1
        if step % log_every == 0:
            print(log_line(step, running / log_every), file=log, flush=True)
            running = 0.0
        if agree(time.time() - last_eval > eval_every_s):
            checkpoint(step)
            last_eval = time.time()
    checkpoint(step)
    return step


class TrainingRun:
    """One training job in a run folder: its progress, state file and log.

    The job's entries in the state file are `model`, and `<prefix>opt`, `<prefix>step`,
    `<prefix>cpu_s`, `<prefix>wall_s`. Saving keeps the file's other entries, so a job can
    train into the state file of the job before it (the grouped model's post-filter writes
    `filter_*` entries into the autoencoder's `state.pt`).

    Use as a context manager around the steps: entering opens the log (append) and starts
    the clocks, leaving closes the log.

    Creating one joins the processes of a torchrun job (`distributed.setup`): every rank reads
    the state file, rank 0 alone writes it and the log (the others' log lines go nowhere).

    Args:
        folder: the run folder (created if missing).
        state_file: the job's state file in it.
        log_file: the job's log file in it.
        prefix: of the job's progress entries in the state file.
        device: where the job's tensors live ("cuda" becomes this process's GPU under
            torchrun: `device`).
    """

    def __init__(self, folder: str | Path, *, state_file: str = "state.pt",
                 log_file: str = "log.txt", prefix: str = "", device: str = "cpu") -> None:
        self.world = distributed.setup(device)
        self.device = str(distributed.local_device(device))
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.state_path = self.folder / state_file
        self.log_path = self.folder / log_file
        self.prefix = prefix
        self.state: dict = (torch.load(self.state_path, weights_only=True,
                                       map_location=self.device)
                            if self.state_path.exists() else {})
        self.step: int = self.state.get(prefix + "step", 0)
        self._cpu0: float = self.state.get(prefix + "cpu_s", 0.0)
        self._wall0: float = self.state.get(prefix + "wall_s", 0.0)
        self._log: TextIO | None = None
        self._t_wall, self._t_cpu = time.time(), time.process_time()

    @property
    def resumed(self) -> bool:
        """Whether the state file holds this job's progress (else the job starts now)."""
        return self.prefix + "step" in self.state

    def continue_from(self, *, step: int, cpu_s: float, wall_s: float) -> None:
        """Count the steps and seconds of earlier training elsewhere (a shipped model's)."""
        self.step, self._cpu0, self._wall0 = step, cpu_s, wall_s

    def restore_optimizer(self, optimizer: torch.optim.Optimizer, *, lr: float) -> None:
        """Load the optimizer's saved state when there is one, then set every parameter
        group's learning rate to `lr` times its "lr_scale" (1 when it has none): a resumed
        run takes the learning rate it is given now."""
        if self.prefix + "opt" in self.state:
            optimizer.load_state_dict(self.state[self.prefix + "opt"])
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def shard(self, batch: int) -> slice:
        """This process's part of a batch of `batch` samples (all of it in a plain run).

        Raises:
            TrainingError: `batch` does not split evenly over the processes.
        """
        try:
            return self.world.shard(batch)
        except VqcodecError as e:
            raise TrainingError(str(e)) from None

    def average_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """After backward: the gradients of the optimizer's parameters become their mean over
        the processes (nothing in a plain run)."""
        self.world.average_gradients(p for group in optimizer.param_groups
                                     for p in group["params"])

    def __enter__(self) -> TrainingRun:
        self._log = open(self.log_path if self.world.is_main else os.devnull, "a")
        self._t_wall, self._t_cpu = time.time(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self._log.close()
        self._log = None

    def elapsed(self) -> tuple[float, float]:
        """(wall, CPU) seconds of the whole job, earlier calls included; under torchrun the
        CPU seconds of all processes (every process must call this at the same point)."""
        return (self._wall0 + time.time() - self._t_wall,
                self._cpu0 + self.world.sum_seconds(time.process_time() - self._t_cpu))

    @property
    def log_stream(self) -> TextIO:
        """The open log file (inside the `with` block), for code that prints its own lines."""
        if self._log is None:
            raise RuntimeError("the log of a TrainingRun is open only inside its with block")
        return self._log

    def log(self, line: str) -> None:
        """Append a line to the job's log (inside the `with` block)."""
        print(line, file=self.log_stream, flush=True)

    def timed(self, text: str) -> str:
        """`text` after the run's step and seconds: 'step N wall Ws cpu Cs text'."""
        wall, cpu = self.elapsed()
        return f"step {self.step} wall {wall:.0f}s cpu {cpu:.0f}s {text}"

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """Write the model, optimizer and progress atomically (temporary file + rename); under
        torchrun every process calls this and rank 0 writes."""
        wall, cpu = self.elapsed()
        if not self.world.is_main:
            self.world.barrier()  # the state file is written when any rank goes on
            return
        p = self.prefix
        entries = {"model": model.state_dict(), p + "step": self.step, p + "cpu_s": cpu,
                   p + "wall_s": wall}
        if optimizer is not None:
            entries[p + "opt"] = optimizer.state_dict()
        tmp = self.state_path.with_suffix(".tmp")
        torch.save({**self.state, **entries}, tmp)
        os.replace(tmp, self.state_path)
        self.world.barrier()

    def train(self, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              take_step: Callable[[], float | Sequence[float]],
              describe: Callable[[np.ndarray], str], evaluate: Callable[[], str],
              minutes: float, max_steps: int | None, log_every: int,
              eval_every_s: float) -> None:
        """Run `run_steps` and log, evaluate and save as it goes (inside the `with` block).

        Args:
            model, optimizer: what `save` writes at every checkpoint.
            take_step: one optimisation step; returns the numbers to average for the log
                (under torchrun this rank's, which are then averaged over ranks).
            describe: the means of take_step's numbers over a log interval -> log text.
            evaluate: validation -> the text of an 'EVAL step ...' line (rank 0 only).
            minutes, max_steps: the budget of this call (a step count is for tests).
            log_every: steps per log line.
            eval_every_s: seconds between checkpoints (there is always one at the end).
        """
        def log_line(at: int, means: np.ndarray) -> str:
            self.step = at
            return self.timed(describe(means))

        def checkpoint(at: int) -> None:
            self.step = at
            text = evaluate() if world.is_main else ""
            self.log("EVAL " + self.timed(text))
            self.save(model, optimizer)

        world = self.world
        if world.size > 1:
            # Every rank starts from rank 0's weights and random state; modules that keep
            # batch statistics of their own (EMA codebooks) are told the world.
            world.broadcast_module(model)
            for module in model.modules():
                if hasattr(module, "data_parallel"):
                    module.data_parallel = world
        step = take_step if world.size == 1 else lambda: world.mean(take_step())
        run_steps(step=self.step, minutes=minutes, max_steps=max_steps, take_step=step,
                  log_line=log_line, checkpoint=checkpoint, log=self.log_stream,
                  log_every=log_every, eval_every_s=eval_every_s, agree=world.agree)


def single_process(what: str) -> None:
    """Refuse a command that does not run sharded under torchrun with several processes.

    Raises:
        TrainingError: this process is one of several torchrun started.
    """
    if distributed.launched_size() > 1:
        raise TrainingError(f"{what} runs in one process only; start it without torchrun "
                            f"(or with --nproc-per-node 1)")


def write_run_config(folder: str | Path, config: ModelConfig) -> None:
    """Write a run's model config (`config.json`, with its kind); under torchrun rank 0
    writes it."""
    if not distributed.launched_main():
        return
    kind = "audio" if isinstance(config, AudioModelConfig) else "image"
    path = Path(folder) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kind": kind, **config.to_dict()}))


def read_run_config(folder: str | Path, kind: str | None = None) -> ModelConfig:
    """The model config of a run folder (config.json; its "kind" defaults to image), or for a
    new run the config new runs of `kind` (default image) start from.

    Raises:
        TrainingError: the folder holds a run of another kind than `kind`.
    """
    path = Path(folder) / "config.json"
    if not path.exists():
        if (kind or "image") == "image":
            from ..nn.image_model import NEW_RUN_CONFIG
            return NEW_RUN_CONFIG
        return AudioModelConfig()
    d = json.loads(path.read_text())
    found = d.pop("kind", "image")
    if kind is not None and found != kind:
        raise TrainingError(f"{folder} holds a {found} model run, not {kind}")
    return (AudioModelConfig if found == "audio" else ImageModelConfig).from_dict(d)
