"""Entropy coding of code indices with constriction, from the prior's logits.

Encoder and decoder turn logits into probability tables with `probability_table`. The tables
are ratios of integer counts, so constriction sees bit-identical floats whenever the logits are
bit-identical; the callers guarantee that by running the same ops on the same shapes.
"""
from __future__ import annotations

import constriction
import numpy as np
import torch

from ..errors import CorruptPayloadError

COUNT_TOTAL_BITS = 20  # counts sum to at most 2**20; constriction requantizes to 24 bits

# perfect=False: the exact quantizer is ~1000x slower and buys nothing here.
CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


def softmax64(logits: torch.Tensor) -> np.ndarray:
    """Softmax in float64 of logits [N, K] (float32 from the network)."""
    x = logits.detach().to("cpu", torch.float64).numpy()
    x = x - x.max(axis=1, keepdims=True)
    p = np.exp(x)
    return p / p.sum(axis=1, keepdims=True)


def probability_table(logits: torch.Tensor) -> np.ndarray:
    """Probabilities [N, K] as float64 ratios of integer counts, every count >= 1."""
    p = softmax64(logits)
    k = p.shape[1]
    counts = np.floor(p * float(2 ** COUNT_TOTAL_BITS - k)) + 1.0
    return counts / counts.sum(axis=1, keepdims=True)


def nll_bits(logits: torch.Tensor, symbols: np.ndarray) -> float:
    """The prior's ideal code length of `symbols` [N] under logits [N, K], in bits."""
    p = softmax64(logits)
    return float(-np.log2(p[np.arange(len(symbols)), symbols]).sum())


class IndexEncoder:
    """Writes (symbols, tables) pass by pass into one range-coder stream. Each pass is coded
    as it arrives, so memory holds one pass's tables, not the whole image's."""

    def __init__(self) -> None:
        self._encoder = constriction.stream.queue.RangeEncoder()

    def add(self, symbols: np.ndarray, table: np.ndarray) -> None:
        if len(symbols):
            self._encoder.encode(symbols.astype(np.int32), CATEGORICAL, table)

    def finish(self) -> bytes:
        return self._encoder.get_compressed().astype("<u4").tobytes()


class IndexDecoder:
    """Reads symbols pass by pass from a range-coder stream (untrusted: a stream that does not
    fit raises `CorruptPayloadError`, whatever constriction reports it as).

    Args:
        data: the payload.
        num_codes: symbols read must be below it (a corrupted stream can yield larger ones).
    """

    def __init__(self, data: bytes, *, num_codes: int) -> None:
        if len(data) % 4:
            raise CorruptPayloadError("corrupted payload: length is not a multiple of 4 bytes")
        self._decoder = constriction.stream.queue.RangeDecoder(
            np.frombuffer(data, dtype="<u4").astype(np.uint32))
        self._num_codes = num_codes

    def read(self, table: np.ndarray) -> np.ndarray:
        try:
            found = np.asarray(self._decoder.decode(CATEGORICAL, table), dtype=np.int64)
        except (AssertionError, ValueError, RuntimeError, OverflowError) as e:
            raise CorruptPayloadError(f"corrupted payload ({type(e).__name__})") from None
        if found.min(initial=0) < 0 or found.max(initial=0) >= self._num_codes:
            raise CorruptPayloadError("corrupted payload: index out of range")
        return found
