"""What rate-distortion curves are measured on: the images or clips of a folder, each with its
file name, its size columns and how its bits become a rate."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, RDError
from ..io.audio import AudioClip, load_audio
from ..io.image import load_image
from ..io.media import MediaKind, list_media
from .rd import MEDIA

__all__ = ["NamedClip", "NamedImage", "RDItem", "item_files", "load_items"]


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

    def rate(self, bits: float) -> float:
        """Bits per pixel."""
        return bits / self.pixels

    def columns(self) -> dict[str, int]:
        """The per-image size columns."""
        return {"width": self.width, "height": self.height}


@dataclass
class NamedClip:
    """A clip to measure on.

    Args:
        name: its file name (identifies it in per-clip results).
        clip: the audio as loaded.
    """

    name: str
    clip: AudioClip

    @property
    def seconds(self) -> float:
        return self.clip.seconds

    def rate(self, bits: float) -> float:
        """Kilobits per second of audio."""
        return bits / self.seconds / 1000

    def columns(self) -> dict[str, float]:
        """The per-clip format columns."""
        return {"channels": self.clip.channels, "sample_rate": self.clip.sample_rate,
                "seconds": self.seconds}


RDItem = NamedImage | NamedClip

_LOADERS = {"image": (NamedImage, load_image), "audio": (NamedClip, load_audio)}


def item_files(folder: str | Path, kind: MediaKind) -> list[Path]:
    """The image or audio files `load_items` reads, in its order (sorted by name).

    Raises:
        RDError: the folder does not exist or holds no files of the kind at all.
    """
    folder = Path(folder)
    if not folder.exists():
        raise RDError(f"no such folder: {folder}")
    candidates = [folder] if folder.is_file() else list_media(folder, kind)
    if not candidates:
        raise RDError(f"no {MEDIA[kind].items} found in {folder}")
    return candidates


def load_items(folder: str | Path, kind: MediaKind, part: slice | None = None
               ) -> tuple[list[RDItem], list[tuple[str, str]]]:
    """Load every image or audio file of a folder (not recursive), sorted by name.

    Files of the other kind, of no known kind and hidden files are ignored (`io.media`); files
    that cannot be read are skipped and returned with the reason.

    Args:
        folder: a folder (a single file is accepted too).
        kind: "image" or "audio".
        part: of the files in order, those to load (a process's share under torchrun:
            slice(rank, None, size)); default all.

    Returns:
        (items, skipped) where skipped lists (file name, one-line reason).

    Raises:
        RDError: the folder does not exist or holds no files of the kind at all.
    """
    candidates = item_files(folder, kind)
    named, load = _LOADERS[kind]
    items, skipped = [], []
    for path in candidates[part or slice(None)]:
        try:
            items.append(named(path.name, load(path)))
        except InputError as e:
            skipped.append((path.name, str(e)))
        except OSError as e:
            skipped.append((path.name, e.strerror or str(e)))
    return items, skipped
