"""Bjøntegaard delta rate (VCEG-M33) of our curve against anchors, and the BD-rate table that
`rd-curve` writes as bd_rate.json."""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .rd import RDCurve

__all__ = ["BD_NOTE", "BDRate", "SPLIT_PSNR_DB", "bd_rate", "bd_rate_details", "bd_rate_table"]

# The low and high ranges BD-rates are also reported over: below and from this PSNR (issue 11:
# the rates people keep photos at lie above it).
SPLIT_PSNR_DB = 30.0

BD_NOTE = ("Bjøntegaard delta rate (cubic fit of log-rate over PSNR, integrated over the "
           "overlapping PSNR range; piecewise-linear when a curve has < 4 points); negative: "
           "{model} needs fewer bits than the anchor at equal PSNR")


@dataclass(frozen=True)
class BDRate:
    """A Bjøntegaard delta rate.

    Args:
        percent: average rate change of the test curve vs the anchor at equal PSNR, in percent
            (negative: the test codec needs fewer bits).
        method: "cubic" (polynomial fit, both curves >= 4 points) or "linear" (piecewise-linear
            interpolation of log-rate, when a curve has 2 or 3 points).
        low, high: the overlapping PSNR interval integrated over (dB).
    """

    percent: float
    method: str
    low: float
    high: float


def _clean(bpp: Sequence[float], psnr: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray([math.nan if v is None else v for v in bpp], dtype=float)
    d = np.asarray([math.nan if v is None else v for v in psnr], dtype=float)
    if r.shape != d.shape:
        raise ValueError(f"rate and PSNR lists differ in length: {r.size} vs {d.size}")
    keep = np.isfinite(r) & np.isfinite(d) & (r > 0)
    order = np.argsort(d[keep], kind="stable")
    return np.log(r[keep][order]), d[keep][order]


def _integral_cubic(log_rate: np.ndarray, psnr: np.ndarray, low: float, high: float) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RankWarning on nearly coincident points
        poly = np.polyfit(psnr, log_rate, 3)
    antiderivative = np.polyint(poly)
    return float(np.polyval(antiderivative, high) - np.polyval(antiderivative, low))


def _integral_linear(log_rate: np.ndarray, psnr: np.ndarray, grid: np.ndarray) -> float:
    # `grid` holds every breakpoint of the interpolant, so the trapezoid rule is exact.
    values = np.interp(grid, psnr, log_rate)
    return float(np.sum((values[1:] + values[:-1]) * np.diff(grid)) / 2)


def bd_rate_details(anchor_bpp: Sequence[float], anchor_psnr: Sequence[float],
                    test_bpp: Sequence[float], test_psnr: Sequence[float], *,
                    within: tuple[float, float] | None = None) -> BDRate | None:
    """Bjøntegaard delta rate of a test curve against an anchor (VCEG-M33).

    Log-rate is fitted as a cubic polynomial of PSNR for each curve and both fits are
    integrated over the PSNR interval where the curves overlap; the result is
    exp(mean log-rate difference) - 1 in percent. When either curve has fewer than 4 points,
    log-rate is interpolated piecewise-linearly instead (exact integration on the union of the
    curves' PSNR values). Points with a missing/non-finite value or zero rate are dropped.

    Args:
        anchor_bpp, anchor_psnr: the anchor (reference) curve.
        test_bpp, test_psnr: the curve being judged.
        within: integrate only over this PSNR interval (dB) of the overlap; the fits still use
            every point.

    Returns:
        The result, or None when a curve has fewer than 2 usable points or the PSNR ranges do
        not overlap (within `within`).
    """
    ra, da = _clean(anchor_bpp, anchor_psnr)
    rt, dt = _clean(test_bpp, test_psnr)
    if ra.size < 2 or rt.size < 2:
        return None
    low, high = max(da[0], dt[0]), min(da[-1], dt[-1])
    if within is not None:
        low, high = max(low, within[0]), min(high, within[1])
    if not high > low:
        return None
    if ra.size >= 4 and rt.size >= 4:
        method = "cubic"
        int_a = _integral_cubic(ra, da, low, high)
        int_t = _integral_cubic(rt, dt, low, high)
    else:
        method = "linear"
        grid = np.concatenate([[low, high], da, dt])
        grid = np.unique(grid[(grid >= low) & (grid <= high)])
        int_a = _integral_linear(ra, da, grid)
        int_t = _integral_linear(rt, dt, grid)
    mean_diff = (int_t - int_a) / (high - low)
    return BDRate(percent=float((math.exp(mean_diff) - 1) * 100), method=method,
                  low=float(low), high=float(high))


def bd_rate(anchor_bpp: Sequence[float], anchor_psnr: Sequence[float],
            test_bpp: Sequence[float], test_psnr: Sequence[float]) -> float | None:
    """Bjøntegaard delta rate in percent of test vs anchor (negative = fewer bits), or None.

    See `bd_rate_details` for the method and when None is returned.

    Args:
        anchor_bpp, anchor_psnr: the anchor (reference) curve.
        test_bpp, test_psnr: the curve being judged.
    """
    result = bd_rate_details(anchor_bpp, anchor_psnr, test_bpp, test_psnr)
    return None if result is None else result.percent


def _why_none(anchor: RDCurve, ours: RDCurve) -> str:
    """Why no BD-rate could be computed between two curves."""
    def usable(curve: RDCurve) -> np.ndarray:
        x, y = curve.values("bpp"), curve.values("psnr-rgb")
        return y[np.isfinite(x) & np.isfinite(y) & (x > 0)]

    a, t = usable(anchor), usable(ours)
    if a.size < 2 or t.size < 2:
        return "fewer than 2 usable points"
    return (f"PSNR ranges do not overlap: ours {t.min():.2f}..{t.max():.2f} dB, anchor "
            f"{a.min():.2f}..{a.max():.2f} dB")


def bd_rate_table(ours: RDCurve, anchors: Sequence[RDCurve], *, actual: bool) -> dict:
    """BD-rate (PSNR-RGB over bpp) of our image curve against every anchor that has PSNR.

    Args:
        ours: our model's curve.
        anchors: baselines and references (labels unique).
        actual: whether our bpp is the real payload (else the prior's NLL).

    Returns:
        The bd_rate.json object: {"test", "metric", "rate", "description", "anchors": {label:
        {"kind", "name", "bd-rate", "method", "psnr-range"[, "why"], and "bd-rate-low",
        "psnr-range-low", "bd-rate-high", "psnr-range-high": the same over the overlap below
        and from SPLIT_PSNR_DB}}}; "bd-rate" is None (and "why" says why) where the curves do
        not allow one.
    """
    rows = {}
    for anchor in anchors:
        if not anchor.has("psnr-rgb"):
            continue
        result = bd_rate_details(anchor.values("bpp"), anchor.values("psnr-rgb"),
                                 ours.values("bpp"), ours.values("psnr-rgb"))
        rows[anchor.label] = {
            "kind": anchor.kind, "name": anchor.name,
            "bd-rate": None if result is None else result.percent,
            "method": None if result is None else result.method,
            "psnr-range": None if result is None else [result.low, result.high]}
        for key, within in (("low", (-math.inf, SPLIT_PSNR_DB)),
                            ("high", (SPLIT_PSNR_DB, math.inf))):
            part = bd_rate_details(anchor.values("bpp"), anchor.values("psnr-rgb"),
                                   ours.values("bpp"), ours.values("psnr-rgb"), within=within)
            rows[anchor.label][f"bd-rate-{key}"] = None if part is None else part.percent
            rows[anchor.label][f"psnr-range-{key}"] = (None if part is None
                                                        else [part.low, part.high])
        if result is None:
            rows[anchor.label]["why"] = _why_none(anchor, ours)
    return {"test": ours.name, "metric": "psnr-rgb",
            "rate": f"bpp ({'real payload' if actual else 'prior NLL'})",
            "description": BD_NOTE.format(model=ours.name), "anchors": rows}
