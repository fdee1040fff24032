"""Our model at every rate setting, for images and audio: `evaluate_model` and `model_curve`.

The model is measured without the entropy coder, through the pipelines' own steps: per batch
of items one encoder pass gives the indices of every stage, the prior gives their NLL, and the
decoder runs once per rate setting, its output turned into what `decompress_*` hands back.
What differs between the media is only how a batch is encoded, scored and decoded:

* Images of the same size go through the networks in batches. One prior pass scores all stages
  (stage s only depends on stages < s, so the first n stages' NLL is a partial sum); a
  grouped model is encoded once per rate weight. Grayscale images are decoded to RGB and
  converted to luma exactly as the pipeline does (`pipelines.image.rgb_to_luma`).
* A clip is encoded window by window (`pipelines.audio.encode_audio`), and per rate setting
  one batched prior pass scores the chunks `FrameByFrameCodec` codes (`chunked_nll_bits`). The
  prior is run once per rate setting because it is told how many stages are coded (its rate
  embedding), so the first n stages' NLL is not a partial sum of the all-stage pass.

`actual=True` adds the real `compress_*` / `decompress_*` round trip for every item and rate
setting, and checks the batched shortcut against it (`ModelEvaluation`).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..coding import rate_codec
from ..errors import RDError
from ..io.audio import AudioClip
from ..io.image import as_rgb
from ..pipelines.audio import (AudioCompression, compress_audio, decode_audio, decompress_audio,
                               encode_audio)
from ..coding.refinement import encode_refinement
from ..pipelines.image import (IMAGE_CONTEXT_STAGES, ImageCompression, compress_image,
                               decompress_image, image_to_tensor, restore_refined,
                               rgb_to_luma, to_8bit)
from ..zoo.registry import LoadedModel
from .items import NamedClip, NamedImage, RDItem
from .metrics import MS_SSIM_MIN_SIDE, clip_distortion, image_distortion, image_levels
from .rd import MEDIA, ProgressCallback, RDCurve, RDRecord, merge_records, summarize

__all__ = ["PRIOR_BATCH_LOGITS", "ModelEvaluation", "chunked_nll_bits", "decode_clip",
           "encode_clip", "evaluate_model", "merge_evaluations", "model_curve"]

PRIOR_BATCH_LOGITS = 2 ** 25
"""Most logits (chunks x stages x frames x codes) one batched audio prior pass may produce:
about 128 MiB of float32, which bounds memory on long clips (5 chunks of a 16-stage, 1024-code,
375-frame model per pass)."""


@dataclass
class ModelEvaluation:
    """What `evaluate_model` measured.

    Args:
        records: per-item records, ordered by rate setting, then by item.
        kind: "image" or "audio".
        settings: the rate settings measured (image qualities; audio nominal kbit/s);
            stages: stages coded at each.
        actual: whether the rate, metrics and times come from the real codec.
        nll_difference: with `actual`, the largest relative difference between the batched NLL
            and the one the entropy coder computed (a check of the batched shortcut).
        decoded_difference: with `actual`, the largest |batched decode - decompress_*| over
            all output values (8-bit levels of RGB; samples).
        decoded_mismatch: with `actual`, the largest share, over items, of output values where
            the batched decode differs from decompress_* at all.
        metric_difference: with `actual`, the largest |batched - real| of the main metric
            (PSNR-RGB; SI-SNR), in dB.
        max_gap: with `actual`, the largest (payload bits - NLL bits) / NLL bits.
    """

    records: list[RDRecord]
    kind: str
    settings: list[float]
    stages: list[int]
    actual: bool
    nll_difference: float | None = None
    decoded_difference: float | None = None
    decoded_mismatch: float | None = None
    metric_difference: float | None = None
    max_gap: float | None = None


@dataclass
class _Batch:
    """Items decoded at one rate setting without the entropy coder.

    Args:
        point: the rate setting's position; members: the items' positions.
        stages: stages coded.
        bits: the prior's NLL bits per item.
        decoded: per item, what decompress_* would hand back, in the form `_Steps.distortion`
            takes (float [3, H, W] 8-bit levels; float samples [channels, n]).
        encoding_time, decoding_time: seconds per item.
        extra: more values per item (the raw index rate of audio).
    """

    point: int
    members: list[int]
    stages: int
    bits: list[float]
    decoded: list
    encoding_time: float
    decoding_time: float
    extra: list[dict[str, float]]


@dataclass(frozen=True)
class _Steps:
    """How one medium is measured: the batched shortcut, the real round trip, the metrics.

    Args:
        batches: (loaded, items, rate points, batch size) -> the `_Batch`es.
        roundtrip: (loaded, item, quality, device) -> (the pipeline's compression result,
            what decompress_* handed back in `_Batch.decoded` form, decoding seconds).
        distortion: (items, decoded) -> per item, the metrics by key.
    """

    batches: Callable[[LoadedModel, Sequence[RDItem], list[tuple[int, float]], int],
                      Iterator[_Batch]]
    roundtrip: Callable[[LoadedModel, RDItem, int, torch.device],
                        tuple[ImageCompression | AudioCompression, object, float]]
    distortion: Callable[[Sequence[RDItem], Sequence], list[dict[str, float]]]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _chunks(items: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

def _image_distortion(images: Sequence[NamedImage], decoded: Sequence[torch.Tensor]
                      ) -> list[dict[str, float]]:
    device = decoded[0].device
    found = image_distortion(torch.stack([image_levels(im.array, device) for im in images]),
                             torch.stack(list(decoded)))
    return [{key: float(values[j]) for key, values in found.items()}
            for j in range(len(images))]


def _image_batches(loaded: LoadedModel, images: Sequence[NamedImage],
                   points: list[tuple[int, float]], batch_size: int) -> Iterator[_Batch]:
    """Same-size images in batches; the times are the batch's network seconds per image (the
    encoder and prior's shared by the rate weights)."""
    net = loaded.model
    device = next(net.parameters()).device
    rates = [loaded.rate_for_quality(q) for q, _ in points]
    steps = [loaded.refinement_step(q) for q, _ in points]
    # One encoder pass per rate weight: qualities that differ only in stages share indices.
    by_lambda: dict[float, int] = {}
    for n, lam in rates:
        by_lambda[lam] = max(by_lambda.get(lam, 0), n)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault((im.height, im.width), []).append(i)
    for (h, w), members in groups.items():
        for chunk in _chunks(members, batch_size):
            b = len(chunk)
            x = torch.cat([image_to_tensor(images[i].array, net.config.stride, device)
                           for i in chunk])
            _sync(device)
            start = time.perf_counter()
            coded, cum_bits = {}, {}
            for lam, max_stages in by_lambda.items():
                coded[lam] = net.encode(x, max_stages, lam)
                # [B, S, (G,) h', w'], scored as compress_image codes them
                codec = rate_codec(net)
                # Adapted as the file's tables are (exact priors; each image one window).
                log2p = codec.forward(coded[lam], context_stages=IMAGE_CONTEXT_STAGES,
                                      adapt=bool(getattr(codec, "portable", False)))
                # [B, S]: NLL of the first n stages
                cum_bits[lam] = (-log2p.double().flatten(2).sum(2)).cumsum(1).cpu().numpy()
            _sync(device)
            encode_s = (time.perf_counter() - start) / (b * len(by_lambda))
            gray = [j for j, i in enumerate(chunk) if images[i].array.ndim == 2]
            for point, (n, lam) in enumerate(rates):
                start = time.perf_counter()
                rgb = to_8bit(net.decode(coded[lam][:, :n])[..., :h, :w])
                if gray:  # what decompress_image hands back: luma, compared as RGB
                    rgb[gray] = rgb_to_luma(rgb[gray])[:, None].expand(-1, 3, -1, -1)
                bits = [float(cum_bits[lam][j, n - 1]) for j in range(b)]
                if steps[point]:
                    rgb = _refine(rgb, [images[i].array for i in chunk], steps[point], bits)
                decoded = rgb.float()
                _sync(device)
                decode_s = (time.perf_counter() - start) / b
                yield _Batch(point=point, members=chunk, stages=n, bits=bits,
                             decoded=list(decoded), encoding_time=encode_s,
                             decoding_time=decode_s, extra=[{} for _ in chunk])


def _refine(rgb: torch.Tensor, originals: Sequence[np.ndarray], step: float,
            bits: list[float]) -> torch.Tensor:
    """Refine decoded pictures (uint8 [B, 3, h, w], grayscale ones as luma in all channels)
    as `compress_image` does and restore them as its decoder does (format version 8),
    adding each refinement's ideal bits to `bits`."""
    out = rgb.clone()
    for j, original in enumerate(originals):
        base = rgb[j].permute(1, 2, 0).cpu().numpy()
        gray = original.ndim == 2
        base = base[..., 0] if gray else base
        _, extra, refined = encode_refinement(original, base, step)
        refined = restore_refined(refined, base, step, rgb.device)
        bits[j] += extra
        out[j] = torch.from_numpy(as_rgb(refined)).permute(2, 0, 1).to(rgb.device)
    return out


def _image_roundtrip(loaded: LoadedModel, image: NamedImage, quality: int,
                     device: torch.device):
    res = compress_image(image.array, model=loaded, quality=quality, device=str(device))
    start = time.perf_counter()
    out = decompress_image(res.data, model=loaded, device=str(device))
    return res, image_levels(out, device), time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------

def chunked_nll_bits(codec, indices: torch.Tensor) -> float:
    """A frame codec's NLL in bits of indices [C, S', F], scored as it codes them.

    Each channel is cut into chunks of `prior.context` frames (the last one shorter), and each
    chunk is scored on its own, from a fresh start, by the prior's parallel forward pass. The
    full-length chunks of all channels go through in batches (at most `PRIOR_BATCH_LOGITS`
    logits each); the short last chunks of all channels are one more batch.

    Args:
        codec: the model's frame codec (`coding.rate_codec(net)`).
        indices: [channels, stages, frames] int64, on the codec's device.
    """
    prior = codec.prior
    c, s, f = indices.shape
    context = prior.context
    full = f // context
    total = 0.0  # a Python float: an integer codec scores on the CPU, whatever the device
    with torch.no_grad():
        if full:
            chunks = (indices[:, :, :full * context].reshape(c, s, full, context)
                      .permute(0, 2, 1, 3).reshape(c * full, s, context))
            per_pass = max(1, PRIOR_BATCH_LOGITS // (s * context * prior.num_codes))
            for start in range(0, chunks.shape[0], per_pass):
                total -= float(codec.forward(chunks[start:start + per_pass]).double().sum())
        if f > full * context:
            total -= float(codec.forward(indices[:, :, full * context:]).double().sum())
    return float(total)


def encode_clip(net, clip: AudioClip, stages: int, device: torch.device) -> torch.Tensor:
    """Indices [C, S', F] of every channel, as `compress_audio` encodes them (on `device`)."""
    return encode_audio(net, clip, stages, device).to(device)


def decode_clip(net, indices: torch.Tensor, clip: AudioClip) -> np.ndarray:
    """What `decompress_audio` hands back for indices [C, S', F] of a clip."""
    blocks = decode_audio(net, indices, clip.sample_rate, clip.num_samples, indices.device)
    return np.concatenate(list(blocks), axis=1)


def _clip_distortion(clips: Sequence[NamedClip], decoded: Sequence[np.ndarray]
                     ) -> list[dict[str, float]]:
    return [clip_distortion(named.clip, samples) for named, samples in zip(clips, decoded)]


def _audio_batches(loaded: LoadedModel, clips: Sequence[NamedClip],
                   points: list[tuple[int, float]], batch_size: int) -> Iterator[_Batch]:
    """One clip at a time; encoding_time = the clip's encoder seconds (all stages, once) + the
    rate setting's prior seconds, decoding_time = its decoder seconds."""
    net = loaded.model
    device = next(net.parameters()).device
    stage_list = [loaded.stages_for_quality(q) for q, _ in points]
    for ci, named in enumerate(clips):
        _sync(device)
        start = time.perf_counter()
        indices = encode_clip(net, named.clip, max(stage_list), device)  # [C, S, F]
        _sync(device)
        encode_s = time.perf_counter() - start
        for point, n in enumerate(stage_list):
            start = time.perf_counter()
            bits = chunked_nll_bits(rate_codec(net), indices[:, :n])
            _sync(device)
            prior_s = time.perf_counter() - start
            start = time.perf_counter()
            decoded = decode_clip(net, indices[:, :n], named.clip)
            decode_s = time.perf_counter() - start
            raw_bits = indices[:, :n].numel() * net.config.bits_per_code
            yield _Batch(point=point, members=[ci], stages=n, bits=[bits], decoded=[decoded],
                         encoding_time=encode_s + prior_s, decoding_time=decode_s,
                         extra=[{"raw-kbps": named.rate(raw_bits)}])


def _audio_roundtrip(loaded: LoadedModel, named: NamedClip, quality: int,
                     device: torch.device):
    kbps = loaded.model.config.kbps(loaded.stages_for_quality(quality))
    # round(): stages_for_bitrate matches the model's rates as rounded to 3 places.
    res = compress_audio(named.clip, model=loaded, bitrate=round(kbps, 3), device=str(device))
    start = time.perf_counter()
    out = decompress_audio(res.data, model=loaded, device=str(device))
    return res, out.samples, time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# Both
# --------------------------------------------------------------------------------------------

_STEPS = {"image": _Steps(_image_batches, _image_roundtrip, _image_distortion),
          "audio": _Steps(_audio_batches, _audio_roundtrip, _clip_distortion)}


def _as_array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.cpu().numpy()
    return np.asarray(values, dtype=np.float64)


@torch.inference_mode()
def evaluate_model(loaded: LoadedModel, items: Sequence[RDItem], *,
                   qualities: Sequence[int] | None = None, batch_size: int = 4,
                   actual: bool = False,
                   progress: ProgressCallback | None = None) -> ModelEvaluation:
    """Measure a model (image or audio) at every rate setting on a list of items.

    The networks run on the device the model was loaded on. Without `actual`, the rate is the
    prior's NLL bits (per pixel; per second / 1000) and the times are the networks' (see
    `_image_batches`, `_audio_batches`). With `actual`, every item is also compressed and
    decompressed for real at every rate setting: rate = payload, "nll-" = the entropy coder's
    NLL, the metrics come from the real decoded item and the times are those of `compress_*`
    and `decompress_*`.

    Args:
        loaded: the model.
        items: `NamedImage`s for an image model, `NamedClip`s for an audio model.
        qualities: rate settings 1..N (default: all of the model's).
        batch_size: images per network pass (>= 1; clips go one at a time).
        actual: also run the real entropy coder.
        progress: called after each batch and rate setting.
    """
    if batch_size < 1:
        raise RDError(f"--batch-size must be at least 1, got {batch_size}")
    medium = MEDIA[loaded.kind]
    steps = _STEPS[loaded.kind]
    device = next(loaded.model.parameters()).device
    qualities = list(qualities or range(1, loaded.num_qualities + 1))
    stage_list = [loaded.stages_for_quality(q) for q in qualities]
    settings = (qualities if medium.kind == "image"
                else [loaded.model.config.kbps(n) for n in stage_list])
    rate = medium.rate
    main = medium.metrics[0]
    found: dict[tuple[int, int], RDRecord] = {}  # (rate setting, item) -> record
    nll_diff = decoded_diff = mismatch = metric_diff = 0.0
    max_gap = -math.inf
    for batch in steps.batches(loaded, items, list(zip(qualities, settings)), batch_size):
        members = [items[i] for i in batch.members]
        records = []
        for item, bits, metrics, extra in zip(members, batch.bits,
                                              steps.distortion(members, batch.decoded),
                                              batch.extra):
            nll = item.rate(bits)
            records.append(RDRecord(
                loaded.name, settings[batch.point], item.name, stages=batch.stages, values={
                    **item.columns(), rate: nll, f"nll-{rate}": nll, **metrics,
                    "encoding_time": batch.encoding_time,
                    "decoding_time": batch.decoding_time, **extra}))
        if actual:
            real = []
            for item, record, bits, decoded in zip(members, records, batch.bits,
                                                   batch.decoded):
                res, out, decode_s = steps.roundtrip(loaded, item, qualities[batch.point],
                                                     device)
                real.append(out)
                nll_bits = max(res.nll_bits, 1e-9)
                gap = 8 * res.payload_bytes / nll_bits - 1
                payload = item.rate(8 * res.payload_bytes)
                record.values.update({
                    rate: payload, f"payload-{rate}": payload,
                    f"nll-{rate}": item.rate(res.nll_bits),
                    f"file-{rate}": item.rate(8 * len(res.data)), "gap-percent": 100 * gap,
                    "encoding_time": res.seconds, "decoding_time": decode_s})
                difference = np.abs(_as_array(out) - _as_array(decoded))
                nll_diff = max(nll_diff, abs(bits - res.nll_bits) / nll_bits)
                decoded_diff = max(decoded_diff, float(difference.max()))
                mismatch = max(mismatch, float((difference > 0).mean()))
                max_gap = max(max_gap, gap)
            for record, metrics in zip(records, steps.distortion(members, real)):
                metric_diff = max(metric_diff, abs(record[main] - metrics[main]))
                record.values.update(metrics)
        found.update({(batch.point, i): r for i, r in zip(batch.members, records)})
        if progress is not None:
            progress(len(members),
                     f"{loaded.name} {medium.setting_label(settings[batch.point])}")
    records = [found[p, i] for p in range(len(qualities)) for i in range(len(items))]
    measured = dict(nll_difference=nll_diff, decoded_difference=decoded_diff,
                    decoded_mismatch=mismatch, metric_difference=metric_diff,
                    max_gap=max_gap if records else None) if actual else {}
    return ModelEvaluation(records=records, kind=medium.kind, settings=settings,
                           stages=stage_list, actual=actual, **measured)


def merge_evaluations(parts: Sequence[ModelEvaluation], items: Sequence[str]
                      ) -> ModelEvaluation:
    """One evaluation of items measured in shares (torchrun processes): their records in the
    order of a single run (`rd.merge_records`), the checks' largest values.

    Args:
        parts: each share's evaluation, of the same model and rate settings.
        items: every item's name, in the order of a single run.
    """
    first = parts[0]

    def largest(name: str) -> float | None:
        found = [getattr(p, name) for p in parts if getattr(p, name) is not None]
        return max(found) if found else None

    checks = ("nll_difference", "decoded_difference", "decoded_mismatch",
              "metric_difference", "max_gap")
    return ModelEvaluation(records=merge_records([p.records for p in parts], items),
                           kind=first.kind, settings=first.settings, stages=first.stages,
                           actual=first.actual, **{name: largest(name) for name in checks})


# The results keys of our model's curve, in the order its JSON shows them.
_IMAGE_KEYS = ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time", "nll-bpp",
               "mse", "payload-bpp", "file-bpp", "gap-percent", "quality", "stages")
_AUDIO_KEYS = ("bitrate", "stages", "kbps", "nll-kbps", "raw-kbps")
_AUDIO_ACTUAL_KEYS = ("payload-kbps", "file-kbps", "gap-percent")
_AUDIO_METRIC_KEYS = ("si-snr", "mel-distance", "mse", "encoding_time", "decoding_time")


def model_curve(evaluation: ModelEvaluation, *, name: str, source: str = "",
                device: str = "", batch_size: int | None = None) -> RDCurve:
    """Our model's `RDCurve`, with a description saying what the rate and the times mean.

    Args:
        evaluation: from `evaluate_model`.
        name: the model's name.
        source: where the items came from (for the description).
        device: where the networks ran.
        batch_size: the image batch size used.
    """
    medium = MEDIA[evaluation.kind]
    n_items = len({r.item for r in evaluation.records})
    where = f" on {source}" if source else ""
    dev = f", {device}" if device else ""
    if medium.kind == "image":
        keys = _IMAGE_KEYS
        if evaluation.actual:
            rate = ("bpp = real entropy-coded payload bits / pixels (no container; file-bpp "
                    "includes the .vqc container); nll-bpp = the prior's ideal rate; "
                    "gap-percent = payload bits / NLL bits - 1; metrics from the real decoded "
                    "image; encoding_time/decoding_time = compress_image/decompress_image "
                    "seconds per image")
        else:
            rate = ("bpp = nll-bpp = the prior's ideal rate, -sum log2 p(indices) / pixels, "
                    "computed without running the entropy coder (payload-bpp/file-bpp/"
                    "gap-percent unknown: run with --actual); encoding_time = batched "
                    "encoder+prior seconds per image, decoding_time = batched decoder seconds "
                    f"per image (batch size {batch_size})")
        description = (f"vqcodec model {name}{where} ({n_items} images{dev}). {rate}. "
                       f"PSNR/MS-SSIM on 8-bit RGB, per image then averaged (MS-SSIM over "
                       f"images >= {MS_SSIM_MIN_SIDE} px on the short side).")
    else:
        keys = _AUDIO_KEYS + (_AUDIO_ACTUAL_KEYS if evaluation.actual else ()) \
            + _AUDIO_METRIC_KEYS
        if evaluation.actual:
            rate = ("kbps = real entropy-coded payload bits / seconds / 1000 (no container; "
                    "file-kbps includes the .vqc container); nll-kbps = the prior's ideal "
                    "rate; gap-percent = payload bits / NLL bits - 1; metrics from the real "
                    "decoded audio; encoding_time/decoding_time = compress_audio/"
                    "decompress_audio seconds per clip")
        else:
            rate = ("kbps = nll-kbps = the prior's ideal rate, -sum log2 p(indices) / seconds "
                    "/ 1000, computed without running the entropy coder (payload and file "
                    "rates unknown: run with --actual); encoding_time = encoder (all stages, "
                    "once per clip) + prior seconds per clip, decoding_time = decoder seconds "
                    "per clip")
        description = (f"vqcodec audio model {name}{where} ({n_items} clips{dev}). bitrate = "
                       f"the nominal rate before the prior (one channel); raw-kbps = the coded "
                       f"indices before the prior (all channels); {rate}. SI-SNR (dB), mel "
                       f"distance and MSE against the original clip at its own rate, per clip "
                       f"then averaged.")
    return summarize(evaluation.records, medium, keys=keys, name=name,
                     description=description, kind="model")
