"""Context schedules: in which passes the positions of one quantizer stage are coded.

A schedule splits an H x W grid into passes; positions in pass p are predicted from all earlier
stages and from the positions of passes < p of the same stage. Fewer passes decode faster, more
passes give each position more context. Encoder and decoder must use the same schedule, so
its name is part of a model's config.

A file may code its later stages in one pass (`stage_schedules`): each of their positions is
then predicted from the earlier stages only, as a schedule's first pass is. Late stages gain
little from their own neighbours (their context is mostly the earlier stages), and one pass
costs one evaluation of the prior instead of one per pass.
"""
from __future__ import annotations

import torch


def checkerboard(height: int, width: int) -> list[torch.Tensor]:
    """Two passes: anchors where (i + j) is even, then the rest."""
    ii, jj = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    anchor = (ii + jj) % 2 == 0
    return [anchor, ~anchor]


def quad(height: int, width: int) -> list[torch.Tensor]:
    """Four passes over the 2x2 sub-grids: (0,0), (1,1), (0,1), (1,0)."""
    ii, jj = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return [(ii % 2 == a) & (jj % 2 == b) for a, b in ((0, 0), (1, 1), (0, 1), (1, 0))]


def single(height: int, width: int) -> list[torch.Tensor]:
    """One pass: every position at once, predicted from the earlier stages only."""
    return [torch.ones(height, width, dtype=torch.bool)]


SCHEDULES = {"checkerboard": checkerboard, "quad": quad, "single": single}


def stage_schedules(schedule: str, num_stages: int, context_stages: int | None = None
                    ) -> list[str]:
    """The schedule of each of `num_stages` stages: `schedule` for the first
    `context_stages` (None: all), "single" (one pass) for the rest.

    Args:
        schedule: the model's context schedule.
        num_stages: how many stages are coded.
        context_stages: how many leading stages use `schedule` (>= 0), or None.
    """
    if context_stages is None:
        return [schedule] * num_stages
    if context_stages < 0:
        raise ValueError(f"context_stages must be at least 0, got {context_stages}")
    return [schedule if s < context_stages else "single" for s in range(num_stages)]


def pass_masks(name: str, height: int, width: int) -> list[torch.Tensor]:
    """Boolean masks [H, W], one per pass, partitioning the grid."""
    try:
        return SCHEDULES[name](height, width)
    except KeyError:
        raise ValueError(f"unknown context schedule {name!r}; known: {sorted(SCHEDULES)}") from None


def passes_with_context(masks: list[torch.Tensor]):
    """(pass mask, known) for each pass of a schedule: `known` [H, W] (bool) marks the
    positions decoded in earlier passes, the context a pass is predicted from."""
    known = torch.zeros_like(masks[0])
    for mask in masks:
        yield mask, known
        known = known | mask
