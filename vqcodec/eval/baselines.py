"""Classical codecs measured on the same items as our model: JPEG, WebP, AVIF (Pillow) and
JPEG XL (imagecodecs) for images, Opus (opus-tools, `opus.py`) for audio.

Every baseline is a `BaselineCodec` whose `roundtrip` encodes and decodes one item at one
setting; `evaluate_baseline` runs it over items and settings, and its rate is the whole file
(bits / pixels, or bits / seconds / 1000).
"""
from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import RDError
from ..io.image import as_rgb
from ..io.media import MediaKind
from .items import NamedClip, NamedImage, RDItem
from .metrics import clip_distortion, image_distortion, image_levels
from .opus import BaselineError, opus_available, opus_roundtrip
from .rd import MEDIA, ProgressCallback, RDCurve, RDRecord, summarize

__all__ = ["BASELINE_NAMES", "DEFAULT_BASELINES", "DEFAULT_BASELINE_SETTINGS", "BaselineCodec",
           "BaselineRun", "baseline_curve", "evaluate_baseline", "resolve_baselines"]

BASELINE_NAMES: dict[str, tuple[str, ...]] = {"image": ("jpeg", "webp", "avif", "jpegxl"),
                                              "audio": ("opus",)}

DEFAULT_BASELINE_SETTINGS: dict[str, tuple[float, ...]] = {
    # Qualities 5, 10, ..., 95 (CompressAI uses the same for JPEG and WebP).
    "image": tuple(range(5, 100, 5)),
    # kbit/s, from Opus's floor up to where it is transparent for most speech.
    "audio": (6, 8, 10, 12, 16, 24),
}

DEFAULT_BASELINES = {"image": ("jpeg", "webp"), "audio": ("opus",)}

_NOUNS = {"image": "images", "audio": "audio"}

# The results keys of a baseline's curve, in the order its JSON shows them.
_CURVE_KEYS = {
    "image": ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time", "mse",
              "file-bpp", "quality"),
    "audio": ("bitrate", "kbps", "file-kbps", "si-snr", "mel-distance", "mse",
              "roundtrip_time"),
}


@dataclass
class BaselineRun:
    """One item through a baseline at one setting.

    Args:
        decoded: what it decoded (uint8 image array; float samples [channels, n]).
        size: the file's size in bytes.
        times: seconds, as "encoding_time" and "decoding_time", or "roundtrip_time" for tools
            that run as one round trip.
    """

    decoded: np.ndarray
    size: int
    times: dict[str, float]


@dataclass(frozen=True)
class BaselineCodec:
    """A classical codec measured on the same items.

    Args:
        name: short name ("jpeg").
        kind: "image" or "audio".
        description: library, version and settings (the curve's description starts with it).
        measured: what the curve's rate, metrics and times mean (its description ends with it).
        roundtrip: (item, setting) -> `BaselineRun`.
    """

    name: str
    kind: MediaKind
    description: str
    measured: str
    roundtrip: Callable[[RDItem, float], BaselineRun]


_IMAGE_MEASURED = ("bpp = file bits / pixels; PSNR/MS-SSIM on 8-bit RGB, per image then "
                   "averaged; encoding_time/decoding_time = seconds per image.")


def _image_codec(name: str, description: str, encode: Callable[[np.ndarray, int], bytes],
                 decode: Callable[[bytes], np.ndarray]) -> BaselineCodec:
    """A baseline from an image encoder (array, quality) -> bytes and its decoder."""
    def roundtrip(image: NamedImage, quality: int) -> BaselineRun:
        start = time.perf_counter()
        data = encode(image.array, quality)
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        out = decode(data)
        decode_s = time.perf_counter() - start
        if out.shape[:2] != image.array.shape[:2]:
            raise RDError(f"{name} decoded {image.name} to the wrong size {out.shape}")
        return BaselineRun(out, len(data), {"encoding_time": encode_s,
                                            "decoding_time": decode_s})

    return BaselineCodec(name, "image", description, _IMAGE_MEASURED, roundtrip)


def _pil_codec(name: str, pil_format: str, *, gray_ok: bool, note: str) -> BaselineCodec:
    import PIL
    from PIL import Image

    def encode(array: np.ndarray, quality: int) -> bytes:
        if not gray_ok:
            array = as_rgb(array)
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format=pil_format, quality=int(quality))
        return buf.getvalue()

    def decode(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L" if im.mode in ("L", "1") else "RGB")
            return np.array(im, dtype=np.uint8)

    return _image_codec(name, f"{pil_format} through Pillow {PIL.__version__}, {note}",
                        encode, decode)


def _jpegxl_codec() -> BaselineCodec:
    import imagecodecs

    def encode(array: np.ndarray, quality: int) -> bytes:
        return bytes(imagecodecs.jpegxl_encode(array, level=int(quality)))

    def decode(data: bytes) -> np.ndarray:
        out = np.asarray(imagecodecs.jpegxl_decode(data))
        if out.ndim == 3 and out.shape[2] == 1:
            out = out[..., 0]
        return np.ascontiguousarray(out.astype(np.uint8))

    return _image_codec("jpegxl", f"JPEG XL through imagecodecs {imagecodecs.__version__} "
                        "(level = quality, default effort)", encode, decode)


def _opus_codec() -> BaselineCodec:
    def roundtrip(named: NamedClip, kbps: float) -> BaselineRun:
        start = time.perf_counter()
        try:
            decoded, size = opus_roundtrip(named.clip, kbps)
        except (BaselineError, ValueError) as e:
            raise RDError(f"Opus at {kbps:g} kbit/s failed on {named.name}: {e}") from None
        return BaselineRun(decoded, size, {"roundtrip_time": time.perf_counter() - start})

    return BaselineCodec(
        "opus", "audio",
        "Opus through opus-tools (opusenc --hard-cbr --padding 0, opusdec --float)",
        "bitrate = the requested rate; kbps = file-kbps = .opus file bits (Ogg and Opus "
        "headers included) / seconds / 1000; SI-SNR, mel distance and MSE per clip then "
        "averaged; roundtrip_time = opusenc + opusdec seconds per clip.", roundtrip)


def _available(name: str) -> BaselineCodec | str:
    """The baseline, or why it cannot run here."""
    from PIL import features
    if name == "jpeg":
        return _pil_codec("jpeg", "JPEG", gray_ok=True,
                          note="default settings (4:2:0 chroma subsampling)")
    if name == "webp":
        if not features.check("webp"):
            return "WebP baseline skipped: this Pillow has no WebP support"
        return _pil_codec("webp", "WEBP", gray_ok=False, note="default settings (lossy, method 4)")
    if name == "avif":
        if not features.check("avif"):
            return ("AVIF baseline skipped: this Pillow has no AVIF support (Pillow >= 11.3 "
                    "built with libavif)")
        return _pil_codec("avif", "AVIF", gray_ok=False, note="default settings (4:2:0, speed 6)")
    if name == "jpegxl":
        try:
            import imagecodecs
        except ImportError:
            return "JPEG XL baseline skipped: imagecodecs is not installed"
        if not getattr(getattr(imagecodecs, "JPEGXL", None), "available", True):
            return "JPEG XL baseline skipped: imagecodecs lacks JPEG XL support"
        return _jpegxl_codec()
    if not opus_available():
        return "Opus baseline skipped: opusenc and opusdec (opus-tools) are not installed"
    return _opus_codec()


def resolve_baselines(names: Sequence[str], kind: MediaKind
                      ) -> tuple[list[BaselineCodec], list[str]]:
    """Baseline codecs by name; the unavailable ones are left out with a warning.

    Args:
        names: from `BASELINE_NAMES[kind]`; "none" alone (or nothing) means no baselines,
            "all" means every one.
        kind: the medium measured.

    Returns:
        (codecs, warnings).

    Raises:
        RDError: a baseline of the other medium, or an unknown name.
    """
    names = [n.strip().lower() for n in names if n.strip()]
    if names == ["none"] or not names:
        return [], []
    ours = BASELINE_NAMES[kind]
    if "all" in names:
        names = list(ours)
    other: MediaKind = "audio" if kind == "image" else "image"
    for name in names:
        if name in BASELINE_NAMES[other]:
            raise RDError(f"baseline {name!r} is for {_NOUNS[other]}, not {_NOUNS[kind]}; "
                          f"choose from {', '.join(ours)} or none")
        if name not in ours:
            raise RDError(f"unknown baseline {name!r}; choose from {', '.join(ours)}, all or "
                          "none")
    codecs, notes = [], []
    for name in dict.fromkeys(names):
        found = _available(name)
        (notes if isinstance(found, str) else codecs).append(found)
    return codecs, notes


def evaluate_baseline(codec: BaselineCodec, items: Sequence[RDItem], *,
                      settings: Sequence[float] | None = None,
                      device: torch.device | str = "cpu",
                      progress: ProgressCallback | None = None) -> list[RDRecord]:
    """Encode and decode every item at every setting; the rate is the file's.

    Args:
        codec: the baseline.
        items: the images or clips.
        settings: the codec's qualities (images) or kbit/s (audio) [default:
            `DEFAULT_BASELINE_SETTINGS`].
        device: where image metrics are computed.
        progress: called after each item.
    """
    medium = MEDIA[codec.kind]
    settings = DEFAULT_BASELINE_SETTINGS[codec.kind] if settings is None else settings
    records = []
    for setting in settings:
        setting = medium.setting_type(setting)
        for item in items:
            run = codec.roundtrip(item, setting)
            if codec.kind == "image":
                found = image_distortion(image_levels(item.array, device)[None],
                                         image_levels(run.decoded, device)[None])
                metrics = {key: float(values[0]) for key, values in found.items()}
            else:
                metrics = clip_distortion(item.clip, run.decoded)
            rate = item.rate(8 * run.size)
            records.append(RDRecord(codec.name, setting, item.name, values={
                **item.columns(), medium.rate: rate, f"file-{medium.rate}": rate, **metrics,
                **run.times}))
            if progress is not None:
                progress(1, f"{codec.name} {medium.setting_label(setting)}")
    return records


def baseline_curve(codec: BaselineCodec, records: Sequence[RDRecord], *,
                   source: str = "") -> RDCurve:
    """A baseline's `RDCurve` (its rate: the file's)."""
    medium = MEDIA[codec.kind]
    n_items = len({r.item for r in records})
    where = f" on {source}" if source else ""
    description = f"{codec.description}{where} ({n_items} {medium.item}s). {codec.measured}"
    return summarize(records, medium, keys=_CURVE_KEYS[codec.kind], name=codec.name,
                     description=description, kind="baseline")
