"""Frame-by-frame coding of audio index sequences (the audio latent codec).

As for images, `compress` and `decompress` run one loop, `_walk`, so the encoder evaluates the
prior exactly as the decoder will. Stream order: channel by channel; within a channel chunks
of `prior.context` frames; within a chunk frame 0, 1, ...; within a frame stage 0..S'-1. Each
chunk starts a fresh prior cache, so memory is bounded by the chunk, not the file.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..nn.audio_prior import FramePrior
from .entropy import IndexDecoder, IndexEncoder, nll_bits, probability_table
from .latent_codec import CompressedIndices, single_thread

# (channel, stage, frame, logits [1, K], probability table [1, K]) -> the index coded there
SymbolCoder = Callable[[int, int, int, torch.Tensor, np.ndarray], int]


class FrameByFrameCodec:
    """Latent codec: indices [C, S', F] (channels coded one after another) <-> bytes.

    Args:
        prior: the learned prior (on the CPU).
    """

    def __init__(self, *, prior: FramePrior) -> None:
        self.prior = prior

    def _walk(self, channels: int, num_stages: int, num_frames: int,
              code: SymbolCoder) -> torch.Tensor:
        with single_thread():
            return torch.stack([self._walk_single_thread(c, num_stages, num_frames, code)
                                for c in range(channels)])

    def _walk_single_thread(self, channel: int, num_stages: int, num_frames: int,
                            code: SymbolCoder) -> torch.Tensor:
        prior = self.prior
        indices = torch.zeros(num_stages, num_frames, dtype=torch.long)
        stream = None
        for t in range(num_frames):
            if t % prior.context == 0:
                stream = prior.new_stream(num_stages)
            prior.begin_frame(stream)
            for s in range(num_stages):
                logits = prior.stage_logits(stream)
                found = code(channel, s, t, logits, probability_table(logits))
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

        def code(c: int, s: int, t: int, logits: torch.Tensor, table: np.ndarray) -> int:
            nonlocal nll
            symbol = want[c, s, t:t + 1]
            encoder.add(symbol, table)
            nll += nll_bits(logits, symbol)
            return int(symbol[0])

        self._walk(*indices.shape, code)
        return CompressedIndices(encoder.finish(), nll)

    def decompress(self, payload: bytes, channels: int, num_stages: int,
                   num_frames: int) -> torch.Tensor:
        """Indices [channels, num_stages, num_frames] from `payload`."""
        decoder = IndexDecoder(payload)
        num_codes = self.prior.num_codes

        def code(c: int, s: int, t: int, logits: torch.Tensor, table: np.ndarray) -> int:
            found = int(decoder.read(table)[0])
            if not 0 <= found < num_codes:
                raise ValueError("corrupted payload: index out of range")
            return found

        return self._walk(channels, num_stages, num_frames, code)
