"""The shipped refinement filter (format version 8) and how its weights are saved and loaded.

A filter file is a safetensors file (float32 weights) whose metadata holds `vqcodec_filter`
= JSON with its config and training record. The filter is part of the format: version 8
files are restored with `REFINEMENT_FILTER_FILE`, so a new filter ships with a new version
(the test suite pins this file's hash).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from ..errors import ModelError
from ..format import weights_hash
from ..nn.refinement_filter import RefinementFilter, RefinementFilterConfig

REFINEMENT_FILTER_FILE = Path(__file__).parent / "filters" / "refinement-v8.safetensors"
METADATA_KEY = "vqcodec_filter"


def save_refinement_filter(net: RefinementFilter, path: str | Path, *,
                           training: dict | None = None) -> None:
    """Write `net`'s weights (float32) and config, and what trained it."""
    tensors = {k: v.float().contiguous().cpu() for k, v in net.state_dict().items()}
    meta = {"config": net.config.to_dict(), "training": training or {}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta)})


_CACHE: dict[tuple[str, str], tuple[RefinementFilter, str]] = {}


def load_refinement_filter(path: str | Path = REFINEMENT_FILTER_FILE, *,
                           device: str | torch.device = "cpu") -> tuple[RefinementFilter, str]:
    """(The filter, its file's hash) of a filter file (cached per device).

    Raises:
        ModelError: the file is missing or not a filter file.
    """
    path = Path(path)
    key = (str(path.resolve()), str(device))
    if key in _CACHE:
        return _CACHE[key]
    try:
        raw = path.read_bytes()
        header_size = int.from_bytes(raw[:8], "little")
        meta = json.loads(json.loads(raw[8:8 + header_size])["__metadata__"][METADATA_KEY])
        net = RefinementFilter(config=RefinementFilterConfig(**meta["config"]))
        net.load_state_dict(load_safetensors(raw))
    except (SafetensorError, KeyError, TypeError, ValueError, RuntimeError, OSError,
            UnicodeDecodeError) as e:
        raise ModelError(f"not a vqcodec refinement filter file: {path} "
                         f"({type(e).__name__})") from None
    # Channels-last weights, as restore_picture's inputs: oneDNN's fast layout on the CPU.
    net.eval().to(device, memory_format=torch.channels_last)
    _CACHE[key] = (net, weights_hash(raw))
    return _CACHE[key]
