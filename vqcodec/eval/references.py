"""Reference results: CompressAI-format result files (published curves) to compare against."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import RDError
from .rd import RDCurve

__all__ = ["load_reference_curves"]


def load_reference_curves(folder: str | Path) -> tuple[list[RDCurve], list[tuple[str, str]]]:
    """Every CompressAI-format result file under a folder (recursive), sorted by path.

    A file qualifies when it is a JSON object with "results" holding a "bpp" list and at least
    one of "psnr-rgb", "ms-ssim-rgb", "ms-ssim-db-rgb" of the same length; "ms-ssim-rgb" is
    derived from "ms-ssim-db-rgb" when only that is given. The label is the folder's name and
    the path below it without ".json" ("compressai-kodak/jpeg"): names repeat across files
    (CPU and CUDA runs), and a reference must not share a label with a measured baseline.

    Args:
        folder: the folder (or one JSON file).

    Returns:
        (curves, skipped) where skipped lists (file, reason).

    Raises:
        RDError: the folder does not exist.
    """
    folder = Path(folder)
    if folder.is_file():
        paths, root = [folder], folder.parent
    elif folder.is_dir():
        paths, root = sorted(folder.rglob("*.json")), folder
    else:
        raise RDError(f"no such reference folder: {folder}")
    curves, skipped = [], []
    for path in paths:
        label = f"{root.resolve().name}/{path.relative_to(root).with_suffix('').as_posix()}"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            skipped.append((str(path), f"not readable JSON ({type(e).__name__})"))
            continue
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, dict) or not isinstance(results.get("bpp"), list):
            skipped.append((str(path), "not a CompressAI result file"))
            continue
        n = len(results["bpp"])
        clean: dict[str, list] = {}
        for key, values in results.items():
            if isinstance(values, list) and len(values) == n and all(
                    v is None or isinstance(v, (int, float)) for v in values):
                clean[key] = [None if v is None else float(v) for v in values]
        if "ms-ssim-rgb" not in clean and "ms-ssim-db-rgb" in clean:
            clean["ms-ssim-rgb"] = [None if v is None else 1 - 10 ** (-v / 10)
                                    for v in clean["ms-ssim-db-rgb"]]
        if n == 0 or not ({"psnr-rgb", "ms-ssim-rgb"} & clean.keys()):
            skipped.append((str(path), "no psnr-rgb or ms-ssim-rgb values"))
            continue
        curves.append(RDCurve(name=str(data.get("name") or label),
                              description=str(data.get("description") or ""),
                              results=clean, label=label, kind="reference"))
    return curves, skipped
