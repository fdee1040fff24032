"""`vqcodec rd-curve DIR`: rate-distortion curves of a model, classical baselines and
published results, in CompressAI's JSON format, CSV, plots and a BD-rate table; for audio
(`codec.audio_rd`) the model's bitrates against Opus."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from .options import device_option, user_errors

BD_NOTE = ("Bjøntegaard delta rate (cubic fit of log-rate over PSNR, integrated over the "
           "overlapping PSNR range; piecewise-linear when a curve has < 4 points); negative: "
           "{model} needs fewer bits than the anchor at equal PSNR")


def _int_list(text: str, option: str, low: int, high: int | None = None) -> list[int]:
    from ..eval.rd import RDError
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


def _audio_table(curves, saving) -> list[str]:
    """Rows of the audio table: nominal kbps, the prior's NLL kbps, the real kbps (payload for
    our model with --actual, the file for Opus), the prior's saving over the raw index bits,
    SI-SNR and mel distance; "enc s" of Opus is its encode + decode round trip."""
    header = (f"{'codec':<18} {'nominal':>7} {'stages':>6} {'nll-kbps':>8} {'real':>8} "
              f"{'gap%':>6} {'saving%':>7} {'SI-SNR':>7} {'mel':>7} {'enc s':>7} {'dec s':>7}")
    lines = [header, "-" * len(header)]
    for curve in curves:
        r = curve.results
        for k in range(len(r["bitrate"])):
            get = lambda key: r.get(key, [None] * (k + 1))[k]  # noqa: E731
            stages = get("stages")
            real = get("payload-kbps") if curve.kind == "model" else get("file-kbps")
            save = 100 * saving[k] if curve.kind == "model" else None
            enc = get("encoding_time") if curve.kind == "model" else get("roundtrip_time")
            lines.append(
                f"{curve.label[:18]:<18} {_fmt(get('bitrate'), '.3g', 7)} "
                f"{'-' if stages is None else stages:>6} {_fmt(get('nll-kbps'), '.3f')} "
                f"{_fmt(real, '.3f')} {_fmt(get('gap-percent'), '.2f', 6)} "
                f"{_fmt(save, '.1f', 7)} {_fmt(get('si-snr'), '.2f', 7)} "
                f"{_fmt(get('mel-distance'), '.3f', 7)} {_fmt(enc, '.3f', 7)} "
                f"{_fmt(get('decoding_time'), '.3f', 7)}")
    return lines


def _explicit(name: str) -> bool:
    """Whether the user gave option `name` (not just its default)."""
    from click.core import ParameterSource
    return click.get_current_context().get_parameter_source(name) not in (
        ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


@click.command("rd-curve")
@click.argument("folder", metavar="DIR")
@click.option("--model", default=None,
              help="Shipped model name or path to a .safetensors model file [default: the "
                   "default image model, or the default audio model when DIR holds audio].")
@device_option
@click.option("--qualities", default=None,
              help="Comma list of the model's qualities (rate settings 1..N; for audio its "
                   "bitrates, lowest first) to measure [default: all].")
@click.option("--batch-size", type=int, default=4, show_default=True,
              help="Images of the same size per network pass (images only).")
@click.option("--actual", is_flag=True,
              help="Also compress and decompress every image or clip for real: rate = payload "
                   "bits, real times and the gap to the prior's NLL.")
@click.option("--baselines", default=None,
              help="Comma list of jpeg, webp, avif, jpegxl (images) or opus (audio); 'all' or "
                   "'none' [default: jpeg,webp for images, opus for audio].")
@click.option("--baseline-qualities", default=",".join(str(q) for q in range(5, 100, 5)),
              show_default=True, help="Quality settings (1..100) of the image baselines.")
@click.option("--baseline-bitrates", default=None,
              help="Bitrates in kbit/s (6..256) of the audio baseline "
                   "[default: 6,8,10,12,16,24].")
@click.option("--reference", "reference", default=None,
              help="Folder of CompressAI-format result JSONs to plot and compare against "
                   "(images only).")
@click.option("--out", "out", default=None,
              help="Output folder [default: results/<name of DIR>].")
@click.option("--per-image", is_flag=True,
              help="Also write per-image or per-clip results (per_image.csv or per_clip.csv).")
@click.option("--plots/--no-plots", default=True, show_default=True,
              help="Write rd-psnr.png and rd-msssim.png (images) or rd-sisnr.png and "
                   "rd-mel.png (audio); needs matplotlib.")
@user_errors
def rd_curve(folder: str, model: str | None, device: str, qualities: str | None,
             batch_size: int, actual: bool, baselines: str | None, baseline_qualities: str,
             baseline_bitrates: str | None, reference: str | None, out: str | None,
             per_image: bool, plots: bool) -> None:
    """Measure rate-distortion curves on the images or audio clips in DIR.

    Images: our model's bpp = the prior's NLL (no entropy coder) unless --actual, where bpp =
    the real payload. Baselines: bpp = file bits / pixels. PSNR and MS-SSIM on 8-bit RGB per
    image, then averaged (as CompressAI's eval_model); MS-SSIM is NaN (left out of the average)
    for images under 161 px on the short side. Writes <model>.json and <baseline>.json
    (CompressAI format), rd.csv, bd_rate.json, rd-psnr.png, rd-msssim.png and, with
    --per-image, per_image.csv into --out.

    Audio (an audio --model, or no --model and DIR holds audio files only): the same at every
    bitrate of the model, with kbps instead of bpp and SI-SNR, mel distance and MSE against
    the original; Opus as the baseline. Writes <model>.json, opus.json, rd.csv, rd-sisnr.png,
    rd-mel.png and, with --per-image, per_clip.csv.
    """
    from ..eval import rd
    from ..device import resolve_device
    from ..zoo.registry import DEFAULT_AUDIO_MODEL, DEFAULT_IMAGE_MODEL, load_model

    if batch_size < 1:
        raise rd.RDError(f"--batch-size must be at least 1, got {batch_size}")
    dev = resolve_device(device)
    if model is None:
        from ..io.media import folder_kind
        audio = folder_kind(folder) == "audio"
        loaded = load_model(DEFAULT_AUDIO_MODEL if audio else DEFAULT_IMAGE_MODEL, device=dev)
    else:
        loaded = load_model(model, device=dev)
        audio = loaded.kind == "audio"
    if audio:
        for name, option in (("batch_size", "--batch-size"), ("reference", "--reference"),
                             ("baseline_qualities", "--baseline-qualities")):
            if _explicit(name):
                raise rd.RDError(f"{option} is for images; {loaded.name} is an audio model")
        _audio_rd_curve(folder, loaded, dev, qualities=qualities, actual=actual,
                        baselines=baselines, baseline_bitrates=baseline_bitrates, out=out,
                        per_clip=per_image, plots=plots)
        return
    if baseline_bitrates is not None:
        raise rd.RDError(f"--baseline-bitrates is for audio; {loaded.name} is an image model")
    _image_rd_curve(folder, loaded, dev, qualities=qualities, batch_size=batch_size,
                    actual=actual, baselines=baselines or "jpeg,webp",
                    baseline_qualities=baseline_qualities, reference=reference, out=out,
                    per_image=per_image, plots=plots)


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _image_rd_curve(folder: str, loaded, dev, *, qualities: str | None, batch_size: int,
                    actual: bool, baselines: str, baseline_qualities: str,
                    reference: str | None, out: str | None, per_image: bool,
                    plots: bool) -> None:
    """`rd-curve` on images (see `rd_curve`)."""
    import json

    from ..eval import rd
    from ..io.atomic import write_atomically

    rd.check_dependencies()
    if "opus" in [n.strip().lower() for n in baselines.split(",")]:
        raise rd.RDError(f"baseline 'opus' is for audio; {loaded.name} is an image model")
    model_qualities = (_int_list(qualities, "--qualities", 1, len(loaded.qualities))
                       if qualities else list(range(1, len(loaded.qualities) + 1)))
    codecs, notes = rd.resolve_baselines(baselines.split(","))
    base_qualities = _int_list(baseline_qualities, "--baseline-qualities", 1, 100)
    references, ref_skipped = ([], []) if reference is None else \
        rd.load_reference_curves(reference)
    images, skipped = rd.find_images(folder)
    for note in notes:
        _warn(note)
    for path, reason in ref_skipped:
        _warn(f"reference {path} skipped: {reason}")
    for name, reason in skipped:
        _warn(f"skipping {name}: {reason}")
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
            from ..eval.plot import plot_rd
            title = f"{loaded.name} on {Path(folder).name} ({len(images)} images)"
            for metric, name in (("psnr", "rd-psnr.png"), ("ms-ssim", "rd-msssim.png")):
                plot_rd(out_dir / name, metric=metric, ours=[ours], baselines=base_curves,
                        references=references, title=title)
                written.append(str(out_dir / name))
        except ImportError:
            _warn("matplotlib is not installed: no plots (pip install 'vqcodec[rd]')")
    click.echo("wrote " + ", ".join(written))


def _audio_rd_curve(folder: str, loaded, dev, *, qualities: str | None, actual: bool,
                    baselines: str | None, baseline_bitrates: str | None, out: str | None,
                    per_clip: bool, plots: bool) -> None:
    """`rd-curve` on audio clips (see `rd_curve`); the measuring is in `codec.audio_rd`."""
    import json

    from ..eval import audio_rd
    from ..io.atomic import write_atomically
    from ..eval.opus import MAX_KBPS_PER_CHANNEL, MIN_KBPS

    model_qualities = (_int_list(qualities, "--qualities", 1, len(loaded.qualities))
                       if qualities else list(range(1, len(loaded.qualities) + 1)))
    names, notes = audio_rd.resolve_audio_baselines((baselines or "opus").split(","))
    bitrates = (_int_list(baseline_bitrates, "--baseline-bitrates", int(MIN_KBPS),
                          int(MAX_KBPS_PER_CHANNEL))
                if baseline_bitrates else list(audio_rd.DEFAULT_OPUS_BITRATES))
    clips, skipped = audio_rd.find_clips(folder)
    for note in notes:
        _warn(note)
    for name, reason in skipped:
        _warn(f"skipping {name}: {reason}")
    if not clips:
        from ..eval.rd import RDError
        raise RDError(f"no readable audio files in {folder} ({len(skipped)} unreadable)")
    out_dir = Path(out) if out else Path("results") / (Path(folder).resolve().name or "rd")
    out_dir.mkdir(parents=True, exist_ok=True)
    source = str(folder)

    total = len(clips) * (len(model_qualities) + len(names) * len(bitrates))
    with click.progressbar(length=total, label="rd-curve", file=sys.stderr,
                           item_show_func=lambda item: item) as bar:
        def progress(steps: int, what: str) -> None:
            bar.update(steps, what)

        evaluation = audio_rd.evaluate_audio_model(loaded, clips, qualities=model_qualities,
                                                   actual=actual, progress=progress)
        ours = audio_rd.audio_model_curve(evaluation, name=loaded.name, source=source,
                                          device=str(dev))
        records = list(evaluation.records)
        base_curves = []
        if "opus" in names:
            recs = audio_rd.evaluate_opus(clips, bitrates=bitrates, progress=progress)
            records.extend(recs)
            base_curves.append(audio_rd.opus_curve(recs, source=source))

    # Print.
    saving = audio_rd.prior_saving(ours)
    click.echo("\n".join(_audio_table([ours] + base_curves, saving)))
    seconds = sum(c.seconds for c in clips)
    summary = f"{len(clips)} clips, {seconds:.1f} s of audio"
    if skipped:
        summary += f", {len(skipped)} skipped (unreadable)"
    click.echo(summary)
    rate = "real payload" if actual else "prior NLL (entropy coder not run; --actual runs it)"
    click.echo(f"{loaded.name}: kbps = {rate} bits / seconds / 1000, the mean over clips; "
               f"saving = 1 - nll-kbps / raw-kbps (the prior's share of the raw index bits)")
    if actual:
        click.echo(f"check: batched NLL vs entropy coder NLL max relative difference "
                   f"{evaluation.nll_difference:.2e}; batched vs real decoded audio max "
                   f"difference {evaluation.audio_difference:.2e}; max gap (payload - NLL) / "
                   f"NLL {100 * evaluation.max_gap:.2f} %")
    if base_curves:
        click.echo("opus: kbps = real .opus file bits / seconds / 1000 (headers included); "
                   "enc s = opusenc + opusdec seconds per clip")

    # Write (each file atomically; nothing is written before the measurements are complete).
    written = []

    def put(name: str, data: bytes) -> None:
        write_atomically(out_dir / name, data)
        written.append(str(out_dir / name))

    for curve in [ours] + base_curves:
        stem = _safe_name(loaded.name) if curve is ours else curve.name
        put(f"{stem}.json", (json.dumps(curve.to_json(), indent=2) + "\n").encode())
    rows = []  # rd.csv: our curve, then the baselines
    for curve in [ours] + base_curves:
        for k in range(len(curve.results["bitrate"])):
            row = {key: values[k] for key, values in curve.results.items()}
            rows.append({"codec": curve.label, "kind": curve.kind, **row})
    put("rd.csv", _csv_bytes(rows, audio_rd.AUDIO_RD_COLUMNS))
    if per_clip:
        put("per_clip.csv", _csv_bytes([r.row() for r in records], audio_rd.PER_CLIP_COLUMNS))
    if plots:
        try:
            from ..eval.plot import plot_rd
            title = f"{loaded.name} on {Path(folder).name} ({len(clips)} clips)"
            for metric, name in (("si-snr", "rd-sisnr.png"), ("mel", "rd-mel.png")):
                plot_rd(out_dir / name, metric=metric, ours=[ours], baselines=base_curves,
                        title=title)
                written.append(str(out_dir / name))
        except ImportError:
            _warn("matplotlib is not installed: no plots (pip install 'vqcodec[rd]')")
    click.echo("wrote " + ", ".join(written))
