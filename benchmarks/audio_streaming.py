"""Time and peak memory of the CLI on long audio files: `vqcodec compress` and `vqcodec
decompress` of one recording per length (start-up included), each in its own process, to show
that memory does not grow with the length (the input is read, resampled, coded and written in
windows; only the indices, 16 stages x 75 frames/s, are held whole).

    python benchmarks/audio_streaming.py [--minutes 1,10] [--rate 48000] [--channels 1]
        [--out /tmp/vqcodec-audio]

The recordings are the validation speech (RAVDESS actors 21-24, 48 kHz FLAC) one after
another, repeated to the length asked for and resampled to --rate, written to --out (not the
repo) as 16-bit WAV.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from large_image import CLI, run  # one way to time a CLI process and read its peak memory

SPEECH = Path(__file__).resolve().parents[2] / "shared/data/audio/speech/ravdess"


def make_recording(minutes: float, rate: int, channels: int, path: Path) -> Path:
    """`minutes` of validation speech at `rate` Hz, `channels` channels (the same speech,
    delayed by 0.1 s per channel), as a 16-bit WAV."""
    from vqcodec.io.audio import load_audio, resample, save_audio
    if path.exists():
        return path
    clips = []
    for actor in (21, 22, 23, 24):
        for f in sorted((SPEECH / f"Actor_{actor:02d}").glob("*.flac")):
            clip = load_audio(f)
            clips.append(resample(clip.samples[:1], clip.sample_rate, rate)[0])
    speech = np.concatenate(clips)
    n = int(minutes * 60 * rate)
    mono = np.tile(speech, -(-n // len(speech)))[:n]
    delay = int(0.1 * rate)
    samples = np.stack([np.roll(mono, c * delay) for c in range(channels)])
    save_audio(path, samples, rate)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", default="1,10")
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--out", default="/tmp/vqcodec-audio")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("| minutes | input MiB | kbps (file) | compress s (CPU s) | peak GiB "
          "| decompress s (CPU s) | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for minutes in (float(m) for m in args.minutes.split(",")):
        stem = f"speech-{minutes:g}min-{args.rate}-{args.channels}ch"
        wav = make_recording(minutes, args.rate, args.channels, out / f"{stem}.wav")
        vqc, decoded = out / f"{stem}.vqc", out / f"{stem}-decoded.wav"
        c_s, c_cpu, c_gib = run([CLI, "compress", str(wav), str(vqc), "--device", "cpu"])
        d_s, d_cpu, d_gib = run([CLI, "decompress", str(vqc), str(decoded), "--device", "cpu"])
        kbps = 8 * vqc.stat().st_size / (minutes * 60) / 1000
        print(f"| {minutes:g} | {wav.stat().st_size / 2 ** 20:.0f} | {kbps:.2f} "
              f"| {c_s:.1f} ({c_cpu:.1f}) | {c_gib:.2f} | {d_s:.1f} ({d_cpu:.1f}) "
              f"| {d_gib:.2f} |", flush=True)


if __name__ == "__main__":
    main()
