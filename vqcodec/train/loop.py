"""The step loop every trainer shares: a wall-clock budget (or a step count, for tests),
running means logged every few steps, and evaluate + checkpoint every few minutes and at the
end, so a run stopped at any point loses at most `eval_every_s` of work."""
from __future__ import annotations

import time
from typing import Callable, Sequence, TextIO

import numpy as np


def run_steps(*, step: int, minutes: float, max_steps: int | None,
              take_step: Callable[[], float | Sequence[float]],
              log_line: Callable[[int, np.ndarray], str],
              checkpoint: Callable[[int], None], log: TextIO, log_every: int,
              eval_every_s: float) -> int:
    """Train until `minutes` have passed or `max_steps` more steps are done; returns the step.

    Args:
        step: steps done before this call.
        take_step: one optimisation step; returns the numbers to average for the log.
        log_line: (step, means of take_step's numbers over the interval) -> one log line.
        checkpoint: evaluates and saves at a step; called every `eval_every_s` and at the end.
    """
    deadline = time.time() + minutes * 60
    last_step = step + max_steps if max_steps is not None else None
    last_eval, running = time.time(), 0.0
    while time.time() < deadline and (last_step is None or step < last_step):
        running = running + np.atleast_1d(np.asarray(take_step(), dtype=float))
        step += 1
        if step % log_every == 0:
            print(log_line(step, running / log_every), file=log, flush=True)
            running = 0.0
        if time.time() - last_eval > eval_every_s:
            checkpoint(step)
            last_eval = time.time()
    checkpoint(step)
    return step
