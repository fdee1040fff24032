"""Seconds to compress and decompress one minute of audio at every bitrate of an audio model
(real-time factor = seconds taken / seconds of audio), with the prior and entropy coder; and
the prior + range coder alone (the latent codec's compress/decompress of the minute's
indices), which is where float and exact integer priors differ.

    python benchmarks/audio_speed.py [--model vqaudio-v1 [--model runs/vqaudio-v1i.safetensors]]
        [--source DIR] [--device cpu] [--threads 1]

Several --model options are measured bitrate by bitrate in turn, so that they see the same
machine load. The minute is made by concatenating the clips of --source (default
../shared/data/audio/speech/misc) at 24 kHz mono, repeated if they are shorter.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from vqcodec.coding import file_codec
from vqcodec.io.audio import AudioClip, load_audio, resample
from vqcodec.io.media import AUDIO_SUFFIXES
from vqcodec.pipelines.audio import (compress_audio, decompress_audio, encode_channel,
                                     model_input)
from vqcodec.zoo.registry import DEFAULT_AUDIO_MODEL, load_model

RATE = 24000


def one_minute(source: Path) -> AudioClip:
    parts = []
    for path in sorted(p for p in source.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
        clip = load_audio(path)
        parts.append(resample(clip.samples.mean(0), clip.sample_rate, RATE))
    x = np.concatenate(parts)
    x = np.tile(x, -(-60 * RATE // x.size))[:60 * RATE]
    return AudioClip(samples=np.ascontiguousarray(x[None], dtype=np.float32), sample_rate=RATE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--source", default="../shared/data/audio/speech/misc")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = [load_model(m) for m in args.model or [DEFAULT_AUDIO_MODEL]]
    clip = one_minute(Path(args.source))
    print(f"{clip.seconds:.0f} s of mono audio at {RATE} Hz, device {args.device}, "
          f"{args.threads} thread(s)")
    print("model        | bitrate kbps | real kbps | compress s (RTF) | decompress s (RTF) | "
          "prior+coder: compress s | decompress s")
    indices = {}
    for loaded in models:
        net = loaded.model
        with torch.no_grad():
            indices[loaded.name] = encode_channel(
                net, model_input(clip.samples[0], RATE, net), net.config.num_stages)[None]
    for n in models[0].qualities:
        for loaded in models:
            kbps = loaded.model.config.kbps(n)
            t = time.perf_counter()
            result = compress_audio(clip, model=loaded, bitrate=kbps, device=args.device)
            enc = time.perf_counter() - t
            t = time.perf_counter()
            decompress_audio(result.data, model=loaded, device=args.device)
            dec = time.perf_counter() - t
            codec, idx = file_codec(loaded.model), indices[loaded.name][:, :n]
            t = time.perf_counter()
            coded = codec.compress(idx)
            prior_enc = time.perf_counter() - t
            t = time.perf_counter()
            codec.decompress(coded.payload, *idx.shape)
            prior_dec = time.perf_counter() - t
            print(f"{loaded.name:12s} | {kbps:12g} | {result.kbps:9.3f} | {enc:7.1f} "
                  f"({enc / clip.seconds:.3f}) | {dec:7.1f} ({dec / clip.seconds:.3f}) | "
                  f"{prior_enc:23.1f} | {prior_dec:12.1f}", flush=True)


if __name__ == "__main__":
    main()
