"""Training data: the default splits of ../shared/data, loading into memory, and the random
crops / segments every training step draws.

Images are held as uint8 [3, H, W] tensors; audio as mono float32 signals [T] at the model's
sample rate, decoded and resampled once and cached in the run folder (`audio_<split>.pt`,
our own file, loaded with weights_only=True).
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from PIL import Image

from ..errors import TrainingError
from ..io.media import MediaKind, list_media

SHARED_IMAGES = "../shared/data/images"
SHARED_AUDIO = "../shared/data/audio"


# --- images -------------------------------------------------------------------------------

def default_image_split() -> tuple[list[str], list[str]]:
    """(train, val) image folders and files from ../shared/data/images: BSDS500 train + val
    and 40 Wikipedia photos for training, BSDS500 test for validation."""
    train = [f"{SHARED_IMAGES}/bsds500/train", f"{SHARED_IMAGES}/bsds500/val"] + \
        [f"{SHARED_IMAGES}/wikipedia/{i:03d}.jpg" for i in range(1, 41)]
    return train, [f"{SHARED_IMAGES}/bsds500/test"]


def image_split(train: list[str], val: list[str]) -> tuple[list[str], list[str]]:
    """The given training / validation image folders and files, or for either left empty
    the default split's."""
    default_train, default_val = default_image_split()
    return list(train) or default_train, list(val) or default_val


def load_rgb(path: Path) -> torch.Tensor:
    """uint8 tensor [3, H, W]."""
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()


def load_training_images(paths: list[str]) -> list[torch.Tensor]:
    """uint8 images [3, H, W] of image folders (searched recursively) and files; photos of
    600 px or more on the short side also come at half size."""
    images = []
    for p in media_files(paths, "image"):
        im = load_rgb(p)
        images.append(im)
        if min(im.shape[1:]) >= 600:  # large photos also at half size: more scale variety
            images.append(F.interpolate(im[None].float(), scale_factor=0.5, mode="area",
                                        antialias=False)[0].round().to(torch.uint8))
    return images


class CropSampler:
    """Random crops (with horizontal flips) from images held in memory as uint8.

    Args:
        images: uint8 [3, H, W]; those smaller than `crop` on either side are left out.
        crop: side of the square crops.
        seed: of the sampler's own random generator (a resumed run seeds it with its step).
    """

    def __init__(self, images: list[torch.Tensor], crop: int, seed: int = 0) -> None:
        self.images = [im for im in images if min(im.shape[1:]) >= crop]
        if not self.images:
            raise TrainingError(f"no training image is at least {crop} px on both sides")
        self.crop = crop
        self.rng = random.Random(seed)

    def batch(self, n: int, part: slice | None = None) -> torch.Tensor:
        """n crops [n, 3, crop, crop] as floats in [0, 1], or of those only the `part`
        (a process's shard under torchrun: all n are drawn, so every process's generator
        stays where a single process's would be, and the shards make up the n crops)."""
        keep = range(n)[part] if part is not None else range(n)
        out = []
        for i in range(n):
            im = self.images[self.rng.randrange(len(self.images))]
            y = self.rng.randrange(im.shape[1] - self.crop + 1)
            x = self.rng.randrange(im.shape[2] - self.crop + 1)
            flip = self.rng.random() < 0.5
            if i in keep:
                c = im[:, y:y + self.crop, x:x + self.crop]
                out.append(c.flip(2) if flip else c)
        return torch.stack(out).float() / 255


def validation_crops(images: list[torch.Tensor], *, size: int, count: int) -> torch.Tensor:
    """The centre crops [N, 3, size, size] (floats in [0, 1]) of the first `count` images that
    are large enough, looked for among the first 48."""
    big = [im for im in images[:48] if min(im.shape[1:]) >= size][:count]
    if not big:
        raise TrainingError(f"no validation image is at least {size} px on both sides")
    out = []
    for im in big:
        h, w = im.shape[1:]
        y, x = (h - size) // 2, (w - size) // 2
        out.append(im[:, y:y + size, x:x + size])
    return torch.stack(out).float() / 255


# --- audio --------------------------------------------------------------------------------

def default_audio_split() -> tuple[list[Path], list[Path]]:
    """(train, val) files from ../shared/data/audio, as its README splits them: RAVDESS actors
    01-20 / 21-24, ESC-10 folds 1-4 / 5 (the copy in ../shared holds folds 1-3 only, so all of
    it trains), librosa for training, sms_tools every fifth file held out (sorted by name)."""
    root = Path(SHARED_AUDIO)
    train, val = [], []
    for actor in sorted((root / "speech/ravdess").glob("Actor_*")):
        (train if int(actor.name[-2:]) <= 20 else val).extend(sorted(actor.glob("*.flac")))
    for f in sorted((root / "music/esc10").rglob("*.ogg")):
        (val if f.name.startswith("5") else train).append(f)
    train += sorted((root / "music/librosa").glob("*.ogg"))
    for i, f in enumerate(sorted((root / "music/sms_tools").glob("*.wav"))):
        (val if i % 5 == 4 else train).append(f)
    return train, val


def media_files(paths: list[str], kind: MediaKind) -> list[Path]:
    """The files of `kind` of folders (searched recursively) and files, in the given order."""
    return [f for p in paths
            for f in (list_media(p, kind, recursive=True) if Path(p).is_dir() else [Path(p)])]


def audio_split(train: list[str], val: list[str]) -> tuple[list[Path], list[Path]]:
    """The audio files of the given training / validation folders and files, or for either
    left empty the default split's."""
    default_train, default_val = default_audio_split()
    return media_files(train, "audio") or default_train, media_files(val, "audio") or default_val


def load_mono(path: Path, sample_rate: int) -> torch.Tensor:
    """Every channel of a file, resampled, as separate mono signals [C, T] (float32)."""
    import soundfile
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    x = torch.from_numpy(np.ascontiguousarray(data.T))
    if rate != sample_rate:
        x = torchaudio.functional.resample(x, rate, sample_rate)
    return x


def load_audio_set(files: list[Path], sample_rate: int, cache: Path) -> list[torch.Tensor]:
    """Mono signals of all files (cached in `cache` after the first call)."""
    if cache.exists():
        return list(torch.load(cache, weights_only=True))
    signals = [ch for f in files for ch in load_mono(f, sample_rate)]
    torch.save(signals, cache)
    return signals


class SegmentSampler:
    """Random segments of `length` samples (random gain) from signals held in memory.

    Args:
        signals: mono float signals [T]; those shorter than `length` are left out.
        length: samples per segment.
        seed: of the sampler's own random generator (a resumed run seeds it with its step).
    """

    def __init__(self, signals: list[torch.Tensor], length: int, seed: int = 0) -> None:
        self.signals = [s for s in signals if s.shape[0] >= length]
        if not self.signals:
            raise TrainingError(f"no training signal has {length} samples or more")
        weights = np.array([s.shape[0] for s in self.signals], dtype=np.float64)
        self.weights = (weights / weights.sum()).tolist()  # long files count by their length
        self.length = length
        self.rng = random.Random(seed)

    def batch(self, n: int, part: slice | None = None) -> torch.Tensor:
        """n segments [n, 1, length], or of those only the `part` (a process's shard under
        torchrun; all n are drawn, as `CropSampler.batch`)."""
        keep = range(n)[part] if part is not None else range(n)
        out = []
        for i, s in enumerate(self.rng.choices(self.signals, weights=self.weights, k=n)):
            start = self.rng.randrange(s.shape[0] - self.length + 1)
            level = self.rng.uniform(0.3, 1.0)
            if i in keep:
                seg = s[start:start + self.length]
                peak = seg.abs().max().clamp_min(1e-4)
                out.append(seg * min(level / peak.item(), 10.0))
        return torch.stack(out)[:, None]


def validation_segments(signals: list[torch.Tensor], length: int, count: int = 24
                        ) -> torch.Tensor:
    """Deterministic validation segments [N, 1, length]: the middle `length` samples of up to
    `count` signals spread over the set (shorter signals zero-padded)."""
    if not signals:
        raise TrainingError("no validation audio")
    pick = signals[:: max(1, len(signals) // count)][:count]
    segments = [F.pad(s[max(0, (s.shape[0] - length) // 2):][:length],
                      (0, max(0, length - s.shape[0])))
                for s in pick]
    return torch.stack(segments)[:, None]
