"""Frame-by-frame coding of audio index sequences (the audio latent codecs).

As for images, `compress` and `decompress` run one loop, `_walk`, so the encoder evaluates the
prior exactly as the decoder will. Stream order: channel by channel; within a channel chunks
of `prior.context` frames; within a chunk frame 0, 1, ...; within a frame stage 0..S'-1. Each
chunk starts a fresh prior cache, so memory is bounded by the chunk, not the file.

Two codecs share the walk and differ in how a stage's table is made (`_stage_table`):
`FrameByFrameCodec` over the float `FramePrior` (tables from float logits: they decode only
where the float ops round alike), and `IntegerFrameCodec` over `IntegerFramePrior` (exact
integer count tables: the same on every machine, so its files are portable).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import torch

from ..nn.audio_prior import FramePrior
from ..nn.fixed_point import ExpTable, exact_mode
from ..nn.integer_frame_prior import IntegerFramePrior
from .entropy import IndexEncoder, nll_bits, probability_table
from .latent_codec import CompressedIndices, TableDraw, single_thread, stage_decoders

# (channel, stage, frame, probability table [1, K], what `_nll_bits` needs) -> the index
# coded there
SymbolCoder = Callable[[int, int, int, np.ndarray, Any], int]


class FrameByFrameCodec:
    """Latent codec: indices [C, S', F] (channels coded one after another) <-> bytes, over the
    float prior.

    Args:
        prior: the learned prior (on the CPU).
    """

    portable = False  # float tables: a file decodes only on machines that round alike

    def __init__(self, *, prior: FramePrior) -> None:
        self.prior = prior

    def _stage_table(self, stream) -> tuple[np.ndarray, Any]:
        """(Coding table [1, K] of the stream's next stage, what `_nll_bits` needs.)"""
        logits = self.prior.stage_logits(stream)
        return probability_table(logits), logits

    @staticmethod
    def _nll_bits(evidence: Any, symbol: np.ndarray) -> float:
        return nll_bits(evidence, symbol)

    def _walk(self, channels: int, num_stages: int, num_frames: int,
              code: SymbolCoder) -> torch.Tensor:
        with single_thread():
            return self._walk_channels(channels, num_stages, num_frames, code)

    def _walk_channels(self, channels: int, num_stages: int, num_frames: int,
                       code: SymbolCoder) -> torch.Tensor:
        return torch.stack([self._walk_channel(c, num_stages, num_frames, code)
                            for c in range(channels)])

    def _walk_channel(self, channel: int, num_stages: int, num_frames: int,
                      code: SymbolCoder) -> torch.Tensor:
        prior = self.prior
        indices = torch.zeros(num_stages, num_frames, dtype=torch.long)
        stream = None
        for t in range(num_frames):
            if t % prior.context == 0:
                stream = prior.new_stream(num_stages)
            prior.begin_frame(stream)
            for s in range(num_stages):
                table, evidence = self._stage_table(stream)
                found = code(channel, s, t, table, evidence)
                indices[s, t] = found
                prior.push(stream, found)
        return indices

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Training/evaluation: log2-likelihoods [B, S', F] of indices [B, S', F]
        (F <= the prior's context), all frames in parallel (teacher forcing)."""
        return self.prior(indices)

    def compress(self, indices: torch.Tensor) -> CompressedIndices:
        """Code indices [C, S', F]."""
        encoder = IndexEncoder()
        want = indices.cpu().numpy()
        nll = 0.0

        def code(c: int, s: int, t: int, table: np.ndarray, evidence: Any) -> int:
            nonlocal nll
            symbol = want[c, s, t:t + 1]
            encoder.add(symbol, table)
            nll += self._nll_bits(evidence, symbol)
            return int(symbol[0])

        self._walk(*indices.shape, code)
        return CompressedIndices((encoder.finish(),), nll)

    def decompress(self, payload: bytes | Sequence[bytes], channels: int, num_stages: int,
                   num_frames: int) -> torch.Tensor:
        """Indices [channels, num_stages, num_frames] from `payload` (one stream, as bytes or a
        one-chunk sequence: every frame holds all stages, so stages cannot be cut apart); a
        payload that does not decode raises CorruptPayloadError (a corrupted one may also
        decode to other valid indices, which the file's index check is there to catch)."""
        if not isinstance(payload, (bytes, bytearray, memoryview)) and len(payload) != 1:
            raise ValueError(f"audio is coded in one stream, got {len(payload)}")
        decoder = stage_decoders(payload, 1, self.prior.num_codes)[0]

        def code(c: int, s: int, t: int, table: np.ndarray, evidence: Any) -> int:
            return int(decoder.read(table)[0])

        return self._walk(channels, num_stages, num_frames, code)

    def sample(self, channels: int, num_stages: int, num_frames: int,
               draw: TableDraw) -> torch.Tensor:
        """Indices [channels, num_stages, num_frames] drawn from the prior in the codec's own
        order (frame by frame, stage by stage), each index drawn from its table by `draw`."""

        def code(c: int, s: int, t: int, table: np.ndarray, evidence: Any) -> int:
            return int(draw(table)[0])

        return self._walk(channels, num_stages, num_frames, code)


class IntegerFrameCodec(FrameByFrameCodec):
    """Latent codec over the exact integer prior: portable files (the same count tables on
    every machine, thread count and batch shape).

    The encoder knows every index, so it computes each chunk's tables in one teacher-forced
    pass (`IntegerFramePrior.counts`), which gives the same integers as the decoder's
    frame-by-frame walk (tested bit for bit); the symbols are coded in the walk's order.

    Args:
        prior: the integer prior (on the CPU).
    """

    portable = True

    def __init__(self, *, prior: IntegerFramePrior) -> None:
        self.prior = prior

    def _stage_table(self, stream) -> tuple[np.ndarray, np.ndarray]:
        counts = self.prior.stage_counts(stream)
        table = counts / counts.sum(axis=1, keepdims=True)  # as ExpTable.probabilities
        return table, table

    @staticmethod
    def _nll_bits(evidence: np.ndarray, symbol: np.ndarray) -> float:
        return float(-np.log2(evidence[np.arange(len(symbol)), symbol]).sum())

    def _walk(self, channels: int, num_stages: int, num_frames: int,
              code: SymbolCoder) -> torch.Tensor:
        with exact_mode():  # exact at any thread count: no single_thread() needed
            return self._walk_channels(channels, num_stages, num_frames, code)

    def _chunks(self, indices: torch.Tensor):
        """(channel, first frame, count tables [S', frames, K]) chunk by chunk, in coding
        order, for indices [C, S', F]."""
        context = self.prior.context
        for c in range(indices.shape[0]):
            for t0 in range(0, indices.shape[2], context):
                yield c, t0, self.prior.counts(indices[c:c + 1, :, t0:t0 + context])[0]

    def tables(self, indices: torch.Tensor) -> torch.Tensor:
        """Integer count tables [C, S', F, K] (float64) of indices [C, S', F]: what the coder
        uses, for comparing machines and kernels."""
        indices = indices.cpu()
        c, s, f = indices.shape
        out = torch.empty(c, s, f, self.prior.num_codes, dtype=torch.float64)
        with exact_mode():
            for ch, t0, counts in self._chunks(indices):
                out[ch, :, t0:t0 + counts.shape[1]] = counts
        return out

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Exact log2-likelihoods [B, S', F] of indices [B, S', F] (F <= context)."""
        return self.prior(indices.cpu())

    def compress(self, indices: torch.Tensor) -> CompressedIndices:
        """Code indices [C, S', F]: tables chunk by chunk in one pass, symbols in walk order
        (frame-major within a chunk, stage by stage within a frame)."""
        indices = indices.cpu()
        if indices.numel() and not (0 <= int(indices.min()) and
                                    int(indices.max()) < self.prior.num_codes):
            raise ValueError("index out of range for the prior")
        encoder = IndexEncoder()
        nll = 0.0
        with exact_mode():
            for c, t0, counts in self._chunks(indices):
                n = counts.shape[1]
                table = ExpTable.probabilities(counts).transpose(0, 1)  # [frames, S', K]
                table = table.reshape(-1, counts.shape[-1]).numpy()
                symbols = indices[c, :, t0:t0 + n].T.reshape(-1).numpy()
                encoder.add(symbols, table)
                nll += self._nll_bits(table, symbols)
        return CompressedIndices((encoder.finish(),), nll)
