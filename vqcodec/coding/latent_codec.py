"""Stage-by-stage coding of residual-VQ index grids (the image latent codec).

`compress` and `decompress` run one loop, `_walk`, so the encoder computes exactly the prior
evaluations the decoder will: same inputs, same shapes, same order. Stream order: stage 0..S'-1,
within a stage the passes of the context schedule, within a pass positions in raster order.
Stages can go into one range-coder stream or into one stream each (format versions 3 to 5),
and decoding can stop after any stage: a stage depends on earlier stages only.

`context_stages=k` (format versions 4, 5) codes the stages from k on in one pass each
(`context.stage_schedules`): their positions are predicted from the earlier stages only, so
each costs one prior evaluation instead of one per pass of the schedule.

`anchor_weight=w` (exact codecs, format version 4): stage 0's first pass, which sees nothing
at all (no earlier stage, no neighbour), so that its tables are the prior's average over every
rate, is coded with its counts mixed with the counts of the codes already coded in the window
(`AdaptiveCounts`): backward adaptation to the image and the rate, in parts of `ANCHOR_PART`
positions.

`adapt=True` (exact codecs, format version 5) adapts every pass of every window the same way,
with its own weight: the encoder scores the whole pass, picks the cheapest of
`ADAPTATION_WEIGHTS` (or none) for the indices it codes, and writes that choice into the stream
before the pass (3 bits, a uniform table), so the decoder reads it before it needs it. The
prior was trained over every rate and does not know the file's: at low rates its later rounds
are nearly all code 0, which the adapted tables learn within a few parts.

Tiles (`tile=T`): the grid is cut into T x T windows (the last ones smaller) that are coded
independently, in raster order, each walk seeing only its window (zero beyond its borders, as
at the grid's borders). Each stage's stream then holds the windows one after another, so it
needs one stream per stage; a grid that fits in one window codes exactly as untiled. Memory
and time per window are bounded, so a large image costs time linear in its area.
`sample` runs the same walk with indices drawn from the tables instead of coded.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Callable

import math

import numpy as np
import torch
import torch.nn.functional as F

from .context import pass_masks, passes_with_context, stage_schedules
from ..nn.grouped_rvq import GroupedResidualQuantizer
from ..nn.fixed_point import ExpTable, exact_mode
from ..nn.image_prior import GroupedStagePrior, StagePrior
from ..nn.rvq import ResidualQuantizer
from .entropy import IndexDecoder, IndexEncoder, nll_bits, probability_table

if TYPE_CHECKING:
    from ..nn.integer_prior import IntegerStagePrior

# (stage, window (rows, columns) of the grid being walked, mask [h, w] of the window's
# positions in this part of a pass, their scores [n, K] and probability table [n, K]) -> the
# indices at those positions [n]. A pass may come in several parts, each a run of its
# positions in raster order, in that order: coding them one after another writes the same
# stream as coding the pass at once.
Window = tuple[slice, slice]
PassCoder = Callable[[int, Window, torch.Tensor, torch.Tensor, np.ndarray], np.ndarray]


def tile_windows(height: int, width: int, tile: int | None) -> list[Window]:
    """The windows a grid is coded in, raster order: the whole grid if `tile` is None or the
    grid fits in one tile, else tile x tile windows (the last row and column smaller).

    Args:
        height, width: the latent grid.
        tile: the tile side in latent positions (>= 1), or None.
    """
    if tile is None or (height <= tile and width <= tile):
        return [(slice(0, height), slice(0, width))]
    if tile < 1:
        raise ValueError(f"tile must be at least 1, got {tile}")
    return [(slice(r, min(r + tile, height)), slice(c, min(c + tile, width)))
            for r in range(0, height, tile) for c in range(0, width, tile)]


@contextmanager
def single_thread():
    """No-grad, one torch thread, for evaluating a prior while coding: how torch splits an op
    across threads changes its float rounding, and a file must decode whatever thread count
    the decoding machine uses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)


# Draws one index per row of a probability table [n, K] (see `sampling.TableSampler`).
TableDraw = Callable[[np.ndarray], np.ndarray]

# Positions per part of an adapted pass: its tables see the codes of every earlier part.
ANCHOR_PART = 16

# Format version 5: the weights a pass can be adapted with (None: not adapted). Each pass of
# each window begins with the index of its weight, coded with the uniform CHOICE_TABLE.
ADAPTATION_WEIGHTS: tuple[int | None, ...] = (None, 4, 16, 64, 256, 1024, 4096, 16384)
CHOICE_TABLE = np.full((1, len(ADAPTATION_WEIGHTS)), 1.0 / len(ADAPTATION_WEIGHTS))
CHOICE_BITS = math.log2(len(ADAPTATION_WEIGHTS))


class AdaptiveCounts:
    """Integer counts of the codes coded so far in one pass, per group, mixed into the prior's
    count tables: a row c becomes weight * c + seen[g] * sum(c), i.e. probabilities
    (weight * p + seen) / (weight + number seen). A group's counts are halved (floor) once they
    pass `LIMIT`, which keeps every sum below 2^53 (exact) and follows local statistics.
    numpy float64 (integers): a part's table is small, and numpy's element-wise ops neither
    cost torch's dispatch per op nor wait on busy threads.

    Args:
        groups, num_codes: the table layout (rows: positions x groups).
        weight: how many codes the prior's table is worth, >= 1.
    """

    LIMIT = 4096

    def __init__(self, *, groups: int, num_codes: int, weight: int) -> None:
        self.groups, self.weight = groups, float(weight)
        self.seen = np.zeros((groups, num_codes))

    def mix(self, counts: np.ndarray, sums: np.ndarray | None = None) -> np.ndarray:
        """Mixed integer counts of counts [n * G, K] (rows position-major, then group), given
        or computing their row sums [n * G]."""
        c = counts.reshape(-1, self.groups, counts.shape[-1])
        s = c.sum(-1, keepdims=True) if sums is None else sums.reshape(-1, self.groups, 1)
        return (c * self.weight + self.seen[None] * s).reshape(counts.shape)

    def table(self, counts: np.ndarray, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(`mix(counts, sums)`, that divided by its row sums: the probability table) of counts
        [n * G, K] with row sums [n * G]."""
        mixed = self.mix(counts, sums)
        return mixed, mixed / self.mixed_sums(sums)[:, None]

    def mixed_sums(self, sums: np.ndarray) -> np.ndarray:
        """The row sums of `mix(counts)` from those of counts [n * G]: sum * (weight + seen)."""
        return (sums.reshape(-1, self.groups) * (self.weight + self.seen.sum(-1))).reshape(
            sums.shape)

    def update(self, symbols: np.ndarray) -> None:
        """Count the codes [n * G] just coded."""
        sym = np.asarray(symbols, dtype=np.int64).reshape(-1, self.groups)
        np.add.at(self.seen, (np.broadcast_to(np.arange(self.groups), sym.shape), sym), 1.0)
        over = self.seen.sum(-1) > self.LIMIT
        if over.any():
            self.seen[over] = np.floor(self.seen[over] * 0.5)


def adaptation_bits(counts: torch.Tensor, symbols: np.ndarray, groups: int,
                    weights: Sequence[int | None] = ADAPTATION_WEIGHTS,
                    part: int = ANCHOR_PART, sums: torch.Tensor | None = None) -> np.ndarray:
    """Bits [len(weights)] of one pass's symbols [n * G] (stream order) under its integer
    counts [n * G, K] (row sums `sums`, computed if not given) mixed as `AdaptiveCounts` mixes
    them with each weight (None: as they are), part by part of `part` positions. A symbol x of
    a row c, with seen counts s of its group, costs -log2((w c[x] + s[x] sum(c)) / ((w + sum(s))
    sum(c))): only c[x], sum(c) and the seen counts matter, so no mixed table is built. An
    encoder's estimate to choose by (float logarithms); what it then codes is exact."""
    symbols = np.asarray(symbols, dtype=np.int64)
    total = (counts.sum(1, dtype=torch.float64) if sums is None else sums).numpy()
    hit = counts[torch.arange(len(symbols)), torch.from_numpy(symbols)].double().numpy()
    seen_x = np.empty(len(symbols))
    seen_n = np.empty(len(symbols))
    adaptive = AdaptiveCounts(groups=groups, num_codes=counts.shape[1], weight=1)
    group = np.arange(groups)
    step = part * groups
    for start in range(0, len(symbols), step):
        rows = symbols[start:start + step].reshape(-1, groups)
        seen_x[start:start + step] = adaptive.seen[group, rows].reshape(-1)
        seen_n[start:start + step] = np.broadcast_to(adaptive.seen.sum(1), rows.shape).reshape(-1)
        adaptive.update(rows)
    out = np.empty(len(weights))
    for i, w in enumerate(weights):
        p = hit / total if w is None else (w * hit + seen_x * total) / ((w + seen_n) * total)
        out[i] = -np.log2(p).sum()
    return out


def cheapest_weight(counts: torch.Tensor, symbols: np.ndarray, groups: int,
                    sums: torch.Tensor | None = None) -> int:
    """The index into `ADAPTATION_WEIGHTS` of the weight that codes one pass in the fewest
    bits (`adaptation_bits`; ties: the first, None before any weight): the encoder's choice,
    and the evaluation's."""
    return int(np.argmin(adaptation_bits(counts, symbols, groups, sums=sums)))


class PassWeights:
    """Which passes of a walk are adapted (`AdaptiveCounts`), and with what weight; this
    base adapts none."""

    # Whether `weight` looks at the pass's counts (an encoder choosing). If not (a decoder
    # reading the choice, a fixed weight), the walk asks before scoring the pass and codes it
    # as it scores it, holding no whole-pass table.
    needs_tables = True

    def adapts(self, stage: int, pass_index: int) -> bool:
        """Whether the pass may be adapted: the walk then scores the whole pass before
        coding any of it, and asks `weight`."""
        return False

    def weight(self, stage: int, window: Window, mask: torch.Tensor, counts: torch.Tensor,
               sums: torch.Tensor) -> int | None:
        """The weight of a pass that `adapts` (None: not adapted), given its integer counts
        [n * G, K] as they are (stream order), their row sums [n * G] and its positions
        `mask` in `window`; without `needs_tables` it is asked before the pass is scored,
        with counts and sums None."""
        return None


class AnchorWeight(PassWeights):
    """Format version 4: stage 0's first pass of every window, with one weight."""

    needs_tables = False

    def __init__(self, weight: int) -> None:
        self.value = weight

    def adapts(self, stage: int, pass_index: int) -> bool:
        return stage == 0 and pass_index == 0

    def weight(self, stage: int, window: Window, mask: torch.Tensor, counts: torch.Tensor,
               sums: torch.Tensor) -> int | None:
        return self.value


class ChosenWeights(PassWeights):
    """Format version 5, encoder: every pass's cheapest weight of `ADAPTATION_WEIGHTS` for the
    indices it codes; `write(stage, choice)` puts the choice into the stage's stream.

    Args:
        want: the indices being coded, walk layout [S', H, W, G].
        write: called with (stage, index into ADAPTATION_WEIGHTS) before the pass is coded.
    """

    def __init__(self, want: torch.Tensor, write: Callable[[int, int], None]) -> None:
        self.want, self.write = want, write

    def adapts(self, stage: int, pass_index: int) -> bool:
        return True

    def weight(self, stage: int, window: Window, mask: torch.Tensor, counts: torch.Tensor,
               sums: torch.Tensor) -> int | None:
        symbols = self.want[stage][window][mask.cpu()].reshape(-1).numpy()
        choice = cheapest_weight(counts, symbols, self.want.shape[-1], sums)
        self.write(stage, choice)
        return ADAPTATION_WEIGHTS[choice]


class ReadWeights(PassWeights):
    """Format version 5, decoder: every pass's weight, `read(stage)` from the stage's stream
    (an index into `ADAPTATION_WEIGHTS`)."""

    needs_tables = False

    def __init__(self, read: Callable[[int], int]) -> None:
        self.read = read

    def adapts(self, stage: int, pass_index: int) -> bool:
        return True

    def weight(self, stage: int, window: Window, mask: torch.Tensor, counts: torch.Tensor,
               sums: torch.Tensor) -> int | None:
        return ADAPTATION_WEIGHTS[self.read(stage)]


@dataclass(frozen=True)
class PassAdaptation:
    """How one pass's tables are adapted (`AdaptiveCounts`): with `weight`, known before the
    pass is scored, or with the weight `choose(counts, sums)` picks from the whole pass's
    counts [n * G, K] and row sums [n * G] (None: not adapted)."""

    weight: int | None = None
    choose: Callable[[torch.Tensor, torch.Tensor], int | None] | None = None


@dataclass
class CompressedIndices:
    """Coded indices: one range-coder stream, or one per stage (`stream_per_stage=True`)."""

    streams: tuple[bytes, ...]
    nll_bits: float  # the prior's ideal code length

    @property
    def payload(self) -> bytes:
        """The one stream (indices coded into a single stream)."""
        if len(self.streams) != 1:
            raise ValueError(f"coded as {len(self.streams)} streams, not one: use .streams")
        return self.streams[0]

    @property
    def payload_bits(self) -> int:
        return 8 * sum(len(stream) for stream in self.streams)


def stage_decoders(payload: bytes | Sequence[bytes], num_stages: int,
                   num_codes: int) -> list[IndexDecoder]:
    """The decoder to read each of `num_stages` stages from (stage s: entry s).

    Args:
        payload: one stream holding the stages in order (format versions 1, 2, and one-chunk
            files), or one stream per stage, of which the first `num_stages` are read.
        num_stages: how many stages are decoded (a prefix of what was coded).
        num_codes: symbols must be below it.
    """
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return [IndexDecoder(bytes(payload), num_codes=num_codes)] * num_stages
    if len(payload) == 1:
        return [IndexDecoder(payload[0], num_codes=num_codes)] * num_stages
    if len(payload) < num_stages:
        raise ValueError(f"{num_stages} stages asked for, {len(payload)} stage streams given")
    return [IndexDecoder(stream, num_codes=num_codes) for stream in payload[:num_stages]]


class StageByStageCodec:
    """Latent codec: indices [S', H, W] <-> bytes, using a `StagePrior`.

    Args:
        prior: the learned prior.
        quantizer: the residual quantizer whose codebooks the prior scores.
    """

    def __init__(self, *, prior: StagePrior, quantizer: ResidualQuantizer) -> None:
        self.prior, self.quantizer = prior, quantizer

    # The walk sees indices as [S', H, W, symbols per position]; these three say how a
    # quantizer's indices map to that layout and what codewords they stand for.
    symbols_per_position = 1

    def _to_walk_layout(self, indices: torch.Tensor) -> torch.Tensor:
        return indices[..., None]

    def _from_walk_layout(self, indices: torch.Tensor) -> torch.Tensor:
        return indices[..., 0]

    def _codewords(self, stage: int, found: torch.Tensor) -> torch.Tensor:
        """Codewords [n, D] of one pass's indices [n, symbols per position]."""
        return self.quantizer.stages[stage].codebook[found[:, 0]]

    def _walk(self, num_stages: int, height: int, width: int, code_pass: PassCoder,
              tile: int | None = None, assemble: bool = True,
              context_stages: int | None = None,
              weights: PassWeights | None = None) -> torch.Tensor | None:
        if weights is not None:
            raise ValueError("adapted tables need an exact integer prior")
        with single_thread():
            found = self._walk_windows(num_stages, height, width, code_pass, tile, assemble,
                                       context_stages)
            return None if found is None else self._from_walk_layout(found)

    def _walk_windows(self, num_stages: int, height: int, width: int, code_pass: PassCoder,
                      tile: int | None, assemble: bool = True,
                      context_stages: int | None = None,
                      weights: PassWeights | None = None) -> torch.Tensor | None:
        """The walk over each window of `tile_windows` in turn (all stages of a window before
        the next window), assembled into indices [S', H, W, symbols per position]; None
        with `assemble=False` and several windows (an encoder, which has the indices, then
        holds no second copy of a large grid's)."""
        windows = tile_windows(height, width, tile)
        if len(windows) == 1:
            return self._walk_window(num_stages, windows[0], code_pass, context_stages,
                                     weights)
        indices = (torch.zeros(num_stages, height, width, self.symbols_per_position,
                               dtype=torch.long) if assemble else None)
        for rows, cols in windows:
            found = self._walk_window(num_stages, (rows, cols), code_pass, context_stages,
                                      weights)
            if indices is not None:
                indices[:, rows, cols] = found.cpu()
        return indices

    def _walk_window(self, num_stages: int, window: Window, code_pass: PassCoder,
                     context_stages: int | None = None,
                     weights: PassWeights | None = None) -> torch.Tensor:
        """One window's walk, stage by stage, pass by pass: indices [S', h, w, symbols]."""
        height = window[0].stop - window[0].start
        width = window[1].stop - window[1].start
        device = self._device()
        per_position = self.symbols_per_position
        schedules = stage_schedules(self.prior.schedule, num_stages, context_stages)
        masks_of = {name: [m.to(device) for m in pass_masks(name, height, width)]
                    for name in set(schedules)}
        indices = torch.zeros(num_stages, height, width, per_position, dtype=torch.long,
                              device=device)
        coarse = torch.zeros(1, self.quantizer.dim, height, width, device=device,
                             dtype=self.input_dtype)
        for s in range(num_stages):
            stage = torch.tensor([s], device=device)
            codes = torch.zeros_like(coarse)
            visible = torch.zeros(1, 1, height, width, device=device, dtype=self.input_dtype)
            prepared = self._stage_input(coarse)  # shared by the stage's passes
            for p, mask in enumerate(masks_of[schedules[s]]):
                # The parts' indices, in order; an adapted pass reads them as it goes.
                parts: list[np.ndarray] = []
                adaptation = None
                if weights is not None and weights.adapts(s, p) and bool(mask.any()):
                    if weights.needs_tables:
                        def choose(counts, sums, s=s, mask=mask):
                            return weights.weight(s, window, mask, counts, sums)
                        adaptation = PassAdaptation(choose=choose)
                    else:
                        adaptation = PassAdaptation(
                            weight=weights.weight(s, window, mask, None, None))
                for part, scores, table in self._pass_tables(prepared, codes, visible, stage,
                                                             mask, parts, adaptation):
                    parts.append(code_pass(s, window, part, scores, table))
                found = torch.from_numpy(np.concatenate(parts)).to(device).view(-1, per_position)
                indices[s][mask] = found
                codes[0][:, mask] = self._codewords(s, found).t()
                visible[0, 0][mask] = 1.0
            coarse = self._next_coarse(coarse, codes, s, indices[s])
        return indices

    # The walk's swappable steps: what the prior's inputs are made of and how one pass's
    # tables come out of it. Float: codewords, logits and float64 softmax tables.
    input_dtype = torch.float32

    def _device(self) -> torch.device:
        return next(self.prior.parameters()).device

    def _stage_input(self, coarse: torch.Tensor):
        """What `_pass_tables` takes of a stage's coarse input, computed once per stage: the
        coarse input itself here."""
        return coarse

    def _pass_tables(self, coarse: torch.Tensor, codes: torch.Tensor, visible: torch.Tensor,
                     stage: torch.Tensor, mask: torch.Tensor, coded: list[np.ndarray],
                     adaptation: PassAdaptation | None = None
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        """(part mask, scores, probability table [n, K]) of the parts of one pass (see
        `PassCoder`; one row per symbol); `_nll_bits(scores, symbols)` is their ideal code
        length. `coarse`: what `_stage_input` made of the stage's coarse input; `coded`: the
        indices of the parts coded so far (the walk appends each before asking for the next);
        `adaptation`: how to adapt the pass's tables (exact codecs). Here the whole pass is
        one part."""
        logits = self.prior.logits(coarse, codes, visible, stage)[0][mask]
        logits = logits.reshape(-1, logits.shape[-1])  # one row per symbol
        yield mask, logits, probability_table(logits)

    def _nll_bits(self, scores: torch.Tensor, symbols: np.ndarray) -> float:
        return nll_bits(scores, symbols)

    def _next_coarse(self, coarse: torch.Tensor, codes: torch.Tensor, stage: int,
                     indices: torch.Tensor) -> torch.Tensor:
        """Coarse input of stage + 1 from stage's (coarse, codewords [1, D, H, W], indices
        [H, W, symbols per position])."""
        return coarse + codes

    portable = False  # tables from float convolutions: decode on the machine that encoded

    def forward(self, indices: torch.Tensor, stages: torch.Tensor | None = None,
                context_stages: int | None = None,
                anchor_weight: int | None = None, adapt: bool = False) -> torch.Tensor:
        """Training/evaluation: log2-likelihoods (in bits, <= 0) of the given indices, all
        positions of a pass at once (teacher forcing); differentiable for the float priors.

        Args:
            indices: [B, S', H, W] ([B, R', G, H, W] grouped).
            stages: optional subset of stage numbers to evaluate (default: all S').
            context_stages: as `compress(context_stages=)`: stages from this one on are
                scored as one pass each (None: all with the prior's schedule).
            anchor_weight: as `compress(anchor_weight=)` (exact codecs only).
            adapt: as `compress(adapt=)` (exact codecs only), each image's whole grid one
                window: each pass with the weight the encoder would choose, its choice's
                `CHOICE_BITS` spread evenly over the pass's symbols (so the sum is the
                stream's ideal length).
        Returns:
            [B, len(stages), H, W] ([B, len(stages), G, H, W] grouped) log2 p(index).
        """
        s_total = indices.shape[1]
        stages = torch.arange(s_total) if stages is None else stages
        names = stage_schedules(self.prior.schedule, s_total, context_stages)
        picked = [names[int(s)] for s in stages]
        if (anchor_weight is not None or adapt) and not self.portable:
            raise ValueError("adapted tables need an exact integer prior")
        # Only exact codecs' `_forward_stages` adapts (and takes the two).
        extra = {"anchor_weight": anchor_weight, "adapt": adapt} if self.portable else {}
        if len(set(picked)) == 1:
            return self._forward_stages(indices, stages, picked[0], **extra)
        out = None
        for name in dict.fromkeys(picked):  # each schedule's stages in one teacher-forced pass
            where = torch.tensor([j for j, n in enumerate(picked) if n == name])
            part = self._forward_stages(indices, stages[where.to(stages.device)], name, **extra)
            if out is None:
                out = part.new_zeros(part.shape[0], len(stages), *part.shape[2:])
            out[:, where.to(out.device)] = part
        return out

    def _forward_stages(self, indices: torch.Tensor, stages: torch.Tensor,
                        schedule: str) -> torch.Tensor:
        """`forward` of the given stages, all coded with `schedule`."""
        b, s_total, h, w = indices.shape
        cumulative = self.quantizer.cumulative(indices)  # [B, S', D, H, W]
        books = torch.stack([vq.codebook for vq in self.quantizer.stages])  # [S, K, D]
        out = torch.zeros(b, len(stages), h, w, device=indices.device)
        masks = [m.to(indices.device) for m in pass_masks(schedule, h, w)]
        n = len(stages)
        st = stages.to(indices.device).repeat(b)  # item (i, j) -> stages[j]
        coarse = cumulative[:, stages].reshape(b * n, -1, h, w)
        idx = indices[:, stages].reshape(b * n, h, w)
        codes = torch.stack([F.embedding(idx[i], books[st[i]]) for i in range(b * n)])
        codes = codes.permute(0, 3, 1, 2)  # [B*n, D, H, W]
        for m, known in passes_with_context(masks):
            vis = known.to(codes.dtype)[None, None]
            logits = self.prior.logits(coarse, codes * vis, vis.expand(b * n, 1, h, w), st)
            logp = torch.log_softmax(logits, -1).gather(-1, idx[..., None])[..., 0]
            out.view(b * n, h, w)[:, m] = logp[:, m] / torch.log(torch.tensor(2.0))
        return out

    def compress(self, indices: torch.Tensor, *, stream_per_stage: bool = False,
                 tile: int | None = None, context_stages: int | None = None,
                 anchor_weight: int | None = None, adapt: bool = False) -> CompressedIndices:
        """Code indices (the quantizer's layout: [S', H, W] here, [R', G, H, W] grouped).

        Args:
            indices: the indices.
            stream_per_stage: one range-coder stream per stage (each flushed on its own, so
                the first k streams decode the first k stages), instead of a single stream.
            tile: code in independent tile x tile windows (see `tile_windows`); a grid of
                more than one window needs `stream_per_stage`.
            context_stages: code stages from this one on in one pass each (None: every
                stage with the prior's schedule).
            anchor_weight: adapt stage 0's first pass with this weight (`AdaptiveCounts`;
                exact codecs only; format version 4), or None.
            adapt: adapt every pass of every window with the cheapest of
                `ADAPTATION_WEIGHTS`, the choice coded before the pass (exact codecs only;
                format version 5). Not with `anchor_weight`.
        """
        if adapt and anchor_weight is not None:
            raise ValueError("adapt and anchor_weight are two formats: pick one")
        num_stages = indices.shape[0]
        if (not stream_per_stage and num_stages > 1
                and len(tile_windows(*indices.shape[-2:], tile)) > 1):
            raise ValueError("tiled coding needs one stream per stage (stream_per_stage=True)")
        encoders = [IndexEncoder() for _ in range(num_stages if stream_per_stage else 1)]
        nll = 0.0
        want = self._to_walk_layout(indices.cpu())  # [S', H, W, symbols per position]

        def code_pass(s: int, window: Window, mask: torch.Tensor, logits: torch.Tensor,
                      table: np.ndarray) -> np.ndarray:
            nonlocal nll
            symbols = want[s][window][mask.cpu()].reshape(-1).numpy()
            encoders[s if stream_per_stage else 0].add(symbols, table)
            nll += self._nll_bits(logits, symbols)
            return symbols

        def write_choice(s: int, choice: int) -> None:
            nonlocal nll
            encoders[s if stream_per_stage else 0].add(np.array([choice]), CHOICE_TABLE)
            nll += CHOICE_BITS

        weights = (ChosenWeights(want, write_choice) if adapt else
                   None if anchor_weight is None else AnchorWeight(anchor_weight))
        self._walk(*want.shape[:3], code_pass, tile, assemble=False,
                   context_stages=context_stages, weights=weights)
        return CompressedIndices(tuple(e.finish() for e in encoders), nll)

    def decompress(self, payload: bytes | Sequence[bytes], num_stages: int, height: int,
                   width: int, *, tile: int | None = None,
                   context_stages: int | None = None,
                   anchor_weight: int | None = None, adapt: bool = False) -> torch.Tensor:
        """Indices (the quantizer's layout) of the first `num_stages` stages.

        Args:
            payload: one stream holding the stages in order, or one stream per stage (see
                `stage_decoders`); fewer stages than were coded may be asked for.
            num_stages: how many stages to decode, from stage 0.
            height, width: the latent grid.
            tile: the tile side the indices were coded with (`compress(tile=)`), or None.
            context_stages, anchor_weight, adapt: as the indices were coded with
                (`compress`).
        """
        decoders = stage_decoders(payload, num_stages, self.quantizer.num_codes)
        one_stream = isinstance(payload, (bytes, bytearray, memoryview)) or len(payload) == 1
        if one_stream and num_stages > 1 and len(tile_windows(height, width, tile)) > 1:
            raise ValueError("tiled coding needs one stream per stage")

        def code_pass(s: int, window: Window, mask: torch.Tensor, logits: torch.Tensor,
                      table: np.ndarray) -> np.ndarray:
            return decoders[s].read(table)

        weights = (ReadWeights(lambda s: int(decoders[s].read(CHOICE_TABLE)[0])) if adapt else
                   None if anchor_weight is None else AnchorWeight(anchor_weight))
        return self._walk(num_stages, height, width, code_pass, tile,
                          context_stages=context_stages, weights=weights)

    def sample(self, num_stages: int, height: int, width: int, draw: TableDraw) -> torch.Tensor:
        """Indices (the quantizer's layout) drawn from the prior in the codec's own order:
        stage by stage, pass by pass, each pass's indices drawn from its tables by `draw`."""

        def code_pass(s: int, window: Window, mask: torch.Tensor, scores: torch.Tensor,
                      table: np.ndarray) -> np.ndarray:
            return draw(table)

        return self._walk(num_stages, height, width, code_pass)


class GroupedStageCodec(StageByStageCodec):
    """Latent codec for a `GroupedResidualQuantizer`: indices [R', G, H, W] <-> bytes.

    Stream order: round, context pass, position in raster order, group. One `GroupedStagePrior`
    evaluation per round and pass gives the tables of all groups of the pass's positions.
    """

    prior: GroupedStagePrior
    quantizer: GroupedResidualQuantizer

    @property
    def symbols_per_position(self) -> int:
        return self.quantizer.num_groups

    def _to_walk_layout(self, indices: torch.Tensor) -> torch.Tensor:
        return indices.permute(0, 2, 3, 1)

    def _from_walk_layout(self, indices: torch.Tensor) -> torch.Tensor:
        return indices.permute(0, 3, 1, 2)

    def _forward_stages(self, indices: torch.Tensor, stages: torch.Tensor,
                        schedule: str) -> torch.Tensor:
        """Log2-likelihoods [B, len(stages), G, H, W] of indices [B, R', G, H, W]."""
        b, s_total, g, h, w = indices.shape
        cumulative = self.quantizer.cumulative(indices)  # [B, R', D, H, W]
        out = torch.zeros(b, len(stages), g, h, w, device=indices.device)
        masks = [m.to(indices.device) for m in pass_masks(schedule, h, w)]
        n = len(stages)
        st = stages.to(indices.device).repeat(b)  # item (i, j) -> stages[j]
        coarse = cumulative[:, stages].reshape(b * n, -1, h, w)
        idx = indices[:, stages].reshape(b * n, g, h, w)
        codes = torch.cat([self.quantizer.stage_codewords(int(st[i]), idx[i:i + 1])
                           for i in range(b * n)])
        target = idx.permute(0, 2, 3, 1)  # [B*n, H, W, G]
        books, bias = self.prior.code_embedding[st], self.prior.code_bias[st]  # [B*n, G, K, F], [B*n, G, K]
        for m, known in passes_with_context(masks):
            vis = known.to(codes.dtype)[None, None]
            features = self.prior.features(coarse, codes * vis, vis.expand(b * n, 1, h, w), st)
            # Score only the pass's positions, a few items at a time: the full logits of a
            # large image (positions x groups x codes) would take gigabytes.
            features = features[:, m].reshape(b * n, -1, g, books.shape[-1])
            logp = []
            for i in range(0, b * n, 4):
                logits = (torch.einsum("bngf,bgkf->bngk", features[i:i + 4], books[i:i + 4])
                          + bias[i:i + 4, None])
                logp.append(torch.log_softmax(logits, -1)
                            .gather(-1, target[i:i + 4][:, m][..., None])[..., 0])
            out.view(b * n, g, h, w).permute(0, 2, 3, 1)[:, m] = torch.cat(logp) / math.log(2.0)
        return out

    def _codewords(self, stage: int, found: torch.Tensor) -> torch.Tensor:
        return self.quantizer.lookup(stage, found).reshape(len(found), self.quantizer.dim)


class IntegerStageCodec(StageByStageCodec):
    """Latent codec over an exact `IntegerStagePrior` (whole-vector or grouped): the count
    tables are the same integers on every machine, thread count and batch shape, so files are
    portable. Indices in the quantizer's layout ([S', H, W] or [R', G, H, W]).

    Tables go to the range coder as counts / counts.sum() (an exact sum and one correctly
    rounded division: identical floats everywhere). No single-thread guard is needed.
    """

    portable = True
    input_dtype = torch.float64

    def __init__(self, *, prior: "IntegerStagePrior", quantizer) -> None:
        if prior.table.precision > 24:  # adapted passes hold counts in float32
            raise ValueError(f"count precision {prior.table.precision} > 24 bits")
        self.prior, self.quantizer = prior, quantizer

    @property
    def symbols_per_position(self) -> int:
        return max(self.prior.num_groups, 1)

    def _to_walk_layout(self, indices: torch.Tensor) -> torch.Tensor:
        return indices.permute(0, 2, 3, 1) if self.prior.grouped else indices[..., None]

    def _from_walk_layout(self, indices: torch.Tensor) -> torch.Tensor:
        return indices.permute(0, 3, 1, 2) if self.prior.grouped else indices[..., 0]

    def _device(self) -> torch.device:
        return self.prior.coarse_table.device

    def _walk(self, num_stages: int, height: int, width: int, code_pass: PassCoder,
              tile: int | None = None, assemble: bool = True,
              context_stages: int | None = None,
              weights: PassWeights | None = None) -> torch.Tensor | None:
        with exact_mode():
            found = self._walk_windows(num_stages, height, width, code_pass, tile, assemble,
                                       context_stages, weights)
            return None if found is None else self._from_walk_layout(found)

    def _codewords(self, stage: int, found: torch.Tensor) -> torch.Tensor:
        return self.prior.current_codewords(stage, found)

    def _next_coarse(self, coarse: torch.Tensor, codes: torch.Tensor, stage: int,
                     indices: torch.Tensor) -> torch.Tensor:
        return coarse + self.prior.coarse_codewords(stage, indices).permute(2, 0, 1)[None]

    # Positions scored and coded at once (one part of a pass): bounds a pass's tables (logits,
    # counts, probabilities) to a few MiB, which the allocator reuses and the coder reads
    # while they are still in cache, instead of a whole tile's (a one-pass round of a 64 x 64
    # tile: 128 MiB each).
    SCORE_CHUNK = 256

    def _stage_input(self, coarse: torch.Tensor) -> torch.Tensor | None:
        # The stem's coarse part: the same for every pass of the stage.
        return self.prior.coarse_accumulator(coarse)

    def _pass_tables(self, coarse_acc: torch.Tensor | None, codes: torch.Tensor,
                     visible: torch.Tensor, stage: torch.Tensor, mask: torch.Tensor,
                     coded: list[np.ndarray], adaptation: PassAdaptation | None = None
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        # The features of the whole pass first: they depend on earlier passes only.
        features = self.prior.pass_features(coarse_acc, codes, visible, stage, mask)  # [n, C]
        g, k = max(self.prior.num_groups, 1), self.prior.num_codes
        rows, cols = mask.nonzero(as_tuple=True)  # raster order, as the features

        constants = self.prior.scoring_constants(int(stage))

        def scored(start: int, end: int) -> torch.Tensor:  # counts [n' * G, K]
            return self.prior.feature_counts(features[start:end], constants).cpu()

        def part_mask(start: int, end: int) -> torch.Tensor:
            part = torch.zeros_like(mask)
            part[rows[start:end], cols[start:end]] = True
            return part

        n, step = len(features), self.SCORE_CHUNK
        if adaptation is None:
            for start in range(0, n, step):
                counts = scored(start, start + step)
                yield part_mask(start, start + step), counts, ExpTable.probabilities(counts).numpy()
            return

        step = -(-step // ANCHOR_PART) * ANCHOR_PART  # whole parts of ANCHOR_PART per chunk

        def chunks() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
            # (first position, integer counts [n' * G, K] (float64), their exact row sums)
            for start in range(0, n, step):
                counts = scored(start, start + step).numpy()
                yield start, counts, counts.sum(1)

        weight, source = adaptation.weight, chunks()
        if adaptation.choose is not None:
            # An encoder chooses the weight from the whole pass's counts (float32 holds them
            # exactly: they are integers below 2^24) and their exact row sums, then codes it.
            whole = np.empty((n * g, k), dtype=np.float32)
            sums = np.empty(n * g)
            for start, counts, total in source:
                whole[start * g:start * g + len(counts)] = counts
                sums[start * g:start * g + len(counts)] = total
            weight = adaptation.choose(torch.from_numpy(whole), torch.from_numpy(sums))
            source = ((start, whole[start * g:(start + step) * g].astype(np.float64),
                       sums[start * g:(start + step) * g]) for start in range(0, n, step))
        # A table divided by its row sums, however they were summed, is the same float: the
        # sums are exact integers.
        if weight is None:
            for start, counts, total in source:
                yield part_mask(start, start + step), counts, counts / total[:, None]
            return
        adaptive = AdaptiveCounts(groups=g, num_codes=k, weight=weight)
        for first, counts, total in source:
            for start in range(0, len(total) // g, ANCHOR_PART):
                span = slice(start * g, (start + ANCHOR_PART) * g)
                mixed, table = adaptive.table(counts[span], total[span])
                yield part_mask(first + start, first + start + ANCHOR_PART), mixed, table
                adaptive.update(coded[-1])

    def _nll_bits(self, counts: torch.Tensor | np.ndarray, symbols: np.ndarray) -> float:
        c = counts.cpu().numpy() if isinstance(counts, torch.Tensor) else counts
        return float(-np.log2(c[np.arange(len(symbols)), symbols] / c.sum(1)).sum())

    def tables(self, indices: torch.Tensor, context_stages: int | None = None,
               anchor_weight: int | None = None, adapt: bool = False) -> list[torch.Tensor]:
        """The integer count tables [n, K] of every pass (stream order) when coding `indices`
        (for cross-kernel and cross-device tests), adapted as `compress` adapts them."""
        want = self._to_walk_layout(indices.cpu())
        parts = []

        def code_pass(s, window, mask, counts, table):
            parts.append(counts)
            return want[s][window][mask.cpu()].reshape(-1).numpy()

        weights = (ChosenWeights(want, lambda s, choice: None) if adapt else
                   None if anchor_weight is None else AnchorWeight(anchor_weight))
        self._walk(*want.shape[:3], code_pass, context_stages=context_stages, weights=weights)
        # The parts joined into passes: rows per pass = its positions x symbols per position.
        rows = [int(m.sum()) * want.shape[-1]
                for name in stage_schedules(self.prior.schedule, want.shape[0], context_stages)
                for m in pass_masks(name, *want.shape[1:3])]
        return list(torch.cat(parts).split(rows))

    def _forward_stages(self, indices: torch.Tensor, stages: torch.Tensor, schedule: str,
                        anchor_weight: int | None = None, adapt: bool = False) -> torch.Tensor:
        """Exact log2-likelihoods (from the counts) of indices [B, S', (G,) H, W], all positions
        of a pass at once (teacher forcing): [B, len(stages), (G,) H, W]. Not differentiable.
        With `anchor_weight`, stage 0's first pass is adapted part by part, as the walk does;
        with `adapt`, every pass, with the weight `ChosenWeights` picks (one window: the whole
        grid)."""
        grouped = self.prior.grouped
        b, s_total = indices.shape[:2]
        h, w = indices.shape[-2:]
        g = max(self.prior.num_groups, 1)
        stages = stages.cpu()
        n = len(stages)
        device = self._device()
        walk = self._to_walk_layout(indices.reshape(b * s_total, *indices.shape[2:]))
        walk = walk.reshape(b, s_total, h, w, g).to(device)  # [B, S', H, W, G]
        out = torch.zeros(b, n, h, w, g, dtype=torch.float64)
        masks = [m.to(device) for m in pass_masks(schedule, h, w)]
        with exact_mode():
            for i in range(b):  # one image at a time bounds memory; results do not depend on it
                coarse_all = torch.zeros(s_total, h, w, self.quantizer.dim, dtype=torch.float64,
                                         device=device)
                acc = torch.zeros(h, w, self.quantizer.dim, dtype=torch.float64, device=device)
                for s in range(s_total):
                    coarse_all[s] = acc
                    acc = acc + self.prior.coarse_codewords(s, walk[i, s])
                st = stages.to(device)
                coarse = coarse_all[st].permute(0, 3, 1, 2)
                codes = torch.stack([self.prior.current_codewords(int(s), walk[i, int(s)])
                                     for s in st]).permute(0, 3, 1, 2)
                target = walk[i, st]  # [n, H, W, G]
                for p, (m, known) in enumerate(passes_with_context(masks)):
                    vis = known.to(torch.float64)[None, None]
                    feats = self.prior.features(coarse, codes * vis, vis.expand(n, 1, h, w), st)
                    logits = self.prior.logits_from_features(feats[:, m], st)  # [n, P, G, K]
                    counts = self.prior.counts(logits)
                    if not bool(m.any()):
                        continue
                    for j, s in enumerate(st.tolist()):
                        weight = (anchor_weight if p == 0 and s == 0 else None)
                        if adapt:
                            weight = ADAPTATION_WEIGHTS[cheapest_weight(
                                counts[j].reshape(-1, counts.shape[-1]).cpu(),
                                target[j][m].reshape(-1).cpu().numpy(), g)]
                        if weight is not None:
                            counts[j] = self._adapted(counts[j], target[j][m], weight)
                    hit = counts.gather(-1, target[:, m][..., None])[..., 0]
                    out[i][:, m] = (torch.log2(hit) - torch.log2(counts.sum(-1))).cpu()
                    if adapt:  # each pass's choice, spread over its symbols
                        out[i][:, m] -= CHOICE_BITS / (int(m.sum()) * g)
        out = out.permute(0, 1, 4, 2, 3) if grouped else out[..., 0]
        return out.to(indices.device)

    def _adapted(self, counts: torch.Tensor, symbols: torch.Tensor, weight: int) -> torch.Tensor:
        """The walk's adapted counts [P, G, K] of a pass whose counts [P, G, K] and indices
        [P, G] (positions in raster order) are known: part by part, as `_pass_tables`."""
        g, k = counts.shape[1:]
        adaptive = AdaptiveCounts(groups=g, num_codes=k, weight=weight)
        rows, found = counts.cpu().numpy(), symbols.cpu().numpy()
        out = np.empty_like(rows)
        for start in range(0, len(rows), ANCHOR_PART):
            end = start + ANCHOR_PART
            out[start:end] = adaptive.mix(rows[start:end].reshape(-1, k)).reshape(-1, g, k)
            adaptive.update(found[start:end])
        return torch.from_numpy(out).to(counts.device)


def teacher_forced_passes(quantizer, indices: torch.Tensor, schedule: str):
    """Yield the float prior's inputs of every pass of every stage of index tensors [B, S',
    (G,) H, W]: (coarse [B*S', D, H, W], current [B*S', D, H, W] at visible positions,
    visible [B*S', 1, H, W], stages [B*S'], pass mask [H, W])."""
    grouped = indices.dim() == 5
    b, s_total = indices.shape[:2]
    h, w = indices.shape[-2:]
    cumulative = quantizer.cumulative(indices)  # [B, S', D, H, W]
    if grouped:
        parts = torch.stack([quantizer.stage_codewords(s, indices[:, s]) for s in range(s_total)], 1)
    else:
        parts = torch.stack([quantizer.stages[s].lookup(indices[:, s]).permute(0, 3, 1, 2)
                             for s in range(s_total)], 1)
    coarse = cumulative.reshape(b * s_total, -1, h, w)
    codes = parts.reshape(b * s_total, -1, h, w)
    stages = torch.arange(s_total).repeat(b)
    for m, known in passes_with_context(pass_masks(schedule, h, w)):
        vis = known.to(codes.dtype)[None, None].expand(b * s_total, 1, h, w)
        yield coarse, codes * vis, vis, stages, m
