"""Rate-distortion plots (PNG) of our model, the baselines and reference results.

matplotlib is imported only when a plot is drawn, through its object API and the Agg canvas
(no pyplot, no global backend switch), so importing this module costs nothing.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_output
from .metrics import msssim_db
from .rd import RDCurve

__all__ = ["plot_rd"]

_METRICS = {
    "psnr": ("psnr-rgb", "PSNR-RGB (dB)"),
    "ms-ssim": ("ms-ssim-rgb", "MS-SSIM-RGB (dB) = -10 log10(1 - MS-SSIM)"),
    "si-snr": ("si-snr", "SI-SNR (dB)"),
    "mel": ("mel-distance", "mel distance (mean |log10 mel| difference; lower is better)"),
}
# The rate axis: bits per pixel for images, kilobits per second for audio.
_RATE_AXIS = {"psnr": ("bpp", "bits per pixel"), "ms-ssim": ("bpp", "bits per pixel"),
              "si-snr": ("kbps", "kilobits per second"),
              "mel": ("kbps", "kilobits per second")}


def _series(curve: RDCurve, metric: str) -> tuple[np.ndarray, np.ndarray]:
    key = _METRICS[metric][0]
    x = curve.values(_RATE_AXIS[metric][0])
    y = curve.values(key)
    if metric == "ms-ssim":
        y = np.array([msssim_db(v) for v in y])
    keep = np.isfinite(x) & np.isfinite(y)
    order = np.argsort(x[keep], kind="stable")
    return x[keep][order], y[keep][order]


def plot_rd(path: str | Path, *, metric: str, ours: Sequence[RDCurve],
            baselines: Sequence[RDCurve] = (), references: Sequence[RDCurve] = (),
            title: str = "") -> int:
    """Draw rate vs distortion (bpp vs PSNR or MS-SSIM; kbps vs SI-SNR or mel distance) and
    write a PNG atomically.

    Curves without a finite value of the metric are left out. The x axis spans our curves and
    the baselines (references may run past it); the y axis fits the points in view.

    Args:
        path: the PNG to write.
        metric: "psnr" or "ms-ssim" (images, in dB; x = "bpp"), "si-snr" or "mel" (audio;
            x = "kbps").
        ours: our model's curve(s), drawn bold.
        baselines: classical codecs measured here, dashed.
        references: published results, thin.
        title: the plot's title.

    Returns:
        The number of curves drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {sorted(_METRICS)}, got {metric!r}")
    fig = Figure(figsize=(11, 6.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    drawn, x_max, in_view = 0, 0.0, []
    import matplotlib

    palette = matplotlib.colormaps["tab20"]
    groups = [(ours, "ours", dict(linewidth=2.5, marker="o", markersize=5, zorder=5)),
              (baselines, "measured here", dict(linewidth=1.6, linestyle="--", marker="s",
                                                markersize=3, zorder=4)),
              (references, "", dict(linewidth=0.8, marker=".", markersize=2.5, alpha=0.7,
                                    zorder=3))]
    series = []
    for curves, note, style in groups:
        for k, curve in enumerate(curves):
            x, y = _series(curve, metric)
            if x.size == 0:
                continue
            style = dict(style)
            if curves is ours:
                style["color"] = "black" if k == 0 else f"C{k}"
            elif curves is baselines:
                style["color"] = ("tab:red", "tab:blue", "tab:green", "tab:purple")[k % 4]
            else:
                style["color"] = palette(k % 20)
            label = f"{curve.label} ({note})" if note else curve.label
            series.append((label, x, y, style))
            if curves is not references:
                x_max = max(x_max, float(x.max()))
    if not x_max:
        x_max = max((float(x.max()) for _, x, _, _ in series), default=1.0)
    x_max *= 1.05
    for label, x, y, style in series:
        ax.plot(x, y, label=label, **style)
        in_view.extend(y[x <= x_max].tolist())
        drawn += 1
    ax.set_xlim(0, x_max)
    finite = [v for v in in_view if math.isfinite(v)]
    if finite:
        low, high = min(finite), max(finite)
        pad = max(0.05 * (high - low), 0.1)
        ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel(_RATE_AXIS[metric][1])
    ax.set_ylabel(_METRICS[metric][1])
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if drawn:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=6,
                  ncol=1 if drawn <= 30 else 2, frameon=False)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    return drawn
