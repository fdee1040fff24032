"""`vqcodec rd-curve DIR`: rate-distortion curves of a model, classical baselines and
published results, in CompressAI's JSON format, CSV, plots and a BD-rate table."""
from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

import click

BD_NOTE = ("Bjøntegaard delta rate (cubic fit of log-rate over PSNR, integrated over the "
           "overlapping PSNR range; piecewise-linear when a curve has < 4 points); negative: "
           "{model} needs fewer bits than the anchor at equal PSNR")


def _errors(func):
    """One-line errors through `main.user_errors` (imported late: main imports this module),
    with this command's own `RDError` shown the same way."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from ..codec.image_io import InputError
        from ..codec.rd import RDError
        from .main import user_errors

        def run():
            try:
                return func(*args, **kwargs)
            except RDError as e:
                raise InputError(str(e)) from None

        return user_errors(run)()

    return wrapper


def _int_list(text: str, option: str, low: int, high: int | None = None) -> list[int]:
    from ..codec.rd import RDError
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RDError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise RDError(f"{option}: no values given")
    for v in values:
        if v < low or (high is not None and v > high):
            raise RDError(f"{option}: {v} is outside {low}..{high if high is not None else ''}")
    return list(dict.fromkeys(values))


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def _fmt(value, spec: str = ".4f", width: int = 8) -> str:
    import math
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"{'-':>{width}}"
    return f"{value:{width}{spec}}"


def _table(curves) -> list[str]:
    header = (f"{'codec':<18} {'q':>3} {'stages':>6} {'bpp':>8} {'nll-bpp':>8} {'payload':>8} "
              f"{'file-bpp':>8} {'gap%':>6} {'PSNR':>7} {'MS-SSIM':>8} {'enc s':>7} {'dec s':>7}")
    lines = [header, "-" * len(header)]
    for curve in curves:
        r = curve.results
        for k in range(len(r["bpp"])):
            get = lambda key: r.get(key, [None] * (k + 1))[k]  # noqa: E731
            stages = get("stages")
            lines.append(
                f"{curve.label[:18]:<18} {get('quality'):>3} "
                f"{'-' if stages is None else stages:>6} {_fmt(get('bpp'))} "
                f"{_fmt(get('nll-bpp'))} {_fmt(get('payload-bpp'))} {_fmt(get('file-bpp'))} "
                f"{_fmt(get('gap-percent'), '.2f', 6)} {_fmt(get('psnr-rgb'), '.2f', 7)} "
                f"{_fmt(get('ms-ssim-rgb'), '.4f', 8)} {_fmt(get('encoding_time'), '.3f', 7)} "
                f"{_fmt(get('decoding_time'), '.3f', 7)}")
    return lines


def _bd_why(anchor, ours) -> str:
    """Why no BD-rate could be computed between two curves."""
    import numpy as np

    def usable(curve):
        x, y = curve.values("bpp"), curve.values("psnr-rgb")
        return y[np.isfinite(x) & np.isfinite(y) & (x > 0)]

    a, t = usable(anchor), usable(ours)
    if a.size < 2 or t.size < 2:
        return "fewer than 2 usable points"
    return (f"PSNR ranges do not overlap: ours {t.min():.2f}..{t.max():.2f} dB, anchor "
            f"{a.min():.2f}..{a.max():.2f} dB")


def _csv_bytes(rows: list[dict], columns: list[str]) -> bytes:
    import csv
    import io
    import math
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None or (isinstance(v, float) and not math.isfinite(v))
                         else v for k, v in row.items()})
    return buf.getvalue().encode()


RD_COLUMNS = ["codec", "kind", "quality", "stages", "bpp", "psnr-rgb", "ms-ssim-rgb", "mse",
              "nll-bpp", "payload-bpp", "file-bpp", "gap-percent", "encoding_time",
              "decoding_time"]
PER_IMAGE_COLUMNS = ["codec", "quality", "image", "width", "height", "stages", "bpp",
                     "psnr-rgb", "ms-ssim-rgb", "mse", "nll-bpp", "payload-bpp", "file-bpp",
                     "gap-percent", "encoding_time", "decoding_time"]


@click.command("rd-curve")
@click.argument("folder", metavar="DIR")
@click.option("--model", default=None,
              help="Shipped model name or path to a .safetensors model file "
                   "[default: the default image model].")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]), help="Where the networks run.")
@click.option("--qualities", default=None,
              help="Comma list of the model's qualities to measure [default: all].")
@click.option("--batch-size", type=int, default=4, show_default=True,
              help="Images of the same size per network pass.")
@click.option("--actual", is_flag=True,
              help="Also compress and decompress every image for real: bpp = payload bits, "
                   "real times and the gap to the prior's NLL.")
@click.option("--baselines", default="jpeg,webp", show_default=True,
              help="Comma list of jpeg, webp, avif, jpegxl; 'all' or 'none'.")
@click.option("--baseline-qualities", default=",".join(str(q) for q in range(5, 100, 5)),
              show_default=True, help="Quality settings (1..100) of the baselines.")
@click.option("--reference", "reference", default=None,
              help="Folder of CompressAI-format result JSONs to plot and compare against.")
@click.option("--out", "out", default=None,
              help="Output folder [default: results/<name of DIR>].")
@click.option("--per-image", is_flag=True, help="Also write per_image.csv.")
@click.option("--plots/--no-plots", default=True, show_default=True,
              help="Write rd-psnr.png and rd-msssim.png (needs matplotlib).")
@_errors
def rd_curve(folder: str, model: str | None, device: str, qualities: str | None,
             batch_size: int, actual: bool, baselines: str, baseline_qualities: str,
             reference: str | None, out: str | None, per_image: bool, plots: bool) -> None:
    """Measure rate-distortion curves on the images in DIR.

    Our model: bpp = the prior's NLL (no entropy coder) unless --actual, where bpp = the real
    payload. Baselines: bpp = file bits / pixels. PSNR and MS-SSIM on 8-bit RGB per image,
    then averaged (as CompressAI's eval_model); MS-SSIM is NaN (left out of the average) for
    images under 161 px on the short side. Writes <model>.json and <baseline>.json (CompressAI
    format), rd.csv, bd_rate.json, rd-psnr.png, rd-msssim.png and, with --per-image,
    per_image.csv into --out.
    """
    import json

    from ..codec import rd
    from ..codec.atomic import write_atomically
    from ..codec.device import resolve_device
    from ..models.registry import DEFAULT_IMAGE_MODEL, load_model

    def warn(message: str) -> None:
        click.echo(f"warning: {message}", err=True)

    rd.check_dependencies()
    if batch_size < 1:
        raise rd.RDError(f"--batch-size must be at least 1, got {batch_size}")
    dev = resolve_device(device)
    loaded = load_model(model or DEFAULT_IMAGE_MODEL, device=dev)
    model_qualities = (_int_list(qualities, "--qualities", 1, len(loaded.qualities))
                       if qualities else list(range(1, len(loaded.qualities) + 1)))
    codecs, notes = rd.resolve_baselines(baselines.split(","))
    base_qualities = _int_list(baseline_qualities, "--baseline-qualities", 1, 100)
    references, ref_skipped = ([], []) if reference is None else \
        rd.load_reference_curves(reference)
    images, skipped = rd.find_images(folder)
    for note in notes:
        warn(note)
    for path, reason in ref_skipped:
        warn(f"reference {path} skipped: {reason}")
    for name, reason in skipped:
        warn(f"skipping {name}: {reason}")
    if not images:
        raise rd.RDError(f"no readable images in {folder} ({len(skipped)} unreadable)")
    out_dir = Path(out) if out else Path("results") / (Path(folder).resolve().name or "rd")
    out_dir.mkdir(parents=True, exist_ok=True)
    source = str(folder)

    total = len(images) * (len(model_qualities) + len(codecs) * len(base_qualities))
    stderr = sys.stderr
    with click.progressbar(length=total, label="rd-curve", file=stderr,
                           item_show_func=lambda item: item) as bar:
        def progress(steps: int, what: str) -> None:
            bar.update(steps, what)

        evaluation = rd.evaluate_model(loaded, images, qualities=model_qualities,
                                       batch_size=batch_size, actual=actual, progress=progress)
        ours = rd.model_curve(evaluation, name=loaded.name, source=source, device=str(dev),
                              batch_size=batch_size)
        records = list(evaluation.records)
        base_curves = []
        for codec in codecs:
            recs = rd.evaluate_baseline(codec, images, qualities=base_qualities, device=dev,
                                        progress=progress)
            records.extend(recs)
            base_curves.append(rd.baseline_curve(codec, recs, source=source))

    # BD-rate of our model against each baseline and reference (PSNR-RGB).
    rate = "payload" if actual else "nll"
    bd_rows = {}
    for anchor in base_curves + references:
        if not anchor.has("psnr-rgb"):
            continue
        result = rd.bd_rate_details(anchor.values("bpp"), anchor.values("psnr-rgb"),
                                    ours.values("bpp"), ours.values("psnr-rgb"))
        bd_rows[anchor.label] = {
            "kind": anchor.kind, "name": anchor.name,
            "bd-rate": None if result is None else result.percent,
            "method": None if result is None else result.method,
            "psnr-range": None if result is None else [result.low, result.high]}
        if result is None:
            bd_rows[anchor.label]["why"] = _bd_why(anchor, ours)
    bd_json = {"test": loaded.name, "metric": "psnr-rgb",
               "rate": f"bpp ({'real payload' if actual else 'prior NLL'})",
               "description": BD_NOTE.format(model=loaded.name), "anchors": bd_rows}

    # Print.
    click.echo("\n".join(_table([ours] + base_curves)))
    small = sum(min(im.height, im.width) < rd.MS_SSIM_MIN_SIDE for im in images)
    summary = f"{len(images)} images"
    if skipped:
        summary += f", {len(skipped)} skipped (unreadable)"
    if small:
        summary += (f"; MS-SSIM undefined (NaN, left out of the means) for {small} image(s) "
                    f"under {rd.MS_SSIM_MIN_SIDE} px on the short side")
    click.echo(summary)
    if actual:
        click.echo(f"{loaded.name}: bpp = real payload bits / pixels; times = real "
                   "compress_image/decompress_image seconds per image")
    else:
        click.echo(f"{loaded.name}: bpp = prior NLL bits / pixels (entropy coder not run; "
                   "--actual runs it); times = batched network seconds per image")
    if actual:
        click.echo(f"check: batched NLL vs entropy coder NLL max relative difference "
                   f"{evaluation.nll_difference:.2e}; batched vs real PSNR max difference "
                   f"{evaluation.psnr_difference:.4f} dB")
    if bd_rows:
        click.echo(f"BD-rate of {loaded.name} (PSNR-RGB; negative = fewer bits than the anchor):")
        for label, row in bd_rows.items():
            if row["bd-rate"] is None:
                click.echo(f"  {label:<48} n/a ({row['why']})")
            else:
                lo, hi = row["psnr-range"]
                click.echo(f"  {label:<48} {row['bd-rate']:+8.2f} %  ({row['method']}, "
                           f"{lo:.2f}..{hi:.2f} dB)")

    # Write (each file atomically; nothing is written before the measurements are complete).
    written = []

    def put(name: str, data: bytes) -> None:
        write_atomically(out_dir / name, data)
        written.append(str(out_dir / name))

    put(f"{_safe_name(loaded.name)}.json",
        (json.dumps(ours.to_json(), indent=2) + "\n").encode())
    for curve in base_curves:
        put(f"{curve.name}.json", (json.dumps(curve.to_json(), indent=2) + "\n").encode())
    rows = []  # rd.csv: our curve, the baselines, then the reference results
    for curve in [ours] + base_curves + references:
        for k in range(len(curve.results["bpp"])):
            row = {key: values[k] for key, values in curve.results.items()}
            rows.append({"codec": curve.label, "kind": curve.kind, **row})
    put("rd.csv", _csv_bytes(rows, RD_COLUMNS))
    if per_image:
        put("per_image.csv", _csv_bytes([r.row() for r in records], PER_IMAGE_COLUMNS))
    put("bd_rate.json", (json.dumps(bd_json, indent=2) + "\n").encode())
    if plots:
        try:
            from ..codec.rd_plot import plot_rd
            title = f"{loaded.name} on {Path(folder).name} ({len(images)} images)"
            for metric, name in (("psnr", "rd-psnr.png"), ("ms-ssim", "rd-msssim.png")):
                plot_rd(out_dir / name, metric=metric, ours=[ours], baselines=base_curves,
                        references=references, title=title)
                written.append(str(out_dir / name))
        except ImportError:
            warn("matplotlib is not installed: no plots (pip install 'vqcodec[rd]')")
    click.echo("wrote " + ", ".join(written))
