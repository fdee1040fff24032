"""Seconds to compress and decompress one minute of audio at every bitrate of an audio model
(real-time factor = seconds taken / seconds of audio), with the prior and entropy coder.

    python benchmarks/audio_speed.py [--model vqaudio-v1] [--source DIR] [--device cpu]

The minute is made by concatenating the clips of --source (default
../shared/data/audio/speech/misc) at 24 kHz mono, repeated if they are shorter.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from vqcodec.pipelines.audio import compress_audio, decompress_audio
from vqcodec.io.audio import AUDIO_EXTENSIONS, AudioClip, load_audio, resample
from vqcodec.zoo.registry import DEFAULT_AUDIO_MODEL, load_model

RATE = 24000


def one_minute(source: Path) -> AudioClip:
    parts = []
    for path in sorted(p for p in source.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS):
        clip = load_audio(path)
        parts.append(resample(clip.samples.mean(0), clip.sample_rate, RATE))
    x = np.concatenate(parts)
    x = np.tile(x, -(-60 * RATE // x.size))[:60 * RATE]
    return AudioClip(samples=np.ascontiguousarray(x[None], dtype=np.float32), sample_rate=RATE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_AUDIO_MODEL)
    ap.add_argument("--source", default="../shared/data/audio/speech/misc")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    loaded = load_model(args.model)
    clip = one_minute(Path(args.source))
    config = loaded.model.config
    print(f"{loaded.name}: {clip.seconds:.0f} s of mono audio at {RATE} Hz, device {args.device}")
    print("bitrate kbps | real kbps | compress s (RTF) | decompress s (RTF)")
    for n in loaded.qualities:
        kbps = config.kbps(n)
        t = time.perf_counter()
        result = compress_audio(clip, model=loaded, bitrate=kbps, device=args.device)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        decompress_audio(result.data, model=loaded, device=args.device)
        dec = time.perf_counter() - t
        print(f"{kbps:12g} | {result.kbps:9.3f} | {enc:7.1f} ({enc / clip.seconds:.3f}) | "
              f"{dec:7.1f} ({dec / clip.seconds:.3f})")


if __name__ == "__main__":
    main()
