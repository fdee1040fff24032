"""The exact integer version of the image prior (`image_prior.StagePrior` and
`GroupedStagePrior`), converted after training (Ballé, Johnston, Minnen, ICLR 2019).

Same inputs and conv structure as the float prior, every value an integer in a float64 tensor
(see `fixed_point.py`), so the count tables are the same integers on every machine:

- inputs: the quantizer's codebooks are stored as two integer tables per stage(/group), one
  for "coarse" (codeword * 2^in_exp) and one for "current" (codeword / stage scale * 2^in_exp);
  coarse is an exact integer sum of the first table's entries over earlier stages, current a
  lookup in the second; `visible` enters as 2^in_exp;
- stem 3x3 conv (+ the stage embedding, folded into its accumulator), residual blocks of two
  3x3 convs with integer leaky ReLU (205/1024) on one residual-stream exponent, 1x1 head;
- scoring: features . integer code embeddings + bias, requantized to logits in units of
  2^-logit_exp nats, then counts through the `ExpTable` stored in the model file.

Activation exponents come from the max |activation| over calibration indices (with headroom).
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from . import fixed_point as fp
from .fixed_point import DTYPE, ExpTable, IntegerConv2d


class IntegerStagePrior(fp.CompactState, nn.Module):
    """Integer prior over residual-VQ indices, whole-vector (num_groups = 0) or grouped.

    Built by `from_float` (conversion) or `from_config` (loading a model file).
    """

    def __init__(self, *, dim: int, num_stages: int, num_codes: int, num_groups: int = 0,
                 width: int, depth: int, code_dim: int, schedule: str, in_exp: int,
                 precision: int = 22, logit_exp: int = 8, exponents: dict | None = None) -> None:
        super().__init__()
        self.dim, self.num_stages, self.num_codes = dim, num_stages, num_codes
        self.num_groups, self.width, self.depth, self.code_dim = num_groups, width, depth, code_dim
        self.schedule, self.in_exp = schedule, in_exp
        self.exponents = dict(exponents or {})  # calibrated activation exponents (for reports)
        g = max(num_groups, 1)
        book_shape = ((num_stages, num_groups, num_codes, dim // num_groups) if num_groups
                      else (num_stages, num_codes, dim))
        self.register_buffer("coarse_table", torch.zeros(book_shape, dtype=DTYPE))
        self.register_buffer("current_table", torch.zeros(book_shape, dtype=DTYPE))
        self.stem = IntegerConv2d(2 * dim + 1, width, 3, padding=1)
        # The stage embedding in stem-accumulator units, per stage and output channel.
        self.register_buffer("stage_embedding", torch.zeros(num_stages, width, dtype=DTYPE))
        self.blocks = nn.ModuleList(
            nn.ModuleList([IntegerConv2d(width, width, 3, padding=1),
                           IntegerConv2d(width, width, 3, padding=1)]) for _ in range(depth))
        self.head = IntegerConv2d(width, g * code_dim, 1)
        self.register_buffer("code_embedding", torch.zeros(num_stages, g, num_codes, code_dim,
                                                           dtype=DTYPE))
        self.register_buffer("code_bias", torch.zeros(num_stages, g, num_codes, dtype=DTYPE))
        self.register_buffer("logit_shift", torch.zeros(num_stages, g, dtype=torch.int64))
        self.table = ExpTable(precision=precision, logit_exp=logit_exp)

    # --- configuration -------------------------------------------------------------------

    def config_dict(self) -> dict:
        return {"dim": self.dim, "num_stages": self.num_stages, "num_codes": self.num_codes,
                "num_groups": self.num_groups, "width": self.width, "depth": self.depth,
                "code_dim": self.code_dim, "schedule": self.schedule, "in_exp": self.in_exp,
                **self.table.config_dict(), "exponents": self.exponents}

    @classmethod
    def from_config(cls, config: dict) -> "IntegerStagePrior":
        return cls(**config)

    @property
    def grouped(self) -> bool:
        return self.num_groups > 0

    # --- integer inputs ------------------------------------------------------------------

    def coarse_codewords(self, stage: int, indices: torch.Tensor) -> torch.Tensor:
        """Integer "coarse" codewords [..., D] of one stage's indices [..., G] ([..., 1])."""
        return self._lookup(self.coarse_table, stage, indices)

    def current_codewords(self, stage: int, indices: torch.Tensor) -> torch.Tensor:
        """Integer "current" (codeword / stage scale) codewords [..., D]."""
        return self._lookup(self.current_table, stage, indices)

    def _lookup(self, table: torch.Tensor, stage: int, indices: torch.Tensor) -> torch.Tensor:
        if not self.grouped:
            return table[stage][indices[..., 0]]
        g = torch.arange(self.num_groups, device=indices.device)
        return table[stage][g, indices].reshape(*indices.shape[:-1], self.dim)

    # --- the network ---------------------------------------------------------------------

    def features(self, coarse: torch.Tensor, current: torch.Tensor, visible: torch.Tensor,
                 stages: torch.Tensor) -> torch.Tensor:
        """Integer features [B, H, W, G * code_dim].

        Args:
            coarse: integer coarse inputs [B, D, H, W] (sums of `coarse_codewords`).
            current: integer current inputs at visible positions, zero elsewhere [B, D, H, W].
            visible: [B, 1, H, W], 1 where `current` is known (0/1).
            stages: [B] int64.
        """
        with fp.exact_mode():
            x = torch.cat([coarse.to(DTYPE), current.to(DTYPE),
                           visible.to(DTYPE) * fp.pow2(self.in_exp)], 1)
            h = self.stem(x, self.stage_embedding[stages][:, :, None, None])
            for conv1, conv2 in self.blocks:
                h = _residual_block(h, conv1, conv2)
            return self.head(fp.leaky_relu(h)).permute(0, 2, 3, 1)

    @property
    def receptive_radius(self) -> int:
        """How many positions away a feature can see: the stem's and every block conv's 3x3
        reach one position each; the head is 1x1."""
        return 1 + 2 * self.depth

    def coarse_accumulator(self, coarse: torch.Tensor) -> torch.Tensor | None:
        """The stem's accumulator over the coarse channels alone ([B, width, H, W], no bias),
        or None when `coarse` is all zero. A stage's passes share it (the stem is linear, and
        integer partial sums add exactly), so the walk computes it once per stage."""
        if not bool(coarse.any()):
            return None
        with fp.exact_mode():
            return F.conv2d(coarse.to(DTYPE), self.stem.weight[:, :self.dim], padding=1)

    def pass_features(self, coarse_acc: torch.Tensor | None, current: torch.Tensor,
                      visible: torch.Tensor, stages: torch.Tensor, mask: torch.Tensor
                      ) -> torch.Tensor:
        """Integer features [n, G * code_dim] at the `mask` positions of one image: the same
        integers as `features(...)[0][mask]`, computed with less work.

        - The stem's coarse part comes in precomputed (`coarse_accumulator`); the current and
          visible channels are convolved only when some position is visible.
        - With no input at all (the first pass of stage 0) every feature depends only on its
          distance to the grid's borders, up to `receptive_radius`: they are computed on a
          small grid and spread.
        - The last conv and the head run at the `mask` positions only.

        Args:
            coarse_acc: `coarse_accumulator(coarse)` of this stage.
            current, visible: [1, D, H, W], [1, 1, H, W] as for `features`.
            stages: [1] int64.
            mask: [H, W] bool, the pass's positions.
        """
        height, width = mask.shape
        with fp.exact_mode():
            seen = bool(visible.any())
            acc = self.stem.bias.view(1, -1, 1, 1) + self.stage_embedding[stages][:, :, None, None]
            if coarse_acc is None and not seen:
                return self._constant_features(
                    fp.requantize(acc, self.stem.shift, overwrite=True), mask)
            if coarse_acc is not None:
                acc = acc + coarse_acc
            if seen:
                x = torch.cat([current.to(DTYPE), visible.to(DTYPE) * fp.pow2(self.in_exp)], 1)
                acc = F.conv2d(x, self.stem.weight[:, self.dim:], padding=1).add_(acc)
            return self._trunk_at(fp.requantize(acc, self.stem.shift, overwrite=True), mask)

    def _trunk_at(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The residual blocks and head from the stem's output h [1, width, H, W], the last
        conv and the head evaluated only at `mask`: [n, G * code_dim]."""
        for conv1, conv2 in self.blocks[:-1]:
            h = _residual_block(h, conv1, conv2)
        conv1, conv2 = self.blocks[-1]
        a = fp.leaky_relu(conv1(fp.leaky_relu(h)))
        ii, jj = mask.nonzero(as_tuple=True)
        padded = F.pad(a[0], (1, 1, 1, 1))
        # The 3x3 conv at the mask positions only, one kernel tap at a time (small
        # temporaries; integer partial sums add exactly in any order).
        acc2 = conv2.bias[:, None].expand(-1, len(ii)).clone()
        for dy in range(3):
            for dx in range(3):
                acc2.addmm_(conv2.weight[:, :, dy, dx], padded[:, ii + dy, jj + dx])
        h_at = fp.clamp_activation(h[0][:, ii, jj] + fp.requantize(acc2, conv2.shift, dim=0,
                                                                      overwrite=True))
        head = self.head
        acc = torch.addmm(head.bias[:, None], head.weight.reshape(len(head.weight), -1),
                          fp.leaky_relu(h_at))
        return fp.requantize(acc, head.shift, dim=0, overwrite=True).t()

    def _constant_features(self, stem_out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`pass_features` of an all-zero input, whose stem output is the same [1, width, 1, 1]
        everywhere, from a grid of at most 2r + 1 rows and columns (r = `receptive_radius`):
        a position r or more away from every border sees what the small grid's centre sees,
        one k < r away from a border what the small grid's position k away from it sees."""
        r = self.receptive_radius
        height, width = mask.shape

        def spread(n: int) -> tuple[int, torch.Tensor]:
            if n <= 2 * r + 1:
                return n, torch.arange(n)
            i = torch.arange(n)
            return 2 * r + 1, torch.where(i < r, i, torch.where(i >= n - r, i - (n - 2 * r - 1), r))

        small_h, rows = spread(height)
        small_w, cols = spread(width)
        device = stem_out.device
        h = stem_out.expand(-1, -1, small_h, small_w).contiguous()
        full = torch.ones(small_h, small_w, dtype=torch.bool, device=device)
        small = self._trunk_at(h, full).reshape(small_h, small_w, -1)
        ii, jj = mask.nonzero(as_tuple=True)
        return small[rows.to(device)[ii], cols.to(device)[jj]]

    def logits_from_features(self, features: torch.Tensor, stages: torch.Tensor) -> torch.Tensor:
        """Integer logits [B, N, G, K] (G = 1 for a whole-vector prior) of features [B, N, C]
        (in units of 2^-logit_exp nats)."""
        b, n, _ = features.shape
        g, k, c = max(self.num_groups, 1), self.num_codes, self.code_dim
        with fp.exact_mode():
            f = features.reshape(b, n, g, c).permute(0, 2, 1, 3).reshape(b * g, n, c)
            books = self.code_embedding[stages].reshape(b * g, k, c).transpose(1, 2)
            scale, offset = fp.shift_factors(self.logit_shift[stages].cpu(),  # [B, G] each
                                             device=stages.device)
            bias = (self.code_bias[stages] + offset[..., None]).reshape(b * g, 1, k)
            # Integer sums below 2^53 (checked at conversion): exact in any order.
            acc = torch.baddbmm(bias, f, books)  # [B*G, N, K]
            logits = acc.mul_(scale.reshape(b * g, 1, 1)).floor_()
            return logits.view(b, g, n, k).permute(0, 2, 1, 3)

    def scoring_constants(self, stage: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What `feature_counts` scores one stage's features with, made once per pass: (code
        embeddings [G, code_dim, K], bias with the rounding offset [G, 1, K], scale [G, 1, 1]),
        as `logits_from_features` builds them."""
        g, k = max(self.num_groups, 1), self.num_codes
        scale, offset = fp.shift_factors(self.logit_shift[stage].cpu(),
                                         device=self.code_embedding.device)  # [G] each
        return (self.code_embedding[stage].transpose(1, 2),
                (self.code_bias[stage] + offset[:, None]).reshape(g, 1, k), scale.reshape(g, 1, 1))

    def feature_counts(self, features: torch.Tensor,
                       constants: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Integer counts [n * G, K] (rows position-major, then group) of one stage's features
        [n, G * code_dim], given its `scoring_constants`: `counts(logits_from_features(...))`,
        the same integers, in fewer passes over the [G, n, K] table and with one copy (the
        last gather's) instead of a transposing copy and four temporaries."""
        n, g, k, c = len(features), max(self.num_groups, 1), self.num_codes, self.code_dim
        books, bias, scale = constants
        with fp.exact_mode():
            f = features.reshape(n, g, c).transpose(0, 1)  # [G, n, c]
            logits = torch.baddbmm(bias, f, books).mul_(scale).floor_()  # [G, n, K]
            # d = max - logit in place, clamped to the table as `ExpTable.forward` does.
            top = logits.amax(-1, keepdim=True)  # before the in-place negation
            d = logits.neg_().add_(top)
            d = d.clamp_(max=len(self.table.counts) - 1).to(torch.int64)
            return torch.take(self.table.counts, d.transpose(0, 1)).view(n * g, k)

    def counts(self, logits: torch.Tensor) -> torch.Tensor:
        """Integer counts (>= 1) of integer logits, along the last dimension."""
        return self.table(logits)

    # --- conversion ----------------------------------------------------------------------

    @classmethod
    @torch.no_grad()
    def from_float(cls, prior: nn.Module, quantizer: nn.Module,
                   calibration_passes: Iterable[tuple], *, headroom: float = 4.0,
                   precision: int = 22, logit_exp: int = 8) -> "IntegerStagePrior":
        """Convert a float `StagePrior`/`GroupedStagePrior` (and its quantizer's codebooks).

        Args:
            prior, quantizer: the float model's.
            calibration_passes: the float prior's inputs (coarse, current, visible, stages,
                pass mask) of the teacher-forced passes over real indices
                (`coding.latent_codec.teacher_forced_passes`); each activation's exponent is
                set from its max |value| over all of them, times `headroom`.
            precision, logit_exp: of the `ExpTable`.
        """
        prior = prior.cpu().float()
        grouped = hasattr(prior, "num_groups")
        num_groups = prior.num_groups if grouped else 0
        scale = prior.stage_log_scale.detach().double().exp()
        if grouped:
            books = quantizer.codebooks.detach().cpu().double()  # [S, G, K, d]
            current_books = books / scale[:, None, None, None]
        else:
            books = torch.stack([vq.codebook.detach().cpu().double() for vq in quantizer.stages])
            current_books = books / scale[:, None, None]
        s_total = books.shape[0]
        per_stage_max = books.reshape(s_total, -1).abs().amax(1)
        bound = max(float(per_stage_max.sum()), float(current_books.abs().max()), 1.0)
        in_exp = fp.activation_exponent(bound, headroom=1.01)

        stats = _calibrate(prior, calibration_passes)
        h_exp = fp.activation_exponent(stats["stream"], headroom)
        mid_exps = [fp.activation_exponent(m, headroom) for m in stats["mid"]]
        f_exp = fp.activation_exponent(stats["features"], headroom)
        exponents = {"stream": h_exp, "mid": mid_exps, "features": f_exp,
                     "max_abs": {"stream": stats["stream"], "mid": stats["mid"],
                                 "features": stats["features"], "logits": stats["logits"]}}
        width, depth = prior.stem.out_channels, len(prior.blocks)
        code_dim = prior.code_embedding.shape[-1]
        out = cls(dim=prior.dim, num_stages=prior.num_stages, num_codes=prior.num_codes,
                  num_groups=num_groups, width=width, depth=depth, code_dim=code_dim,
                  schedule=prior.schedule, in_exp=in_exp, precision=precision,
                  logit_exp=logit_exp, exponents=exponents)
        out.coarse_table.copy_(fp.quantize_to_exponent(books, in_exp))
        out.current_table.copy_(fp.quantize_to_exponent(current_books, in_exp))
        if out.coarse_table.reshape(s_total, -1).abs().amax(1).sum() > fp.ACT_MAX:
            raise ValueError("coarse inputs would exceed the activation range")

        out.stem = IntegerConv2d.from_float(prior.stem, in_exp, h_exp)
        w_exp = _weight_exponents(prior.stem.weight)
        out.stage_embedding.copy_(fp.quantize_to_exponent(
            prior.stage_embedding.weight.detach(), (w_exp + in_exp)[None, :]))
        fp.check_accumulator(prior.stem.weight[0].numel(), fp.WEIGHT_MAX,
                             float(out.stem.bias.abs().max() + out.stage_embedding.abs().max()),
                             what="stem")
        for block, (c1, c2), mid in zip(prior.blocks, out.blocks, mid_exps):
            c1_new = IntegerConv2d.from_float(block.conv1, h_exp, mid)
            c2_new = IntegerConv2d.from_float(block.conv2, mid, h_exp)
            c1.load_state_dict(c1_new.state_dict()), c2.load_state_dict(c2_new.state_dict())
        out.head = IntegerConv2d.from_float(prior.head, h_exp, f_exp)

        g = max(num_groups, 1)
        emb = prior.code_embedding.detach().double().reshape(s_total, g, prior.num_codes, -1)
        bias = prior.code_bias.detach().double().reshape(s_total, g, prior.num_codes)
        e_int, e_exp = fp.quantize_weight(emb.reshape(s_total * g, -1), per_channel=True)
        e_exp = e_exp.view(s_total, g)
        out.code_embedding.copy_(e_int.view_as(emb))
        out.code_bias.copy_(fp.quantize_to_exponent(bias, (e_exp + f_exp)[..., None]))
        out.logit_shift.copy_(e_exp + f_exp - logit_exp)
        fp.check_accumulator(code_dim, fp.WEIGHT_MAX, float(out.code_bias.abs().max()),
                             what="code scoring")
        return out.eval()


def _residual_block(h: torch.Tensor, conv1: IntegerConv2d, conv2: IntegerConv2d) -> torch.Tensor:
    """One integer residual block on the residual stream h."""
    out = conv2(fp.leaky_relu(conv1(fp.leaky_relu(h))))  # a fresh tensor: added to in place
    return out.add_(h).clamp_(-fp.ACT_MAX, fp.ACT_MAX)


def _weight_exponents(weight: torch.Tensor) -> torch.Tensor:
    return fp.quantize_weight(weight, per_channel=True)[1]


def _calibrate(prior: nn.Module, calibration_passes) -> dict:
    """Max |activation| of the float prior over teacher-forced passes."""
    stream, features, logits = 0.0, 0.0, 0.0
    mid = [0.0] * len(prior.blocks)
    grouped = hasattr(prior, "num_groups")
    for coarse, current, visible, stages, m in calibration_passes:
        scale = prior.stage_log_scale[stages].exp().view(-1, 1, 1, 1)
        h = prior.stem(torch.cat([coarse, current / scale, visible], 1))
        h = h + prior.stage_embedding(stages)[:, :, None, None]
        stream = max(stream, float(h.abs().max()))
        for i, block in enumerate(prior.blocks):
            a = block.conv1(F.leaky_relu(h, 0.2))
            mid[i] = max(mid[i], float(a.abs().max()))
            h = h + block.conv2(F.leaky_relu(a, 0.2))
            stream = max(stream, float(h.abs().max()))
        f = prior.head(F.leaky_relu(h, 0.2)).permute(0, 2, 3, 1)
        features = max(features, float(f.abs().max()))
        fm = f[:, m]  # [B, n, C]
        g = prior.num_groups if grouped else 1
        fm = fm.reshape(len(fm), fm.shape[1], g, -1)
        emb = prior.code_embedding[stages].reshape(len(fm), g, prior.num_codes, -1)
        lg = torch.einsum("bngf,bgkf->bngk", fm, emb)
        lg = lg + prior.code_bias[stages].reshape(len(fm), g, -1)[:, None]
        logits = max(logits, float(lg.abs().max()))
    if stream == 0.0:
        raise ValueError("no calibration indices")
    return {"stream": stream, "mid": mid, "features": features, "logits": logits}
