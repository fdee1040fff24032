"""Drawing indices from a prior's tables, for sampling from the model (`codec.sample`).

The codecs' `sample` methods run the same walk as `compress` and `decompress` (the same prior
evaluations in the same order), with each table handed to a `TableSampler` instead of the
range coder. A sampler owns a seeded numpy `Generator`, so a seed gives the same draws.
"""
from __future__ import annotations

import numpy as np


class TableSampler:
    """Draws one index per row of probability tables, from a seeded generator.

    At temperature 1 a draw is an inverse-CDF lookup in the table itself: the tables of an
    exact integer prior are counts / sum (correctly rounded), the cumulative sum runs in a
    fixed order and numpy's PCG64 stream is the same everywhere, so a seed draws the same
    indices on any machine. Another temperature rescales the log-probabilities (log p / T,
    renormalised), whose `log`/`exp` may round differently across CPUs: reproducible on one
    machine, possibly a rare different draw on another.

    Args:
        seed: the generator's seed.
        temperature: > 0; below 1 sharpens the tables (likelier codes), above 1 flattens them.
    """

    def __init__(self, seed: int, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.rng = np.random.default_rng(seed)
        self.temperature = float(temperature)

    def __call__(self, table: np.ndarray) -> np.ndarray:
        """Indices [n] (int64) drawn from table [n, K] (rows sum to 1)."""
        p = np.asarray(table, dtype=np.float64)
        if self.temperature != 1.0:
            with np.errstate(divide="ignore"):
                logp = np.log(p) / self.temperature
            p = np.exp(logp - logp.max(axis=1, keepdims=True))
        cdf = np.cumsum(p, axis=1)
        u = self.rng.random(len(p)) * cdf[:, -1]  # the row sums: no renormalisation needed
        # The first index whose cumulative probability exceeds u (never past the last).
        return np.minimum((cdf <= u[:, None]).sum(axis=1), p.shape[1] - 1).astype(np.int64)
