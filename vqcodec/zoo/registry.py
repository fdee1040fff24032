"""Shipped models and how weights are saved and loaded (safetensors only, never pickle).

A model file is a safetensors file whose metadata holds `vqcodec` = JSON with the model's
name, kind, config and rate settings (`qualities[q - 1]` = stages coded at quality q, or
[stages, rd_lambda] for a model whose encoder weighs rate).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from ..format import ContainerHeader, weights_hash
from ..nn.audio_model import AudioModelConfig, VQAudioModel
from ..nn.image_model import ImageModelConfig, VQImageModel
from ..errors import ModelError

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_IMAGE_MODEL = "vqimage-v3i"
# Images of LARGE_IMAGE_PIXELS or more are coded, when no model is named, with
# LARGE_IMAGE_MODEL: DEFAULT_IMAGE_MODEL's transform and quantizer with a width-64 prior
# (4x fewer multiply-adds per convolution), the same pictures for a few tenths of a percent
# more or fewer bits (its model card), a quarter less time on a 2048x2048 photo.
LARGE_IMAGE_MODEL = "vqimage-v3i-fast"
LARGE_IMAGE_PIXELS = 2_000_000
DEFAULT_AUDIO_MODEL = "vqaudio-v1i"
INTEGER_PREFIX = "integer_prior."  # tensor names of a model's integer prior in its file
PRIOR_PREFIXES = ("prior.", INTEGER_PREFIX)  # what a file of a prior alone holds (`prior_of`)

# Grouped image models keep the first IMAGE_LADDER_RUNGS qualities of their own ladder; the
# qualities after those (format version 6) code the picture of quality IMAGE_REFINEMENT_BASE,
# refined in pixels (`coding.refinement`) with these steps in 8-bit levels, coarsest first.
# Chosen by measurement on 12 BSDS500 test photos (docs/ablations.md, sessions 11, 12, 14):
# above 30 dB a coarse base and scalar refinement cost less than the quantizer's later
# rounds (base 3: +4.9 % against WebP, base 6 +6.7 %, base 12 +17.9 %). The quantizer keeps
# the rungs where the refinement would cost MS-SSIM at equal rate (session 14, 12 BSDS500
# test and 29 training photos, against the quantizer's curve interpolated at equal bpp):
# steps 56 and 52 give +1.4 to +1.8 dB and MS-SSIM +0.0022 / +0.0001 (56) and +0.004 /
# +0.002 (52), so they are qualities 11 and 12; step 60 lost 0.0015 on the training photos
# and step 64 0.0014 on the test ones, so the quantizer kept its first 10 rungs. Session 15:
# with the refinement filter (format version 8) step 64 gives +1.4 dB over the quantizer's
# quality 10 and MS-SSIM +0.0004 (13 BSDS500 test photos) and +0.0000 (13 validation photos,
# neither trained on), step 72 still -0.0013 / -0.0022: quality 10 is refined at step 64.
IMAGE_LADDER_RUNGS = 9
IMAGE_REFINEMENT_BASE = 3
# A refined quality codes only the first IMAGE_REFINEMENT_BASE_STAGES stages (rounds) of
# IMAGE_REFINEMENT_BASE's setting: the refinement codes what the later rounds would, for the
# same bits. Session 16, 13 BSDS500 test photos (every 16th), qualities 10-19 against all 6
# stages: BD-rate 4 stages -0.08 %, 3 -0.05 %, 2 +2.2 %, 1 +8.6 %; 3 stages are 5 prior
# passes instead of 8, about a fifth less decoding time (docs/ablations.md). The refinement's
# starting counts and the restoration filter were trained on 6-stage bases.
IMAGE_REFINEMENT_BASE_STAGES = 3
IMAGE_REFINEMENT_STEPS = (64.0, 56.0, 52.0, 48.0, 40.0, 32.0, 26.0, 21.0, 17.0, 14.0)

# kind (as written in a model file) -> (config class, model class)
MODEL_KINDS = {"image": (ImageModelConfig, VQImageModel), "audio": (AudioModelConfig, VQAudioModel)}


@dataclass
class LoadedModel:
    name: str
    kind: str  # "image" or "audio"
    model: VQImageModel | VQAudioModel
    weights_hash: bytes
    qualities: list  # per quality: stages, or [stages, rd_lambda]
    default_quality: int
    training: dict = field(default_factory=dict)  # steps and CPU seconds, when recorded

    def require_kind(self, kind: str) -> None:
        if self.kind != kind:
            raise ModelError(f"model {self.name!r} is an {self.kind} model, not an {kind} model")

    @property
    def refines(self) -> bool:
        """Whether the model's top qualities refine its pictures (grouped image models)."""
        return self.kind == "image" and bool(self.model.config.num_groups)

    @property
    def ladder_qualities(self) -> int:
        """Qualities 1..ladder_qualities code the model's own ladder (grouped image models:
        its first IMAGE_LADDER_RUNGS)."""
        rungs = len(self.qualities)
        return min(rungs, IMAGE_LADDER_RUNGS) if self.refines else rungs

    @property
    def refined_qualities(self) -> int:
        """How many qualities after the ladder refine its pictures (grouped image models:
        `IMAGE_REFINEMENT_STEPS`; others none)."""
        return len(IMAGE_REFINEMENT_STEPS) if self.refines else 0

    @property
    def num_qualities(self) -> int:
        """Qualities 1..num_qualities: the model's ladder, then the refined ones."""
        return self.ladder_qualities + self.refined_qualities

    def refinement_step(self, quality: int) -> float:
        """The refinement step at `quality` in 8-bit levels; 0 on the model's own ladder."""
        self._check_quality(quality)
        extra = quality - self.ladder_qualities
        return IMAGE_REFINEMENT_STEPS[extra - 1] if extra > 0 else 0.0

    def _check_quality(self, quality: int) -> None:
        if not 1 <= quality <= self.num_qualities:
            raise ModelError(f"quality must be 1..{self.num_qualities} for model {self.name}, "
                             f"got {quality}")

    def rate_for_quality(self, quality: int) -> tuple[int, float]:
        """(stages coded, rate weight of the encoder's code choice) at `quality`. A quality
        entry is a stage count, or [stages, rd_lambda] for models whose encoder weighs rate;
        a refined quality codes the first `IMAGE_REFINEMENT_BASE_STAGES` stages of
        `IMAGE_REFINEMENT_BASE`'s setting."""
        self._check_quality(quality)
        refined = quality > self.ladder_qualities
        if refined:
            quality = min(IMAGE_REFINEMENT_BASE, self.ladder_qualities)
        entry = self.qualities[quality - 1]
        stages, rd_lambda = ((int(entry[0]), float(entry[1])) if isinstance(entry, list)
                             else (int(entry), 0.0))
        return (min(stages, IMAGE_REFINEMENT_BASE_STAGES) if refined else stages), rd_lambda

    def stages_for_quality(self, quality: int) -> int:
        return self.rate_for_quality(quality)[0]


def default_image_model(num_pixels: int) -> str:
    """The model an image of `num_pixels` pixels is coded with when none is named."""
    return LARGE_IMAGE_MODEL if num_pixels >= LARGE_IMAGE_PIXELS else DEFAULT_IMAGE_MODEL


def shipped_models() -> list[str]:
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def save_model(model: VQImageModel | VQAudioModel, path: str | Path, *, name: str,
               qualities: list, default_quality: int, half: bool = True,
               training: dict | None = None, prior_of: "LoadedModel | None" = None) -> None:
    """Write weights (float16 when `half`, which halves the file) and metadata. An integer
    prior (`model.integer_prior`, see `nn/integer_prior.py`) is written exactly as it is: its
    tensors hold integers and must not be rounded.

    Args:
        prior_of: a shipped model whose every weight but the prior's `model` shares: only the
            priors are written, with that model's name and weights hash, and loading takes
            the rest from it (a second prior for a model costs its own size only).
    """
    integer = model.integer_prior
    tensors = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu()
               for k, v in model.state_dict().items() if not k.startswith(INTEGER_PREFIX)}
    meta = {"name": name, "kind": model.kind, "config": model.config.to_dict(),
            "qualities": qualities, "default_quality": default_quality,
            "training": training or {}}
    if prior_of is not None:
        shared = {k: v for k, v in prior_of.model.state_dict().items()
                  if not k.startswith(PRIOR_PREFIXES)}
        for k, v in shared.items():
            if not torch.equal(tensors[k].to(v.dtype), v.cpu()):
                raise ModelError(f"{k} differs from {prior_of.name}'s: not a prior of it")
        tensors = {k: v for k, v in tensors.items() if k.startswith(PRIOR_PREFIXES)}
        meta["prior_of"] = {"name": prior_of.name, "weights_hash": prior_of.weights_hash.hex()}
    if integer is not None:
        # The integer modules keep their integers in int16/int32 in state dicts (15-bit
        # weights take 2 bytes), exact both ways.
        tensors.update({INTEGER_PREFIX + k: v.contiguous().cpu()
                        for k, v in integer.state_dict().items()})
        meta["integer_prior"] = integer.config_dict()
    save_file(tensors, str(path), metadata={"vqcodec": json.dumps(meta)})


def _integer_prior_class(kind: str):
    """The integer (exact) prior class of a model kind (imported only for integer models)."""
    if kind == "audio":
        from ..nn.integer_frame_prior import IntegerFramePrior
        return IntegerFramePrior
    from ..nn.integer_prior import IntegerStagePrior
    return IntegerStagePrior


def resolve_model_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".safetensors" or path.exists():
        if not path.is_file():
            raise ModelError(f"no such model file: {name_or_path}")
        return path
    shipped = WEIGHTS_DIR / f"{name_or_path}.safetensors"
    if not shipped.is_file():
        raise ModelError(f"unknown model {name_or_path!r}; shipped models: "
                         f"{', '.join(shipped_models()) or 'none'}")
    return shipped


_CACHE: dict[tuple[str, str], LoadedModel] = {}


def load_model(name_or_path: str = DEFAULT_IMAGE_MODEL, *,
               device: str | torch.device = "cpu") -> LoadedModel:
    """Load a shipped model by name, or a model file by path (cached per device)."""
    path = resolve_model_path(name_or_path)
    key = (str(path.resolve()), str(device))
    if key in _CACHE:
        return _CACHE[key]
    raw = path.read_bytes()  # read once: hashed, then parsed from memory
    try:
        # safetensors layout: u64 little-endian header size, JSON header, tensor data.
        header_size = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_size])
        meta = json.loads(header["__metadata__"]["vqcodec"])
        tensors = load_safetensors(raw)
        config_class, model_class = MODEL_KINDS[meta.get("kind", "image")]
        model = model_class(config_class.from_dict(meta["config"]))
        if "integer_prior" in meta:
            integer = _integer_prior_class(meta["kind"]).from_config(meta["integer_prior"])
            integer.load_state_dict({k[len(INTEGER_PREFIX):]: v for k, v in tensors.items()
                                     if k.startswith(INTEGER_PREFIX)})
            model.integer_prior = integer
        state = model.state_dict()
        if "prior_of" in meta:
            tensors = {**_shared_weights(meta["prior_of"], path), **tensors}
        model.load_state_dict({k: v.to(state[k].dtype) for k, v in tensors.items()})
    except ModelError:  # a prior alone whose shipped model does not fit: its own message
        raise
    except (SafetensorError, KeyError, TypeError, ValueError, RuntimeError, OSError,
            UnicodeDecodeError) as e:
        raise ModelError(f"not a vqcodec model file: {path} ({type(e).__name__})") from None
    model.eval().to(device)
    loaded = LoadedModel(name=meta["name"], kind=meta["kind"], model=model,
                         weights_hash=weights_hash(raw), qualities=list(meta["qualities"]),
                         default_quality=int(meta["default_quality"]),
                         training=dict(meta.get("training", {})))
    _CACHE[key] = loaded
    return loaded


def _shared_weights(prior_of: dict, path: Path) -> dict[str, torch.Tensor]:
    """The weights a file of a prior alone takes from its shipped model (checked by hash)."""
    base = load_model(prior_of["name"])
    if base.weights_hash.hex() != prior_of["weights_hash"]:
        raise ModelError(f"{path} is a prior of model {prior_of['name']!r} with weights "
                         f"{prior_of['weights_hash']}, not of the one here "
                         f"({base.weights_hash.hex()})")
    return {k: v for k, v in base.model.state_dict().items() if not k.startswith(PRIOR_PREFIXES)}


def model_for_header(header: ContainerHeader, model: str | LoadedModel | None,
                     device: str | torch.device) -> LoadedModel:
    """The model that made `header`'s file, or a clear error."""
    if isinstance(model, LoadedModel):
        loaded = model
    else:
        try:
            loaded = load_model(model or header.model_id, device=device)
        except ModelError as e:
            raise ModelError(f"this file needs model {header.model_id!r}, which is not "
                             f"available ({e})") from None
    if loaded.name != header.model_id or loaded.weights_hash != header.weights_hash:
        raise ModelError(
            f"this file was made by model {header.model_id!r} (weights {header.weights_hash.hex()}); "
            f"the model given is {loaded.name!r} (weights {loaded.weights_hash.hex()})")
    loaded.require_kind(header.media_type.name.lower())
    return loaded
