"""The files `rd-curve` writes, for images and audio alike: each curve as CompressAI JSON,
rd.csv (every curve's points), the per-item CSV, bd_rate.json (images) and the plots, each
written atomically, so an interrupted run leaves no half-written file."""
from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

from ..io.atomic import write_atomically
from .rd import Medium, RDCurve, RDRecord

__all__ = ["PLOTS", "csv_bytes", "file_stem", "write_results"]

PLOTS = {"image": (("psnr", "rd-psnr.png"), ("ms-ssim", "rd-msssim.png")),
         "audio": (("si-snr", "rd-sisnr.png"), ("mel", "rd-mel.png"))}
"""Per medium, the (`plot.plot_rd` metric, file name) of each plot."""


def file_stem(name: str) -> str:
    """A model name as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def csv_bytes(rows: Sequence[dict], columns: Sequence[str]) -> bytes:
    """CSV with a header; None and non-finite floats become empty cells, missing keys too."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None or (isinstance(v, float) and not math.isfinite(v))
                         else v for k, v in row.items()})
    return buf.getvalue().encode()


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def write_results(out_dir: Path, medium: Medium, *, ours: RDCurve,
                  baselines: Sequence[RDCurve], references: Sequence[RDCurve] = (),
                  records: Sequence[RDRecord] | None = None, bd_table: dict | None = None,
                  plot_title: str | None = None) -> tuple[list[str], list[str]]:
    """Write a run's files into `out_dir`.

    Args:
        out_dir: the folder (exists).
        medium: what was measured.
        ours: our model's curve (written as <model name>.json).
        baselines: the baselines' curves (<name>.json each).
        references: reference curves (in rd.csv and the plots only).
        records: every per-item record, for `medium.item_file` (None: not written).
        bd_table: bd_rate.json's content (None: not written).
        plot_title: the plots' title (None: no plots).

    Returns:
        (paths written, warnings).
    """
    written, notes = [], []

    def put(name: str, data: bytes) -> None:
        write_atomically(out_dir / name, data)
        written.append(str(out_dir / name))

    put(f"{file_stem(ours.name)}.json", _json_bytes(ours.to_json()))
    for curve in baselines:
        put(f"{curve.name}.json", _json_bytes(curve.to_json()))
    rows = []  # rd.csv: our curve, the baselines, then the reference results
    for curve in [ours, *baselines, *references]:
        for k in range(len(curve)):
            rows.append({"codec": curve.label, "kind": curve.kind,
                         **{key: values[k] for key, values in curve.results.items()}})
    put("rd.csv", csv_bytes(rows, medium.curve_columns))
    if records is not None:
        put(medium.item_file, csv_bytes([r.row(medium) for r in records],
                                        medium.item_file_columns))
    if bd_table is not None:
        put("bd_rate.json", _json_bytes(bd_table))
    if plot_title is not None:
        try:
            from .plot import plot_rd
            for metric, name in PLOTS[medium.kind]:
                plot_rd(out_dir / name, metric=metric, ours=[ours], baselines=baselines,
                        references=references, title=plot_title)
                written.append(str(out_dir / name))
        except ImportError:
            notes.append("matplotlib is not installed: no plots (pip install 'vqcodec[rd]')")
    return written, notes
