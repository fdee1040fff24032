"""Which files are images and which are audio: the one list of suffixes for every command.

Only suffixes are looked at here (nothing is opened); the loaders in `image.py` and `audio.py`
decide whether a file's contents can be used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import soundfile as sf

from ..errors import InputError

MediaKind = Literal["image", "audio"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm",
                            ".pnm", ".webp", ".gif", ".avif", ".jxl"})
"""File suffixes (lower case) taken as images."""


def _readable_audio_suffixes() -> frozenset[str]:
    """Suffixes of the common formats this machine's libsndfile can read."""
    formats = sf.available_formats()
    by_format = {
        "WAV": (".wav",), "FLAC": (".flac",), "AIFF": (".aif", ".aiff"), "MP3": (".mp3",),
    }
    suffixes = {s for name, found in by_format.items() if name in formats for s in found}
    if "OGG" in formats:
        ogg = sf.available_subtypes("OGG")
        if "VORBIS" in ogg:
            suffixes |= {".ogg", ".oga"}
        if "OPUS" in ogg:
            suffixes.add(".opus")
    return frozenset(suffixes)


AUDIO_SUFFIXES = _readable_audio_suffixes()
"""File suffixes (lower case) taken as audio: the common ones this soundfile can read."""

_SUFFIXES: dict[str, frozenset[str]] = {"image": IMAGE_SUFFIXES, "audio": AUDIO_SUFFIXES}


def media_kind(path: str | Path) -> MediaKind | None:
    """"image", "audio" or None, from a path's suffix alone."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    return None


def is_audio_path(path: str | Path) -> bool:
    """Whether a path's suffix is one of `AUDIO_SUFFIXES`."""
    return media_kind(path) == "audio"


def list_media(folder: str | Path, kind: MediaKind, *, recursive: bool = False) -> list[Path]:
    """The files of `kind` in a folder, sorted, hidden files left out (a single file of that
    kind is returned as a list of itself).

    Args:
        folder: a folder, or one file.
        kind: "image" or "audio".
        recursive: also look in sub-folders.
    """
    folder = Path(folder)
    suffixes = _SUFFIXES[kind]
    if folder.is_file():
        return [folder] if folder.suffix.lower() in suffixes else []
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in suffixes)


def folder_kind(folder: str | Path) -> MediaKind:
    """Whether a folder (or single file) holds images or audio, from the suffixes alone.

    Raises:
        InputError: the folder does not exist, holds neither images nor audio files, or holds
            both (the caller then needs a model's kind to choose).
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"no such folder: {folder}")
    images, audio = list_media(folder, "image"), list_media(folder, "audio")
    if images and audio:
        raise InputError(f"{folder} holds both images ({len(images)}) and audio files "
                         f"({len(audio)}): pass --model to say which to measure")
    if not images and not audio:
        raise InputError(f"no images or audio files found in {folder}")
    return "audio" if audio else "image"
