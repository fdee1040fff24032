"""Rate-distortion measurement: our model at every rate point, classical baselines, references.

Conventions follow CompressAI's `eval_model` so our numbers sit on the same axes as its
published Kodak results:

* PSNR is computed per image on 8-bit-rounded RGB (max 255) and then averaged over images;
  MS-SSIM likewise, with `pytorch_msssim.ms_ssim(..., data_range=255)` on 0..255 floats.
* "bpp" of a curve is the mean over images of bits / pixels.
* Grayscale images are compared in RGB (the gray channel replicated three times). The codec
  decodes them to RGB and hands back Pillow's luma conversion of that; the batched path
  reproduces that conversion exactly, so it measures what the user gets.
* MS-SSIM needs at least `MS_SSIM_MIN_SIDE` (161) pixels on the short side (five scales of an
  11-tap window). Smaller images get NaN, and a rate point's mean MS-SSIM is the mean over the
  images where it is defined (NaN, written as null in JSON, when there are none).
* PSNR of an exact reconstruction would be infinite; the MSE is floored at 1e-10 (148 dB).

Our model is measured without the entropy coder: one encoder pass per image gives the indices
of every stage, one pass of the prior gives the log2-probabilities of all of them (stage s only
depends on stages < s, so the first n stages' NLL is a partial sum), and the decoder runs once per
rate point. Images of the same size go through the networks in batches. `actual=True` adds the
real `compress_image` / `decompress_image` round trip for every image and rate point.

No click and no matplotlib in here (plots: `rd_plot.py`).
"""
from __future__ import annotations

import io
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..zoo.registry import LoadedModel
from ..pipelines.image import image_to_tensor, compress_image, decompress_image
from ..io.image import InputError, load_image
from ..io.media import IMAGE_SUFFIXES, list_media
from ..coding import latent_codec
from ..errors import RDError

__all__ = [
    "BASELINE_NAMES", "COMPRESSAI_KEYS", "DEFAULT_BASELINE_QUALITIES", "IMAGE_SUFFIXES",
    "MS_SSIM_MIN_SIDE", "BDRate", "BaselineCodec", "ImageResult", "ModelEvaluation",
    "NamedImage", "RDCurve", "RDError", "baseline_curve", "bd_rate", "bd_rate_details",
    "check_dependencies", "distortion", "evaluate_baseline", "evaluate_model", "find_images",
    "load_reference_curves", "model_curve", "msssim_db", "resolve_baselines", "summarize",
]

MS_SSIM_MIN_SIDE = 161
"""Smallest short side (pixels) on which `pytorch_msssim.ms_ssim` is defined (> 10 * 2**4)."""


BASELINE_NAMES = ("jpeg", "webp", "avif", "jpegxl")
DEFAULT_BASELINE_QUALITIES = tuple(range(5, 100, 5))
"""Quality settings 5, 10, ..., 95 (CompressAI uses the same for JPEG and WebP)."""

MIN_MSE = 1e-10

ProgressCallback = Callable[[int, str], None]
"""Called with (number of image-rate-point steps just finished, what is being measured)."""


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

@dataclass
class NamedImage:
    """An image to measure on.

    Args:
        name: its file name (identifies it in per-image results).
        array: uint8 HxWx3 (RGB) or HxW (grayscale).
    """

    name: str
    array: np.ndarray

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    @property
    def pixels(self) -> int:
        return self.height * self.width


def find_images(folder: str | Path) -> tuple[list[NamedImage], list[tuple[str, str]]]:
    """Load every image file of a folder (not recursive), sorted by name.

    Files whose suffix is not in `IMAGE_SUFFIXES` and hidden files are ignored; image files that
    cannot be read are skipped and returned with the reason.

    Args:
        folder: a folder of images (a single image file is accepted too).

    Returns:
        (images, skipped) where skipped lists (file name, one-line reason).

    Raises:
        RDError: the folder does not exist or holds no image files at all.
    """
    folder = Path(folder)
    if folder.is_file():
        candidates = [folder]
    elif folder.is_dir():
        candidates = list_media(folder, "image")
    else:
        raise RDError(f"no such folder: {folder}")
    if not candidates:
        raise RDError(f"no images found in {folder}")
    images, skipped = [], []
    for path in candidates:
        try:
            images.append(NamedImage(path.name, load_image(path)))
        except InputError as e:
            skipped.append((path.name, str(e)))
        except OSError as e:
            skipped.append((path.name, e.strerror or str(e)))
    return images, skipped


def _rgb_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 HxW / HxWx3 -> float [3, H, W] in 0..255 (gray replicated)."""
    rgb = np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array
    return torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1).float()


def _gray_as_delivered(decoded: torch.Tensor) -> torch.Tensor:
    """What the codec hands back for a grayscale input: its RGB output [B, 3, H, W] (0..255
    integers) converted to L exactly as Pillow does (ITU-R 601-2 luma, fixed point), then
    replicated to 3 channels for the metrics."""
    rgb = decoded.to(torch.int64)
    luma = (rgb[:, 0] * 19595 + rgb[:, 1] * 38470 + rgb[:, 2] * 7471 + 0x8000) >> 16
    return luma[:, None].expand_as(rgb).to(decoded.dtype)


def _batches(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

def _ms_ssim():
    try:
        from pytorch_msssim import ms_ssim
    except ImportError:
        raise RDError("MS-SSIM needs the pytorch-msssim package: "
                      "pip install 'vqcodec[rd]'") from None
    return ms_ssim


def check_dependencies() -> None:
    """Raise `RDError` early when a package the measurements need is missing."""
    _ms_ssim()


def distortion(original: torch.Tensor, decoded: torch.Tensor
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image MSE, PSNR (dB) and MS-SSIM of 8-bit RGB images.

    Args:
        original: [B, 3, H, W] floats in 0..255 (integers).
        decoded: [B, 3, H, W] floats in 0..255; rounded and clamped to 8 bits here.

    Returns:
        (mse, psnr, ms_ssim), float64 arrays [B]; ms_ssim is NaN when min(H, W) < 161.
    """
    decoded = decoded.clamp(0, 255).round()
    original = original.float()
    mse = (decoded - original).double().pow(2).flatten(1).mean(1).cpu().numpy()
    psnr = 10 * np.log10(255.0 ** 2 / np.maximum(mse, MIN_MSE))
    if min(original.shape[-2:]) >= MS_SSIM_MIN_SIDE:
        ms = _ms_ssim()(original, decoded, data_range=255, size_average=False)
        msssim = ms.double().cpu().numpy().reshape(-1)
    else:
        msssim = np.full(len(mse), np.nan)
    return mse, psnr, msssim


def msssim_db(value: float) -> float:
    """MS-SSIM in dB, -10 log10(1 - MS-SSIM), as CompressAI's plots show it."""
    if value is None or not math.isfinite(value):
        return math.nan
    return -10 * math.log10(max(1 - value, 1e-10))


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass
class ImageResult:
    """One image at one rate point of one codec.

    Args:
        codec: codec name (model name or baseline name).
        quality: rate setting.
        image: image file name.
        width, height: image size in pixels.
        bpp: the rate the curve uses (bits / pixels; see `RDCurve.description`).
        psnr: PSNR-RGB in dB; ms_ssim: MS-SSIM-RGB (NaN when undefined); mse: on 0..255 RGB.
        encoding_time, decoding_time: seconds for this image.
        stages: quantizer stages coded (our model only).
        nll_bpp: the prior's ideal rate (our model only).
        payload_bpp: real entropy-coded payload rate (our model with `actual`).
        file_bpp: real file rate (container included; baselines: the file).
        gap_percent: payload bits over the prior's NLL bits, minus 1, in percent (`actual`).
    """

    codec: str
    quality: int
    image: str
    width: int
    height: int
    bpp: float
    psnr: float
    ms_ssim: float
    mse: float
    encoding_time: float
    decoding_time: float
    stages: int | None = None
    nll_bpp: float | None = None
    payload_bpp: float | None = None
    file_bpp: float | None = None
    gap_percent: float | None = None

    def row(self) -> dict[str, object]:
        """The per-image CSV row."""
        return {"codec": self.codec, "quality": self.quality, "image": self.image,
                "width": self.width, "height": self.height, "stages": self.stages,
                "bpp": self.bpp, "psnr-rgb": self.psnr, "ms-ssim-rgb": self.ms_ssim,
                "mse": self.mse, "nll-bpp": self.nll_bpp, "payload-bpp": self.payload_bpp,
                "file-bpp": self.file_bpp, "gap-percent": self.gap_percent,
                "encoding_time": self.encoding_time, "decoding_time": self.decoding_time}


# Averaged ImageResult attribute -> key in CompressAI-style "results".
_RESULT_KEYS = {
    "bpp": "bpp", "psnr": "psnr-rgb", "ms_ssim": "ms-ssim-rgb",
    "encoding_time": "encoding_time", "decoding_time": "decoding_time",
    "nll_bpp": "nll-bpp", "mse": "mse", "payload_bpp": "payload-bpp", "file_bpp": "file-bpp",
    "gap_percent": "gap-percent",
}
COMPRESSAI_KEYS = ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time")


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

    def values(self, key: str) -> np.ndarray:
        """`results[key]` as floats (NaN for missing values or a missing key)."""
        # Audio curves have no "bpp"; their lists are as long as any other key's.
        n = len(self.results.get("bpp", next(iter(self.results.values()), [])))
        raw = self.results.get(key, [None] * n)
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


def _mean(values: Sequence[float | None], *, ignore_nan: bool = False) -> float | None:
    known = [float(v) for v in values if v is not None]
    if not known:
        return None
    arr = np.array(known)
    if ignore_nan:
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            return math.nan
    return float(arr.mean())


def summarize(records: Sequence[ImageResult], *, name: str, description: str,
              kind: str = "model", keys: Sequence[str] | None = None) -> RDCurve:
    """Average per-image results into one point per quality (in order of first appearance).

    Args:
        records: per-image results of one codec.
        name, description, kind: of the curve.
        keys: which `ImageResult` fields to average (default: all numeric ones).

    Returns:
        An `RDCurve` whose results also hold "quality" and, where known, "stages".
    """
    qualities: list[int] = []
    by_quality: dict[int, list[ImageResult]] = {}
    for r in records:
        if r.quality not in by_quality:
            qualities.append(r.quality)
            by_quality[r.quality] = []
        by_quality[r.quality].append(r)
    keys = list(keys or _RESULT_KEYS)
    results: dict[str, list] = {_RESULT_KEYS[k]: [] for k in keys}
    results["quality"] = list(qualities)
    if any(r.stages is not None for r in records):
        results["stages"] = [by_quality[q][0].stages for q in qualities]
    for q in qualities:
        group = by_quality[q]
        for k in keys:
            results[_RESULT_KEYS[k]].append(
                _mean([getattr(r, k) for r in group], ignore_nan=(k == "ms_ssim")))
    return RDCurve(name=name, description=description, results=results, kind=kind)


# --------------------------------------------------------------------------------------------
# Our model
# --------------------------------------------------------------------------------------------

@dataclass
class ModelEvaluation:
    """What `evaluate_model` measured.

    Args:
        records: per-image results, ordered by quality, then by image.
        qualities: the qualities measured; stages: stages coded at each.
        actual: whether `bpp`, metrics and times come from the real codec.
        nll_difference: with `actual`, the largest relative difference between the batched NLL
            and the one the entropy coder computed (a check of the batched shortcut).
        psnr_difference: with `actual`, the largest |PSNR batched - PSNR real| in dB.
    """

    records: list[ImageResult]
    qualities: list[int]
    stages: list[int]
    actual: bool
    nll_difference: float | None = None
    psnr_difference: float | None = None


@torch.inference_mode()
def evaluate_model(loaded: LoadedModel, images: Sequence[NamedImage], *,
                   qualities: Sequence[int] | None = None, batch_size: int = 4,
                   actual: bool = False,
                   progress: ProgressCallback | None = None) -> ModelEvaluation:
    """Measure a model at every rate point on a list of images.

    The networks run on the device the model was loaded on. Per batch of same-size images: one
    encoder pass (all stages needed), one prior pass over all those stages (NLL of the first n
    stages = sum of the per-stage NLLs of stages < n), and one decoder pass per rate point.

    Without `actual`, bpp = prior NLL bits / pixels, and the times are the batch's encoder +
    prior time and decoder time divided by the batch size. With `actual`, every image is also
    compressed and decompressed for real at every rate point; bpp = payload bits / pixels, the
    metrics come from the real decoded image and the times are those of `compress_image` and
    `decompress_image`.

    Args:
        loaded: the model.
        images: the images.
        qualities: rate settings (default: all of the model's).
        batch_size: images per network pass (>= 1).
        actual: also run the real entropy coder.
        progress: called after each batch and rate point.
    """
    if batch_size < 1:
        raise RDError(f"--batch-size must be at least 1, got {batch_size}")
    net = loaded.model
    device = next(net.parameters()).device
    stride = net.config.stride
    qualities = list(qualities or range(1, len(loaded.qualities) + 1))
    rates = [loaded.rate_for_quality(q) for q in qualities]
    stage_list = [n for n, _ in rates]
    # One encoder pass per rate weight: qualities that differ only in stages share indices.
    by_lambda: dict[float, int] = {}
    for n, lam in rates:
        by_lambda[lam] = max(by_lambda.get(lam, 0), n)

    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault((im.height, im.width), []).append(i)

    found: dict[tuple[int, int], ImageResult] = {}  # (quality position, image) -> result
    nll_diff, psnr_diff = 0.0, 0.0
    for (h, w), members in groups.items():
        for chunk in _batches(members, batch_size):
            b = len(chunk)
            x = torch.cat([image_to_tensor(images[i].array, stride, device) for i in chunk])
            original = (x[..., :h, :w] * 255).round()
            _sync(device)
            start = time.perf_counter()
            coded, cum_bits = {}, {}
            for lam, max_stages in by_lambda.items():
                coded[lam] = net.encode(x, max_stages, lam)
                log2p = latent_codec(net).forward(coded[lam])  # [B, S, (G,) h', w']
                stage_bits = -log2p.double().flatten(2).sum(2)
                # [B, S]: NLL of the first n stages
                cum_bits[lam] = stage_bits.cumsum(1).cpu().numpy()
            _sync(device)
            encode_s = (time.perf_counter() - start) / (b * len(by_lambda))
            for qi, (q, (n, lam)) in enumerate(zip(qualities, rates)):
                indices = coded[lam]
                start = time.perf_counter()
                decoded = net.decode(indices[:, :n])[..., :h, :w] * 255
                decoded = decoded.clamp(0, 255).round()
                gray = [j for j, i in enumerate(chunk) if images[i].array.ndim == 2]
                if gray:
                    decoded[gray] = _gray_as_delivered(decoded[gray])
                _sync(device)
                decode_s = (time.perf_counter() - start) / b
                mse, psnr, msssim = distortion(original, decoded)
                for j, i in enumerate(chunk):
                    im = images[i]
                    nll = float(cum_bits[lam][j, n - 1]) / im.pixels
                    found[qi, i] = ImageResult(
                        codec=loaded.name, quality=q, image=im.name, width=w, height=h,
                        bpp=nll, psnr=float(psnr[j]), ms_ssim=float(msssim[j]),
                        mse=float(mse[j]), encoding_time=encode_s, decoding_time=decode_s,
                        stages=n, nll_bpp=nll)
                if actual:
                    real = []
                    for j, i in enumerate(chunk):
                        res = compress_image(images[i].array, model=loaded, quality=q,
                                             device=str(device))
                        start = time.perf_counter()
                        out = decompress_image(res.data, model=loaded, device=str(device))
                        decode_real = time.perf_counter() - start
                        real.append(_rgb_tensor(out, device))
                        r = found[qi, i]
                        nll_diff = max(nll_diff, abs(r.nll_bpp * r.width * r.height
                                                     - res.nll_bits) / max(res.nll_bits, 1e-9))
                        r.nll_bpp = res.nll_bits / res.num_pixels
                        r.bpp = res.payload_bpp
                        r.payload_bpp, r.file_bpp = res.payload_bpp, res.bpp
                        r.gap_percent = 100 * (8 * res.payload_bytes / max(res.nll_bits, 1e-9) - 1)
                        r.encoding_time, r.decoding_time = res.seconds, decode_real
                    mse, psnr, msssim = distortion(original, torch.stack(real))
                    for j, i in enumerate(chunk):
                        r = found[qi, i]
                        psnr_diff = max(psnr_diff, abs(r.psnr - float(psnr[j])))
                        r.psnr, r.ms_ssim, r.mse = float(psnr[j]), float(msssim[j]), float(mse[j])
                if progress is not None:
                    progress(b, f"{loaded.name} q{q}")
    records = [found[qi, i] for qi in range(len(qualities)) for i in range(len(images))]
    return ModelEvaluation(records=records, qualities=qualities, stages=stage_list,
                           actual=actual, nll_difference=nll_diff if actual else None,
                           psnr_difference=psnr_diff if actual else None)


def model_curve(evaluation: ModelEvaluation, *, name: str, source: str = "",
                device: str = "", batch_size: int | None = None) -> RDCurve:
    """Our model's `RDCurve`, with a description saying what bpp and the times mean.

    Args:
        evaluation: from `evaluate_model`.
        name: the model's name.
        source: where the images came from (for the description).
        device: where the networks ran.
        batch_size: the batch size used.
    """
    n_images = len({r.image for r in evaluation.records})
    if evaluation.actual:
        rate = ("bpp = real entropy-coded payload bits / pixels (no container; file-bpp "
                "includes the .vqc container); nll-bpp = the prior's ideal rate; "
                "gap-percent = payload bits / NLL bits - 1; metrics from the real decoded "
                "image; encoding_time/decoding_time = compress_image/decompress_image "
                "seconds per image")
    else:
        rate = ("bpp = nll-bpp = the prior's ideal rate, -sum log2 p(indices) / pixels, "
                "computed without running the entropy coder (payload-bpp/file-bpp/gap-percent "
                "unknown: run with --actual); encoding_time = batched encoder+prior seconds per "
                f"image, decoding_time = batched decoder seconds per image (batch size "
                f"{batch_size})")
    where = f" on {source}" if source else ""
    dev = f", {device}" if device else ""
    description = (f"vqcodec model {name}{where} ({n_images} images{dev}). {rate}. PSNR/MS-SSIM "
                   f"on 8-bit RGB, per image then averaged (MS-SSIM over images >= "
                   f"{MS_SSIM_MIN_SIDE} px on the short side).")
    curve = summarize(evaluation.records, name=name, description=description, kind="model")
    return curve


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BaselineCodec:
    """A classical codec measured on the same images.

    Args:
        name: short name ("jpeg").
        description: library, version and settings.
        encode: (uint8 HxW or HxWx3 array, quality) -> file bytes.
        decode: file bytes -> uint8 array.
    """

    name: str
    description: str
    encode: Callable[[np.ndarray, int], bytes]
    decode: Callable[[bytes], np.ndarray]


def _pil_codec(name: str, pil_format: str, *, gray_ok: bool, note: str) -> BaselineCodec:
    import PIL
    from PIL import Image

    def encode(array: np.ndarray, quality: int) -> bytes:
        if array.ndim == 2 and not gray_ok:
            array = np.repeat(array[..., None], 3, axis=2)
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format=pil_format, quality=int(quality))
        return buf.getvalue()

    def decode(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L" if im.mode in ("L", "1") else "RGB")
            return np.array(im, dtype=np.uint8)

    return BaselineCodec(name, f"{pil_format} through Pillow {PIL.__version__}, {note}",
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

    return BaselineCodec("jpegxl", f"JPEG XL through imagecodecs {imagecodecs.__version__} "
                         "(level = quality, default effort)", encode, decode)


def resolve_baselines(names: Sequence[str]) -> tuple[list[BaselineCodec], list[str]]:
    """Baseline codecs by name; the unavailable ones are left out with a warning.

    Args:
        names: from `BASELINE_NAMES`; "none" alone means no baselines, "all" means every one.

    Returns:
        (codecs, warnings).

    Raises:
        RDError: an unknown name.
    """
    names = [n.strip().lower() for n in names if n.strip()]
    if names == ["none"] or not names:
        return [], []
    if "all" in names:
        names = list(BASELINE_NAMES)
    unknown = [n for n in names if n not in BASELINE_NAMES]
    if unknown:
        raise RDError(f"unknown baseline {unknown[0]!r}; choose from "
                      f"{', '.join(BASELINE_NAMES)}, all or none")
    from PIL import features
    codecs, notes = [], []
    for name in dict.fromkeys(names):
        if name == "jpeg":
            codecs.append(_pil_codec("jpeg", "JPEG", gray_ok=True,
                                     note="default settings (4:2:0 chroma subsampling)"))
        elif name == "webp":
            if features.check("webp"):
                codecs.append(_pil_codec("webp", "WEBP", gray_ok=False,
                                         note="default settings (lossy, method 4)"))
            else:
                notes.append("WebP baseline skipped: this Pillow has no WebP support")
        elif name == "avif":
            if features.check("avif"):
                codecs.append(_pil_codec("avif", "AVIF", gray_ok=False,
                                         note="default settings (4:2:0, speed 6)"))
            else:
                notes.append("AVIF baseline skipped: this Pillow has no AVIF support "
                              "(Pillow >= 11.3 built with libavif)")
        elif name == "jpegxl":
            try:
                import imagecodecs
            except ImportError:
                notes.append("JPEG XL baseline skipped: imagecodecs is not installed")
                continue
            if getattr(getattr(imagecodecs, "JPEGXL", None), "available", True):
                codecs.append(_jpegxl_codec())
            else:
                notes.append("JPEG XL baseline skipped: imagecodecs lacks JPEG XL support")
    return codecs, notes


def evaluate_baseline(codec: BaselineCodec, images: Sequence[NamedImage], *,
                      qualities: Sequence[int] = DEFAULT_BASELINE_QUALITIES,
                      device: torch.device | str = "cpu",
                      progress: ProgressCallback | None = None) -> list[ImageResult]:
    """Encode and decode every image at every quality; bpp = file bits / pixels.

    Args:
        codec: the baseline.
        images: the images.
        qualities: the codec's quality settings.
        device: where the metrics are computed.
        progress: called after each image.
    """
    device = torch.device(device)
    records = []
    for q in qualities:
        for im in images:
            start = time.perf_counter()
            data = codec.encode(im.array, q)
            encode_s = time.perf_counter() - start
            start = time.perf_counter()
            out = codec.decode(data)
            decode_s = time.perf_counter() - start
            if out.shape[:2] != im.array.shape[:2]:
                raise RDError(f"{codec.name} decoded {im.name} to the wrong size {out.shape}")
            mse, psnr, msssim = distortion(_rgb_tensor(im.array, device)[None],
                                           _rgb_tensor(out, device)[None])
            bpp = 8 * len(data) / im.pixels
            records.append(ImageResult(
                codec=codec.name, quality=int(q), image=im.name, width=im.width,
                height=im.height, bpp=bpp, psnr=float(psnr[0]), ms_ssim=float(msssim[0]),
                mse=float(mse[0]), encoding_time=encode_s, decoding_time=decode_s,
                file_bpp=bpp))
            if progress is not None:
                progress(1, f"{codec.name} q{q}")
    return records


def baseline_curve(codec: BaselineCodec, records: Sequence[ImageResult], *,
                   source: str = "") -> RDCurve:
    """A baseline's `RDCurve` (bpp = file bits / pixels)."""
    n_images = len({r.image for r in records})
    where = f" on {source}" if source else ""
    description = (f"{codec.description}{where} ({n_images} images). bpp = file bits / pixels; "
                   "PSNR/MS-SSIM on 8-bit RGB, per image then averaged; encoding_time/"
                   "decoding_time = seconds per image.")
    return summarize(records, name=codec.name, description=description, kind="baseline",
                     keys=["bpp", "psnr", "ms_ssim", "encoding_time", "decoding_time", "mse",
                           "file_bpp"])


# --------------------------------------------------------------------------------------------
# Reference results (CompressAI JSON files)
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Bjøntegaard delta rate
# --------------------------------------------------------------------------------------------

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
                    test_bpp: Sequence[float], test_psnr: Sequence[float]) -> BDRate | None:
    """Bjøntegaard delta rate of a test curve against an anchor (VCEG-M33).

    Log-rate is fitted as a cubic polynomial of PSNR for each curve and both fits are
    integrated over the PSNR interval where the curves overlap; the result is
    exp(mean log-rate difference) - 1 in percent. When either curve has fewer than 4 points,
    log-rate is interpolated piecewise-linearly instead (exact integration on the union of the
    curves' PSNR values). Points with a missing/non-finite value or zero rate are dropped.

    Args:
        anchor_bpp, anchor_psnr: the anchor (reference) curve.
        test_bpp, test_psnr: the curve being judged.

    Returns:
        The result, or None when a curve has fewer than 2 usable points or the PSNR ranges do
        not overlap.
    """
    ra, da = _clean(anchor_bpp, anchor_psnr)
    rt, dt = _clean(test_bpp, test_psnr)
    if ra.size < 2 or rt.size < 2:
        return None
    low, high = max(da[0], dt[0]), min(da[-1], dt[-1])
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
