"""`vqcodec rd-curve DIR`: rate-distortion curves of a model against classical baselines (and,
for images, published results), in CompressAI's JSON format, CSV, plots and, for images, a
BD-rate table. Options and printing only; the measuring is in `vqcodec.eval`."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from .options import device_option, model_option, user_errors

# Options that belong to one medium: (parameter, option) -> the medium.
_MEDIUM_OPTIONS = {("batch_size", "--batch-size"): "image", ("reference", "--reference"): "image",
                   ("baseline_qualities", "--baseline-qualities"): "image",
                   ("baseline_bitrates", "--baseline-bitrates"): "audio"}
_NOUNS = {"image": "images", "audio": "audio"}


def _int_list(text: str, option: str, low: int, high: int | None = None) -> list[int]:
    from ..errors import RDError
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


def _fmt(value, spec: str, width: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"{'-':>{width}}"
    return f"{value:{width}{spec}}"


def _key(key: str):
    return lambda curve, k, saving: curve.results.get(key, [None] * len(curve))[k]


def _ours_or(ours_key: str, baseline_key: str):
    """Our model's `ours_key`, a baseline's `baseline_key` (audio: the real rate, the time)."""
    return lambda curve, k, saving: _key(ours_key if curve.kind == "model"
                                         else baseline_key)(curve, k, saving)


# Per medium, the table's columns after "codec": (header, width, format, value).
_TABLES = {
    "image": [("q", 3, "d", _key("quality")), ("stages", 6, "d", _key("stages")),
              ("bpp", 8, ".4f", _key("bpp")), ("nll-bpp", 8, ".4f", _key("nll-bpp")),
              ("payload", 8, ".4f", _key("payload-bpp")),
              ("file-bpp", 8, ".4f", _key("file-bpp")),
              ("gap%", 6, ".2f", _key("gap-percent")), ("PSNR", 7, ".2f", _key("psnr-rgb")),
              ("MS-SSIM", 8, ".4f", _key("ms-ssim-rgb")),
              ("enc s", 7, ".3f", _key("encoding_time")),
              ("dec s", 7, ".3f", _key("decoding_time"))],
    # real: the payload for our model (with --actual), the file for Opus; saving: the prior's
    # share of the raw index bits; "enc s" of Opus is its encode + decode round trip.
    "audio": [("nominal", 7, ".3g", _key("bitrate")), ("stages", 6, "d", _key("stages")),
              ("nll-kbps", 8, ".3f", _key("nll-kbps")),
              ("real", 8, ".3f", _ours_or("payload-kbps", "file-kbps")),
              ("gap%", 6, ".2f", _key("gap-percent")),
              ("saving%", 7, ".1f", lambda curve, k, saving: 100 * saving[k]
               if curve.kind == "model" else None),
              ("SI-SNR", 7, ".2f", _key("si-snr")), ("mel", 7, ".3f", _key("mel-distance")),
              ("enc s", 7, ".3f", _ours_or("encoding_time", "roundtrip_time")),
              ("dec s", 7, ".3f", _key("decoding_time"))],
}


def _table(curves, medium) -> list[str]:
    from ..eval.rd import prior_saving
    columns = _TABLES[medium.kind]
    header = " ".join([f"{'codec':<18}"] + [f"{name:>{width}}" for name, width, _, _ in columns])
    lines = [header, "-" * len(header)]
    for curve in curves:
        saving = prior_saving(curve, medium)
        for k in range(len(curve)):
            lines.append(" ".join([f"{curve.label[:18]:<18}"] + [
                _fmt(value(curve, k, saving), spec, width)
                for _, width, spec, value in columns]))
    return lines


def _explicit(name: str) -> bool:
    """Whether the user gave option `name` (not just its default)."""
    from click.core import ParameterSource
    return click.get_current_context().get_parameter_source(name) not in (
        ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _item_facts(medium, items) -> tuple[int, int, float]:
    """(items, images too small for MS-SSIM, seconds of audio) of a list of items."""
    from ..eval.metrics import MS_SSIM_MIN_SIDE
    if medium.kind == "image":
        return len(items), sum(min(im.height, im.width) < MS_SSIM_MIN_SIDE for im in items), 0.0
    return len(items), 0, float(sum(c.seconds for c in items))


def _summary(medium, facts, skipped, loaded, evaluation) -> list[str]:
    """The lines under the table: what was measured and what the rates mean."""
    from ..eval.metrics import MS_SSIM_MIN_SIDE
    unreadable = f", {len(skipped)} skipped (unreadable)" if skipped else ""
    actual = evaluation.actual
    count, small, seconds = facts
    if medium.kind == "image":
        summary = f"{count} images{unreadable}"
        if small:
            summary += (f"; MS-SSIM undefined (NaN, left out of the means) for {small} "
                        f"image(s) under {MS_SSIM_MIN_SIDE} px on the short side")
        lines = [summary]
        if actual:
            lines += [f"{loaded.name}: bpp = real payload bits / pixels; times = real "
                      "compress_image/decompress_image seconds per image",
                      f"check: batched NLL vs entropy coder NLL max relative difference "
                      f"{evaluation.nll_difference:.2e}; batched vs real PSNR max difference "
                      f"{evaluation.metric_difference:.4f} dB"]
        else:
            lines.append(f"{loaded.name}: bpp = prior NLL bits / pixels (entropy coder not "
                         "run; --actual runs it); times = batched network seconds per image")
        return lines
    rate = "real payload" if actual else "prior NLL (entropy coder not run; --actual runs it)"
    lines = [f"{count} clips, {seconds:.1f} s of audio{unreadable}",
             f"{loaded.name}: kbps = {rate} bits / seconds / 1000, the mean over clips; "
             "saving = 1 - nll-kbps / raw-kbps (the prior's share of the raw index bits)"]
    if actual:
        lines.append(f"check: batched NLL vs entropy coder NLL max relative difference "
                     f"{evaluation.nll_difference:.2e}; batched vs real decoded audio max "
                     f"difference {evaluation.decoded_difference:.2e}; max gap (payload - "
                     f"NLL) / NLL {100 * evaluation.max_gap:.2f} %")
    return lines


@click.command("rd-curve")
@click.argument("folder", metavar="DIR")
@model_option
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
@click.option("--quiet", "-Q", is_flag=True, help="No progress bar.")
@user_errors
def rd_curve(folder: str, model: str | None, device: str, qualities: str | None,
             batch_size: int, actual: bool, baselines: str | None, baseline_qualities: str,
             baseline_bitrates: str | None, reference: str | None, out: str | None,
             per_image: bool, plots: bool, quiet: bool) -> None:
    """Measure rate-distortion curves on the images or audio clips in DIR.

    Without --model: the default image model, or the default audio model when DIR holds audio
    files only.

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

    Under torchrun (`torchrun --standalone --nproc-per-node N -m vqcodec.cli.main rd-curve
    DIR ...`) process r measures files r, r+N, ... and rank 0 merges the records and writes
    the same files as one process would (the times are each process's own).
    """
    from ..errors import RDError

    # Refused before torch is imported (by the imports below): no model is needed to say so.
    if batch_size < 1:
        raise RDError(f"--batch-size must be at least 1, got {batch_size}")
    if not Path(folder).exists():
        raise RDError(f"no such folder: {folder}")

    from ..device import resolve_device
    from ..distributed import local_device, setup
    from ..eval.baselines import (DEFAULT_BASELINE_SETTINGS, DEFAULT_BASELINES,
                                  baseline_curve, evaluate_baseline, resolve_baselines)
    from ..eval.bd_rate import SPLIT_PSNR_DB, bd_rate_table
    from ..eval.items import item_files, load_items
    from ..eval.metrics import check_dependencies
    from ..eval.model import evaluate_model, merge_evaluations, model_curve
    from ..eval.rd import merge_records
    from ..eval.opus import MAX_KBPS_PER_CHANNEL, MIN_KBPS
    from ..eval.rd import MEDIA
    from ..eval.references import load_reference_curves
    from ..eval.report import write_results
    from ..io.media import folder_kind
    from ..zoo import registry

    # gloo: the processes share Python objects only; each runs its networks on its own device.
    world = setup("cpu")
    asked = resolve_device(device)
    dev = local_device(asked)  # "cuda" is this process's GPU under torchrun
    if model is None:
        kind = folder_kind(folder)
        model = registry.DEFAULT_AUDIO_MODEL if kind == "audio" else registry.DEFAULT_IMAGE_MODEL
    loaded = registry.load_model(model, device=dev)
    medium = MEDIA[loaded.kind]
    for (name, option), kind in _MEDIUM_OPTIONS.items():
        if kind != medium.kind and _explicit(name):
            raise RDError(f"{option} is for {_NOUNS[kind]}; {loaded.name} is an "
                          f"{medium.kind} model")
    if medium.kind == "image":
        check_dependencies()
    model_qualities = (_int_list(qualities, "--qualities", 1, loaded.num_qualities)
                       if qualities else list(range(1, loaded.num_qualities + 1)))
    codecs, notes = resolve_baselines(
        (baselines or ",".join(DEFAULT_BASELINES[medium.kind])).split(","), medium.kind)
    if medium.kind == "image":
        settings = _int_list(baseline_qualities, "--baseline-qualities", 1, 100)
    elif baseline_bitrates:
        settings = _int_list(baseline_bitrates, "--baseline-bitrates", int(MIN_KBPS),
                             int(MAX_KBPS_PER_CHANNEL))
    else:
        settings = list(DEFAULT_BASELINE_SETTINGS["audio"])
    references, ref_skipped = ([], []) if reference is None else \
        load_reference_curves(reference)
    items, skipped = load_items(folder, medium.kind, slice(world.rank, None, world.size))
    names = [p.name for p in item_files(folder, medium.kind)]  # the order of a single run
    if world.size > 1:
        shares = world.all_gather_objects((len(items), skipped))
        found = sum(n for n, _ in shares)
        skipped = sorted((s for _, part in shares for s in part), key=lambda s: names.index(s[0]))
    else:
        found = len(items)
    if world.is_main:
        for note in notes:
            _warn(note)
        for path, reason in ref_skipped:
            _warn(f"reference {path} skipped: {reason}")
        for name, reason in skipped:
            _warn(f"skipping {name}: {reason}")
    if not found:
        raise RDError(f"no readable {medium.items} in {folder} ({len(skipped)} unreadable)")
    out_dir = Path(out) if out else Path("results") / (Path(folder).resolve().name or "rd")
    out_dir.mkdir(parents=True, exist_ok=True)
    source = str(folder)

    from tqdm import tqdm

    # One step per item and rate setting, ours and the baselines'; no bar when stderr is not a
    # terminal (a log file would fill with redrawn bars) or with --quiet.
    total = len(items) * (len(model_qualities) + len(codecs) * len(settings))
    with tqdm(total=total, desc="rd-curve", unit=medium.item, file=sys.stderr,
              dynamic_ncols=True,
              disable=quiet or not sys.stderr.isatty() or not world.is_main) as bar:
        def progress(steps: int, what: str) -> None:
            bar.set_postfix_str(what, refresh=False)
            bar.update(steps)

        evaluation = evaluate_model(loaded, items, qualities=model_qualities,
                                    batch_size=batch_size, actual=actual, progress=progress)
        measured = [evaluate_baseline(codec, items, settings=settings, device=dev,
                                      progress=progress) for codec in codecs]
    facts = _item_facts(medium, items)
    if world.size > 1:  # rank 0 merges every share's records, in a single run's order
        shares = world.gather_objects((evaluation, measured, facts))
        if not world.is_main:
            return
        evaluation = merge_evaluations([e for e, _, _ in shares], names)
        measured = [merge_records([m[k] for _, m, _ in shares], names)
                    for k in range(len(codecs))]
        facts = tuple(sum(f[k] for _, _, f in shares) for k in range(3))
    ours = model_curve(evaluation, name=loaded.name, source=source, device=str(asked),
                       batch_size=batch_size)
    records = list(evaluation.records)
    base_curves = []
    for codec, found_records in zip(codecs, measured):
        records.extend(found_records)
        base_curves.append(baseline_curve(codec, found_records, source=source))
    # BD-rate of our model against each baseline and reference (PSNR-RGB; images only).
    bd = (bd_rate_table(ours, base_curves + references, actual=actual)
          if medium.kind == "image" else None)

    click.echo("\n".join(_table([ours] + base_curves, medium)))
    click.echo("\n".join(_summary(medium, facts, skipped, loaded, evaluation)))
    if medium.kind == "audio" and base_curves:
        click.echo("opus: kbps = real .opus file bits / seconds / 1000 (headers included); "
                   "enc s = opusenc + opusdec seconds per clip")
    if bd and bd["anchors"]:
        click.echo(f"BD-rate of {loaded.name} (PSNR-RGB; negative = fewer bits than the anchor):")
        for label, row in bd["anchors"].items():
            if row["bd-rate"] is None:
                click.echo(f"  {label:<48} n/a ({row['why']})")
            else:
                lo, hi = row["psnr-range"]
                split = "; ".join(
                    f"{name} {row[f'bd-rate-{key}']:+.2f} %" for key, name in
                    (("low", f"< {SPLIT_PSNR_DB:g} dB"), ("high", f">= {SPLIT_PSNR_DB:g} dB"))
                    if row[f"bd-rate-{key}"] is not None)
                click.echo(f"  {label:<48} {row['bd-rate']:+8.2f} %  ({row['method']}, "
                           f"{lo:.2f}..{hi:.2f} dB{'; ' + split if split else ''})")

    # Nothing is written before the measurements are complete.
    title = f"{loaded.name} on {Path(folder).name} ({facts[0]} {medium.item}s)"
    written, notes = write_results(out_dir, medium, ours=ours, baselines=base_curves,
                                   references=references,
                                   records=records if per_image else None, bd_table=bd,
                                   plot_title=title if plots else None)
    for note in notes:
        _warn(note)
    click.echo("wrote " + ", ".join(written))
