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

from ..models.context import pass_masks
from ..models.grouped_quantization import GroupedResidualQuantizer
from ..models.prior import GroupedStagePrior, StagePrior
from ..models.quantization import ResidualQuantizer
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

    def _walk(self, num_stages: int, height: int, width: int, code_pass: PassCoder) -> torch.Tensor:
        with single_thread():
            return self._walk_single_thread(num_stages, height, width, code_pass)

    def _walk_single_thread(self, num_stages: int, height: int, width: int,
                            code_pass: PassCoder) -> torch.Tensor:
        device = self.quantizer.stages[0].codebook.device
        dim = self.quantizer.dim
        masks = [m.to(device) for m in pass_masks(self.prior.schedule, height, width)]
        indices = torch.zeros(num_stages, height, width, dtype=torch.long, device=device)
        coarse = torch.zeros(1, dim, height, width, device=device)
        for s in range(num_stages):
            book = self.quantizer.stages[s].codebook
            stage = torch.tensor([s], device=device)
            codes = torch.zeros(1, dim, height, width, device=device)
            visible = torch.zeros(1, 1, height, width, device=device)
            for mask in masks:
                logits = self.prior.logits(coarse, codes, visible, stage)[0][mask]
                found = torch.from_numpy(code_pass(s, mask, logits, probability_table(logits)))
                found = found.to(device)
                indices[s][mask] = found
                codes[0][:, mask] = book[found].t()
                visible[0, 0][mask] = 1.0
            coarse = coarse + codes
        return indices

    def compress(self, indices: torch.Tensor) -> CompressedIndices:
        """Code indices [S', H, W]."""
        encoder = IndexEncoder()
        nll = 0.0

        def code_pass(s: int, mask: torch.Tensor, logits: torch.Tensor,
                      table: np.ndarray) -> np.ndarray:
            nonlocal nll
            symbols = want[s][mask.cpu()].numpy()
            encoder.add(symbols, table)
            nll += nll_bits(logits, symbols)
            return symbols

        want = indices.cpu()
        self._walk(*indices.shape, code_pass)
        return CompressedIndices(encoder.finish(), nll)

    def decompress(self, payload: bytes, num_stages: int, height: int, width: int) -> torch.Tensor:
        """Indices [num_stages, H, W] from `payload`."""
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
    `decompress` is inherited: it returns [num_stages, G, H, W].
    """

    prior: GroupedStagePrior
    quantizer: GroupedResidualQuantizer

    def _walk_single_thread(self, num_stages: int, height: int, width: int,
                            code_pass: PassCoder) -> torch.Tensor:
        device = self.quantizer.codebooks.device
        dim, groups = self.quantizer.dim, self.quantizer.num_groups
        masks = [m.to(device) for m in pass_masks(self.prior.schedule, height, width)]
        indices = torch.zeros(num_stages, groups, height, width, dtype=torch.long, device=device)
        coarse = torch.zeros(1, dim, height, width, device=device)
        for s in range(num_stages):
            stage = torch.tensor([s], device=device)
            codes = torch.zeros(1, dim, height, width, device=device)
            visible = torch.zeros(1, 1, height, width, device=device)
            for mask in masks:
                logits = self.prior.logits(coarse, codes, visible, stage)[0][mask]  # [n, G, K]
                logits = logits.reshape(-1, logits.shape[-1])
                found = torch.from_numpy(code_pass(s, mask, logits, probability_table(logits)))
                found = found.to(device).view(-1, groups)  # [n, G]
                indices[s].permute(1, 2, 0)[mask] = found
                vectors = self.quantizer.lookup(s, found).reshape(-1, dim)  # [n, D]
                codes[0][:, mask] = vectors.t()
                visible[0, 0][mask] = 1.0
            coarse = coarse + codes
        return indices

    def compress(self, indices: torch.Tensor) -> CompressedIndices:
        """Code indices [R', G, H, W]."""
        encoder = IndexEncoder()
        nll = 0.0
        want = indices.cpu().permute(0, 2, 3, 1)  # [R', H, W, G]: a pass's symbols in order

        def code_pass(s: int, mask: torch.Tensor, logits: torch.Tensor,
                      table: np.ndarray) -> np.ndarray:
            nonlocal nll
            symbols = want[s][mask.cpu()].reshape(-1).numpy()
            encoder.add(symbols, table)
            nll += nll_bits(logits, symbols)
            return symbols

        num_stages, _, height, width = indices.shape
        self._walk(num_stages, height, width, code_pass)
        return CompressedIndices(encoder.finish(), nll)
