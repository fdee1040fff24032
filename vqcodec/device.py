"""`--device auto|cpu|cuda` resolution, shared by every command."""
from __future__ import annotations

import torch
from .errors import DeviceError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for, but CUDA is not available here")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)
