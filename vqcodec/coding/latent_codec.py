"""Stage-by-stage coding of residual-VQ index grids (the image latent codec).

`compress` and `decompress` run one loop, `_walk`, so the encoder computes exactly the prior
evaluations the decoder will: same inputs, same shapes, same order. Stream order: stage 0..S'-1,
within a stage the passes of the context schedule, within a pass positions in raster order.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .context import pass_masks
from ..nn.grouped_rvq import GroupedResidualQuantizer
from ..nn.image_prior import GroupedStagePrior, StagePrior
from ..nn.rvq import ResidualQuantizer
from .entropy import IndexDecoder, IndexEncoder, nll_bits, probability_table

# (stage, pass mask [H, W], logits of the pass's positions [n, K], their probability
# table [n, K]) -> the indices at those positions [n]
PassCoder = Callable[[int, torch.Tensor, torch.Tensor, np.ndarray], np.ndarray]


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


@dataclass
class CompressedIndices:
    payload: bytes
    nll_bits: float  # the prior's ideal code length

    @property
    def payload_bits(self) -> int:
        return 8 * len(self.payload)


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

    def _walk(self, num_stages: int, height: int, width: int, code_pass: PassCoder) -> torch.Tensor:
        with single_thread():
            return self._from_walk_layout(
                self._walk_single_thread(num_stages, height, width, code_pass))

    def _walk_single_thread(self, num_stages: int, height: int, width: int,
                            code_pass: PassCoder) -> torch.Tensor:
        device = next(self.prior.parameters()).device
        dim, per_position = self.quantizer.dim, self.symbols_per_position
        masks = [m.to(device) for m in pass_masks(self.prior.schedule, height, width)]
        indices = torch.zeros(num_stages, height, width, per_position, dtype=torch.long,
                              device=device)
        coarse = torch.zeros(1, dim, height, width, device=device)
        for s in range(num_stages):
            stage = torch.tensor([s], device=device)
            codes = torch.zeros(1, dim, height, width, device=device)
            visible = torch.zeros(1, 1, height, width, device=device)
            for mask in masks:
                logits = self.prior.logits(coarse, codes, visible, stage)[0][mask]
                logits = logits.reshape(-1, logits.shape[-1])  # one row per symbol
                found = torch.from_numpy(code_pass(s, mask, logits, probability_table(logits)))
                found = found.to(device).view(-1, per_position)
                indices[s][mask] = found
                codes[0][:, mask] = self._codewords(s, found).t()
                visible[0, 0][mask] = 1.0
            coarse = coarse + codes
        return indices

    def compress(self, indices: torch.Tensor) -> CompressedIndices:
        """Code indices (the quantizer's layout: [S', H, W] here, [R', G, H, W] grouped)."""
        encoder = IndexEncoder()
        nll = 0.0
        want = self._to_walk_layout(indices.cpu())  # [S', H, W, symbols per position]

        def code_pass(s: int, mask: torch.Tensor, logits: torch.Tensor,
                      table: np.ndarray) -> np.ndarray:
            nonlocal nll
            symbols = want[s][mask.cpu()].reshape(-1).numpy()
            encoder.add(symbols, table)
            nll += nll_bits(logits, symbols)
            return symbols

        self._walk(*want.shape[:3], code_pass)
        return CompressedIndices(encoder.finish(), nll)

    def decompress(self, payload: bytes, num_stages: int, height: int, width: int) -> torch.Tensor:
        """Indices (the quantizer's layout) of `num_stages` stages from `payload`."""
        decoder = IndexDecoder(payload)
        num_codes = self.quantizer.num_codes

        def code_pass(s: int, mask: torch.Tensor, logits: torch.Tensor,
                      table: np.ndarray) -> np.ndarray:
            found = decoder.read(table)
            if found.min(initial=0) < 0 or found.max(initial=0) >= num_codes:
                raise ValueError("corrupted payload: index out of range")
            return found

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

    def _codewords(self, stage: int, found: torch.Tensor) -> torch.Tensor:
        return self.quantizer.lookup(stage, found).reshape(len(found), self.quantizer.dim)
