"""BD-rates of a model's curve put together from two `vqcodec rd-curve` runs: the qualities
a later run re-measured replace those of an earlier one (for a change that touches some
qualities only), against the earlier run's baselines and any CompressAI reference curves.

    python benchmarks/merge_curves.py EARLIER/vqimage-v3i.json LATER/vqimage-v3i.json \
        --anchors EARLIER/webp.json,EARLIER/avif.json,EARLIER/jpeg.json \
        [--reference ../shared/data/compressai-kodak] [--out merged.json]

Prints the merged curve and, per anchor, the BD-rate (PSNR-RGB) over the shared range and
below / from 30 dB, as `rd-curve` does.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from vqcodec.eval.bd_rate import SPLIT_PSNR_DB, bd_rate_details

REFERENCES = ("bmshj2018-hyperprior-vbr-ans.json", "bpg_444_x265_ycbcr.json")


def _curve(path: Path) -> tuple[str, dict]:
    d = json.loads(path.read_text())
    return d.get("name", path.stem), d["results"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("earlier")
    ap.add_argument("later")
    ap.add_argument("--anchors", required=True, help="comma list of baseline JSON files")
    ap.add_argument("--reference", default=None, help="folder of CompressAI curves")
    ap.add_argument("--out", default=None, help="write the merged curve here")
    args = ap.parse_args()
    name, early = _curve(Path(args.earlier))
    _, late = _curve(Path(args.later))
    keys = [k for k in early if isinstance(early[k], list) and k in late]
    by_quality = {q: {k: early[k][i] for k in keys} for i, q in enumerate(early["quality"])}
    by_quality.update({q: {k: late[k][i] for k in keys} for i, q in enumerate(late["quality"])})
    merged = {k: [by_quality[q][k] for q in sorted(by_quality)] for k in keys}
    for q in sorted(by_quality):
        row = by_quality[q]
        print(f"q{q}: {row['bpp']:.4f} bpp, {row['psnr-rgb']:.2f} dB, MS-SSIM "
              f"{row['ms-ssim-rgb']:.4f}" + (" (later run)" if q in late["quality"] else ""))
    anchors = [Path(a) for a in args.anchors.split(",")]
    if args.reference:
        anchors += [Path(args.reference) / r for r in REFERENCES]
    for path in anchors:
        label, a = _curve(path)
        parts = []
        for within in (None, (-math.inf, SPLIT_PSNR_DB), (SPLIT_PSNR_DB, math.inf)):
            r = bd_rate_details(a["bpp"], a["psnr-rgb"], merged["bpp"], merged["psnr-rgb"],
                                within=within)
            parts.append("-" if r is None else f"{r.percent:+.2f} % ({r.low:.2f}-{r.high:.2f} dB)")
        print(f"{label}: {parts[0]}; < {SPLIT_PSNR_DB:g} dB {parts[1]}; >= {parts[2]}")
    if args.out:
        Path(args.out).write_text(json.dumps({"name": name, "results": merged}, indent=1))


if __name__ == "__main__":
    main()
