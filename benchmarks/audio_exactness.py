"""Exactness and rate honesty of the audio codec on a set of clips (the validation split for
the README): for every clip and every bitrate of the model, the decoder's indices equal the
encoder's (exits non-zero when not). Also reports how far the payload is above the prior's NLL:
the range coder's flush and 4-byte words cost a few bytes per file, which is over 1% on a
3-second clip at 1.5 kbps (~450 bytes), so the gap is reported in % and bytes, not judged.

    python benchmarks/audio_exactness.py [FILES_OR_FOLDERS ...] [--model vqaudio-v1]

Without paths it uses the validation split of ../shared/data/audio (RAVDESS actors 21-24,
ESC-10 fold 5, held-out sms-tools clips) and ../shared/data/audio/speech/misc.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from vqcodec.pipelines.audio import encode_channel, model_input
from vqcodec.io.audio import AUDIO_EXTENSIONS, load_audio
from vqcodec.train.audio import SHARED_AUDIO, default_audio_split
from vqcodec.zoo.registry import DEFAULT_AUDIO_MODEL, load_model
from vqcodec.coding import file_codec


def clip_paths(args: list[str]) -> list[Path]:
    if not args:
        _, val = default_audio_split()
        misc = sorted(p for p in Path(SHARED_AUDIO, "speech/misc").iterdir()
                      if p.suffix.lower() in AUDIO_EXTENSIONS)
        return val + misc
    out = []
    for a in map(Path, args):
        out += sorted(p for p in a.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS) \
            if a.is_dir() else [a]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--model", default=DEFAULT_AUDIO_MODEL)
    args = ap.parse_args()
    loaded = load_model(args.model)
    net, codec = loaded.model, file_codec(loaded.model)
    worst_gap, worst_bytes, failures, checked, seconds = 0.0, 0.0, 0, 0, 0.0
    start = time.perf_counter()
    for path in clip_paths(args.paths):
        clip = load_audio(path)
        seconds += clip.seconds
        all_indices = torch.stack([encode_channel(net, model_input(ch, clip.sample_rate, net),
                                                  net.config.num_stages)
                                   for ch in clip.samples])  # [C, S, F]
        for n in loaded.qualities:
            coded = codec.compress(all_indices[:, :n])
            decoded = codec.decompress(coded.payload, all_indices.shape[0], n,
                                       all_indices.shape[2])
            exact = torch.equal(decoded, all_indices[:, :n])
            gap = coded.payload_bits / coded.nll_bits - 1
            worst_gap = max(worst_gap, gap)
            worst_bytes = max(worst_bytes, (coded.payload_bits - coded.nll_bits) / 8)
            failures += not exact
            checked += 1
            if not exact:
                print(f"FAIL {path.name} {net.config.kbps(n):g} kbps: indices differ")
    print(f"{checked} (clip, bitrate) pairs ({seconds / 60:.1f} min of audio, "
          f"{time.perf_counter() - start:.0f} s): {checked - failures} decoded to exactly the "
          f"encoder's indices; payload above NLL by at most {100 * worst_gap:.3f}% / "
          f"{worst_bytes:.1f} bytes")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
