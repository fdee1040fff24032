"""Several processes on one job, as `torchrun` starts them; a plain run is a world of one.

`torchrun --nproc-per-node N -m vqcodec.cli.main ...` starts N copies of a command with RANK,
WORLD_SIZE, LOCAL_RANK and a rendezvous address in their environment. `setup` joins them into
one process group: gloo where the shared tensors live on the CPU, nccl where they live on a
GPU (each process then takes the GPU of its LOCAL_RANK). A `World` says which process this is
and does what the processes share: agreeing on rank 0's decision, averaging numbers and
gradients, broadcasting rank 0's weights, gathering Python objects. In a plain run (no
WORLD_SIZE, or 1) every one of these returns its input untouched and talks to nobody, so a
single-process run computes exactly what it did before this module existed.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NoReturn

import torch

from .errors import VqcodecError

# Rank 0 may work alone for a long time while the others wait at a barrier (encoding a
# prior's index cache: many minutes on a CPU); torchrun ends the others if it fails.
_TIMEOUT = timedelta(hours=3)


def launched_size() -> int:
    """How many processes torchrun started for this job (1 in a plain run)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def launched_main() -> bool:
    """Whether this process is rank 0 of its torchrun job (or a plain run), before `setup`."""
    return os.environ.get("RANK", "0") == "0"


@dataclass(frozen=True)
class World:
    """This process's place among the job's processes, and what they do together.

    Args:
        rank: this process (0 writes the job's files and logs).
        size: how many processes the job has.
        local_rank: this process on its machine (which GPU it takes).
        device: where tensors that are shared between processes must live (CPU for gloo,
            this process's GPU for nccl).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes files and logs."""
        return self.rank == 0

    def shard(self, n: int, what: str = "--batch") -> slice:
        """This rank's equal part of n samples (rank r: samples r*n/N .. (r+1)*n/N - 1).

        Raises:
            VqcodecError: n does not split into `size` equal parts.
        """
        if n % self.size:
            raise VqcodecError(f"{what} {n} does not split evenly over {self.size} processes: "
                               f"give a multiple of {self.size}")
        part = n // self.size
        return slice(self.rank * part, (self.rank + 1) * part)

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag`, on every rank (decisions taken by rank 0's clock)."""
        if self.size == 1:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        torch.distributed.broadcast(t, 0)
        return bool(t.item())

    def mean(self, values: float | Sequence[float]) -> float | Sequence[float]:
        """The mean over ranks of a number or of a sequence of numbers (a list comes back)."""
        if self.size == 1:
            return values
        single = isinstance(values, (int, float))
        t = torch.tensor([values] if single else list(values), dtype=torch.float64,
                         device=self.device)
        torch.distributed.all_reduce(t)
        out = (t / self.size).tolist()
        return out[0] if single else out

    def sum_seconds(self, seconds: float) -> float:
        """The sum over ranks (CPU seconds of the whole job)."""
        return self.mean([seconds])[0] * self.size if self.size > 1 else seconds

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Replace every gradient by its mean over ranks (one all-reduce of all of them): with
        equal shards of a batch and a loss that is a mean over samples, this is the gradient
        of the whole batch."""
        if self.size == 1:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.size
        for g, piece in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(piece.view_as(g))

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over ranks, in place; returns it."""
        if self.size > 1:
            torch.distributed.all_reduce(tensor)
        return tensor

    def gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's `x` (the same shape on all) stacked along dim 0 in rank order: with
        equal shards of a batch in rank order, the rows the whole batch would have."""
        if self.size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.size)]
        torch.distributed.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's weights and buffers, and its global random state."""
        if self.size == 1:
            return
        with torch.no_grad():
            for t in module.state_dict().values():
                if t.dtype == torch.bool:  # gloo does not broadcast bools
                    u = t.to(torch.uint8)
                    torch.distributed.broadcast(u, 0)
                    t.copy_(u.bool())
                else:
                    torch.distributed.broadcast(t, 0)
        state = [torch.get_rng_state()]
        torch.distributed.broadcast_object_list(state, 0)
        torch.set_rng_state(state[0])

    def barrier(self) -> None:
        """Wait until every rank is here."""
        if self.size > 1:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it writes a cache), then the others (they read it)."""
        if self.size > 1 and not self.is_main:
            torch.distributed.barrier()
        yield
        if self.size > 1 and self.is_main:
            torch.distributed.barrier()

    def gather_objects(self, obj: object) -> list | None:
        """Every rank's `obj` (picklable), in rank order, on rank 0; None on the others."""
        if self.size == 1:
            return [obj]
        out: list | None = [None] * self.size if self.is_main else None
        torch.distributed.gather_object(obj, out, dst=0)
        return out

    def all_gather_objects(self, obj: object) -> list:
        """Every rank's `obj` (picklable), in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        out: list = [None] * self.size
        torch.distributed.all_gather_object(out, obj)
        return out


_world = World()


def current() -> World:
    """The world `setup` joined (a world of one before, or in a plain run)."""
    return _world


def setup(device: str | torch.device = "cpu") -> World:
    """Join the processes torchrun started (once per process; later calls return the same).

    Args:
        device: where this job's shared tensors live: "cpu" (gloo) or "cuda" (nccl, each
            process on the GPU of its LOCAL_RANK).
    """
    global _world
    size = launched_size()
    if size == 1 or torch.distributed.is_initialized():
        return _world
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev = torch.device("cpu")
        backend = "gloo"
    torch.distributed.init_process_group(backend, timeout=_TIMEOUT)
    atexit.register(_leave)
    _world = World(rank=torch.distributed.get_rank(), size=torch.distributed.get_world_size(),
                   local_rank=local_rank, device=dev)
    return _world


def joined() -> bool:
    """Whether this process joined a torchrun job's process group (`setup`)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def leave_and_exit(code: int) -> NoReturn:
    """End this rank of a torchrun job with exit status `code`, without Python's shutdown.

    On success the ranks first wait for each other and destroy the group; a failed rank
    leaves at once, so that torchrun ends the others. Then stdout and stderr are flushed and
    the process exits with `os._exit`. Why: gloo's worker thread frees a collective's tensors
    after the collective has returned; when that happens while the interpreter finalises,
    taking the GIL ends the thread and std::terminate aborts the rank ("terminate called
    without an active exception", SIGABRT; 1 run in 12 to 62 on a loaded 2-core machine,
    with or without a final barrier). A process that never finalises cannot hit it. Files
    are closed by then: logs, checkpoints and results are written inside `with` blocks.
    """
    if code == 0 and joined():
        try:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        except Exception as e:  # another rank failed meanwhile: so does the job
            print(f"error: leaving the torchrun job: {e}", file=sys.stderr)
            code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _leave() -> None:
    """At exit of a process that did not `leave_and_exit`: destroy the group (no barrier:
    the others may be gone)."""
    if joined():
        torch.distributed.destroy_process_group()


def local_device(device: str | torch.device) -> torch.device:
    """`device` as this process uses it: "cuda" becomes the GPU of its LOCAL_RANK."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and launched_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev
