"""Rate-distortion records and curves, the same for images and audio.

A measurement is one `RDRecord` per codec, rate setting and item (an image or a clip);
`summarize` averages records into an `RDCurve`, one point per rate setting, in CompressAI's
result format (`compressai.utils.eval_model`): {"name", "description", "results": {key: [one
value per point]}}. Values are keyed by their output names throughout, so a record, a CSV row
and a curve's "results" speak of the same thing by the same name.

The media differ only in names and units, which a `Medium` holds:

* images: "bpp" (bits / pixels, the mean over images) at a "quality", PSNR-RGB / MS-SSIM-RGB /
  MSE on 8-bit RGB (`metrics.image_distortion`);
* audio: "kbps" (bits / clip seconds / 1000, the mean over clips, so a short clip weighs as much
  as a long one) at a nominal "bitrate", SI-SNR / mel distance / MSE (`metrics.clip_distortion`).

No click and no matplotlib in here (plots: `plot.py`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import RDError
from ..io.media import MediaKind

__all__ = ["AUDIO", "IMAGE", "MEDIA", "COMPRESSAI_KEYS", "Medium", "ProgressCallback",
           "RDCurve", "RDError", "RDRecord", "merge_records", "prior_saving", "summarize"]

ProgressCallback = Callable[[int, str], None]
"""Called with (number of item-rate-point steps just finished, what is being measured)."""

COMPRESSAI_KEYS = ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time")
"""The keys of CompressAI's image results, which our image curves always carry."""


@dataclass(frozen=True)
class Medium:
    """The names and units of one medium's rate-distortion results.

    Args:
        kind: "image" or "audio".
        setting: the results key of the rate setting ("quality", "bitrate").
        setting_type: its type (int quality, float kbit/s).
        item: the per-item column naming the file ("image", "clip").
        items: what a folder of them is called in messages ("images", "audio files").
        rate: the rate's unit and results key ("bpp", "kbps"); "nll-", "payload-", "file-"
            and "raw-" variants share it.
        metrics: distortion keys, the main one first.
        item_columns: per-item size columns.
        curve_columns: columns of rd.csv.
        item_file: the per-item CSV's name; item_file_columns: its columns.
    """

    kind: MediaKind
    setting: str
    setting_type: type
    item: str
    items: str
    rate: str
    metrics: tuple[str, ...]
    item_columns: tuple[str, ...]
    curve_columns: tuple[str, ...]
    item_file: str
    item_file_columns: tuple[str, ...]

    def setting_label(self, setting: float) -> str:
        """A rate setting as progress messages show it ("q5", "6 kbps")."""
        return f"q{setting}" if self.kind == "image" else f"{setting:g} kbps"


IMAGE = Medium(
    kind="image", setting="quality", setting_type=int, item="image", items="images",
    rate="bpp", metrics=("psnr-rgb", "ms-ssim-rgb", "mse"), item_columns=("width", "height"),
    curve_columns=("codec", "kind", "quality", "stages", "bpp", "psnr-rgb", "ms-ssim-rgb",
                   "mse", "nll-bpp", "payload-bpp", "file-bpp", "gap-percent", "encoding_time",
                   "decoding_time"),
    item_file="per_image.csv",
    item_file_columns=("codec", "quality", "image", "width", "height", "stages", "bpp",
                       "psnr-rgb", "ms-ssim-rgb", "mse", "nll-bpp", "payload-bpp", "file-bpp",
                       "gap-percent", "encoding_time", "decoding_time"))

AUDIO = Medium(
    kind="audio", setting="bitrate", setting_type=float, item="clip", items="audio files",
    rate="kbps", metrics=("si-snr", "mel-distance", "mse"),
    item_columns=("channels", "sample_rate", "seconds"),
    curve_columns=("codec", "kind", "bitrate", "stages", "kbps", "nll-kbps", "payload-kbps",
                   "file-kbps", "raw-kbps", "gap-percent", "si-snr", "mel-distance", "mse",
                   "encoding_time", "decoding_time", "roundtrip_time"),
    item_file="per_clip.csv",
    item_file_columns=("codec", "bitrate", "clip", "channels", "sample_rate", "seconds",
                       "stages", "kbps", "nll-kbps", "payload-kbps", "file-kbps", "raw-kbps",
                       "gap-percent", "si-snr", "mel-distance", "mse", "encoding_time",
                       "decoding_time", "roundtrip_time"))

MEDIA: dict[str, Medium] = {"image": IMAGE, "audio": AUDIO}


@dataclass
class RDRecord:
    """One item at one rate setting of one codec.

    Args:
        codec: codec name (model name or baseline name).
        setting: the rate setting (an image quality; an audio bitrate in kbit/s: our model's
            nominal rate before the prior for one channel, or the rate asked of Opus).
        item: the image's or clip's file name.
        stages: quantizer stages coded (our model only).
        values: everything measured, by output key: the item's size columns, the rate ("bpp"
            / "kbps") and its "nll-", "payload-", "file-", "raw-" variants, "gap-percent"
            (payload bits over the prior's NLL bits, minus 1, in percent), the metrics, and
            "encoding_time" / "decoding_time" (or "roundtrip_time" for tools that run as one
            round trip) in seconds. NaN marks a value undefined for this item (MS-SSIM of a
            small image); a missing key, one not measured.
    """

    codec: str
    setting: float
    item: str
    stages: int | None = None
    values: dict[str, float | int | None] = field(default_factory=dict)

    def __getitem__(self, key: str) -> float | int | None:
        """`values[key]`, None when not measured."""
        return self.values.get(key)

    def row(self, medium: Medium) -> dict[str, object]:
        """The per-item CSV row."""
        return {"codec": self.codec, medium.setting: self.setting, medium.item: self.item,
                "stages": self.stages, **self.values}


@dataclass
class RDCurve:
    """A rate-distortion curve in CompressAI's result format.

    Args:
        name: the codec's name ("name" in the JSON).
        description: how the numbers were measured ("description").
        results: metric -> one value per rate point ("results"); None/NaN where unknown.
        label: a unique short identifier (file stem for references, codec name otherwise).
        kind: "model", "baseline" or "reference".
    """

    name: str
    description: str
    results: dict[str, list]
    label: str = ""
    kind: str = "model"

    def __post_init__(self) -> None:
        self.label = self.label or self.name

    def __len__(self) -> int:
        """The number of rate points (every list in `results` has this length)."""
        return len(next(iter(self.results.values()), []))

    def values(self, key: str) -> np.ndarray:
        """`results[key]` as floats (NaN for missing values or a missing key)."""
        raw = self.results.get(key, [None] * len(self))
        return np.array([math.nan if v is None else float(v) for v in raw], dtype=float)

    def has(self, key: str) -> bool:
        """Whether the curve has at least one finite value of `key`."""
        return key in self.results and bool(np.isfinite(self.values(key)).any())

    def to_json(self) -> dict:
        """CompressAI's layout; NaN becomes null (JSON has no NaN)."""
        return {"name": self.name, "description": self.description,
                "results": {k: [_json_number(v) for v in vs] for k, vs in self.results.items()}}


def _json_number(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _mean(values: Sequence[float | int | None]) -> float | None:
    """Mean of the measured values over the items where they are defined: None when none was
    measured, NaN when none is defined."""
    known = np.array([float(v) for v in values if v is not None])
    if known.size == 0:
        return None
    defined = known[np.isfinite(known)]
    return float(defined.mean()) if defined.size else math.nan


def summarize(records: Sequence[RDRecord], medium: Medium, *, keys: Sequence[str], name: str,
              description: str, kind: str = "model") -> RDCurve:
    """Average per-item records into one point per rate setting (in order of first appearance).

    Args:
        records: the per-item records of one codec.
        medium: their medium.
        keys: the results keys, in the order the JSON shows them: `medium.setting` (the
            settings themselves), "stages" (those coded at each setting) or a value key
            (its mean over items, `RDRecord.values`).
        name, description, kind: of the curve.
    """
    groups: dict[float, list[RDRecord]] = {}
    for r in records:
        groups.setdefault(r.setting, []).append(r)
    results: dict[str, list] = {}
    for key in keys:
        if key == medium.setting:
            results[key] = list(groups)
        elif key == "stages":
            results[key] = [group[0].stages for group in groups.values()]
        else:
            results[key] = [_mean([r[key] for r in group]) for group in groups.values()]
    return RDCurve(name=name, description=description, results=results, kind=kind)


def merge_records(parts: Sequence[Sequence[RDRecord]], items: Sequence[str]
                  ) -> list[RDRecord]:
    """The records of items measured in shares (torchrun processes) in the order one process
    measuring them all gives: by codec and rate setting as first seen, then by item.

    Args:
        parts: each share's records (each ordered by setting, then item).
        items: every item's name, in the order of a single run.
    """
    position = {name: i for i, name in enumerate(items)}
    codecs: dict[str, int] = {}
    settings: dict[tuple[str, float], int] = {}
    for part in parts:
        for r in part:
            codecs.setdefault(r.codec, len(codecs))
            settings.setdefault((r.codec, r.setting), len(settings))
    every = [r for part in parts for r in part]
    return sorted(every, key=lambda r: (codecs[r.codec], settings[r.codec, r.setting],
                                        position[r.item]))


def prior_saving(curve: RDCurve, medium: Medium) -> np.ndarray:
    """Per rate point, the share of the raw index bits the prior saves: 1 - nll / raw (NaN
    where the raw rate is unknown)."""
    return 1 - curve.values(f"nll-{medium.rate}") / curve.values(f"raw-{medium.rate}")
