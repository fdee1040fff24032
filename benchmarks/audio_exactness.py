"""Exactness and rate honesty of the audio codec on a set of clips (the validation split for
the README): for every clip and every bitrate of the model, the decoder's indices equal the
encoder's (exits non-zero when not). Also reports how far the payload is above the prior's NLL:
the range coder's flush and 4-byte words cost a few bytes per file, which is over 1% on a
3-second clip at 1.5 kbps (~450 bytes), so the gap is reported in % and bytes, not judged.

With `--float-model`, also the cost of exactness: the integer prior's NLL against the float
prior's NLL of the same indices (teacher-forced, chunk by chunk as files are coded), per
bitrate and per group of clips (the target is at most 1 % more bits).

    python benchmarks/audio_exactness.py [FILES_OR_FOLDERS ...] [--model vqaudio-v1i]
        [--float-model vqaudio-v1.safetensors]

Without paths it uses the validation split of ../shared/data/audio (RAVDESS actors 21-24,
ESC-10 fold 5, held-out sms-tools clips) and ../shared/data/audio/speech/misc.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from vqcodec.coding import file_codec
from vqcodec.coding.frame_codec import FrameByFrameCodec
from vqcodec.io.audio import load_audio
from vqcodec.io.media import AUDIO_SUFFIXES
from vqcodec.pipelines.audio import encode_channel, model_input
from vqcodec.train.data import SHARED_AUDIO, default_audio_split
from vqcodec.zoo.registry import DEFAULT_AUDIO_MODEL, load_model


def clip_paths(args: list[str]) -> list[Path]:
    if not args:
        _, val = default_audio_split()
        misc = sorted(p for p in Path(SHARED_AUDIO, "speech/misc").iterdir()
                      if p.suffix.lower() in AUDIO_SUFFIXES)
        return val + misc
    out = []
    for a in map(Path, args):
        out += sorted(p for p in a.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES) \
            if a.is_dir() else [a]
    return out


def group_of(path: Path) -> str:
    """The clip's folder under the data root (ravdess, misc, sms_tools, esc10, ...)."""
    parts = path.parts
    for name in ("ravdess", "misc", "sms_tools", "esc10", "librosa"):
        if name in parts:
            return name
    return path.parent.name


@torch.no_grad()
def teacher_forced_bits(codec, indices: torch.Tensor, context: int) -> float:
    """-log2-likelihood of indices [C, S', F] under `codec`'s prior, chunk by chunk."""
    total = 0.0
    for chunk in indices.split(context, dim=2):
        total -= float(codec.forward(chunk).double().sum())
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--model", default=DEFAULT_AUDIO_MODEL)
    ap.add_argument("--float-model", default=None,
                    help="float model (same autoencoder) to compare the NLL against")
    args = ap.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(args.model)
    net, codec = loaded.model, file_codec(loaded.model)
    reference = None
    if args.float_model:
        float_net = load_model(args.float_model).model
        reference = FrameByFrameCodec(prior=float_net.prior)
    context = net.config.prior_context
    print(f"{loaded.name}: {'portable (integer)' if codec.portable else 'float'} tables")
    worst_gap, worst_bytes, failures, checked, seconds = 0.0, 0.0, 0, 0, 0.0
    bits = defaultdict(lambda: [0.0, 0.0])  # (group, stages) -> [this model's, float's]
    start = time.perf_counter()
    for path in clip_paths(args.paths):
        clip = load_audio(path)
        seconds += clip.seconds
        all_indices = torch.stack([encode_channel(net, model_input(ch, clip.sample_rate, net),
                                                  net.config.num_stages)
                                   for ch in clip.samples])  # [C, S, F]
        for n in loaded.qualities:
            indices = all_indices[:, :n]
            coded = codec.compress(indices)
            decoded = codec.decompress(coded.payload, indices.shape[0], n, indices.shape[2])
            exact = torch.equal(decoded, indices)
            gap = coded.payload_bits / coded.nll_bits - 1
            worst_gap = max(worst_gap, gap)
            worst_bytes = max(worst_bytes, (coded.payload_bits - coded.nll_bits) / 8)
            failures += not exact
            checked += 1
            if not exact:
                print(f"FAIL {path.name} {net.config.kbps(n):g} kbps: indices differ")
            if reference is not None:
                for group in (group_of(path), "all"):
                    bits[group, n][0] += coded.nll_bits
                    bits[group, n][1] += teacher_forced_bits(reference, indices, context)
    print(f"{checked} (clip, bitrate) pairs ({seconds / 60:.1f} min of audio, "
          f"{time.perf_counter() - start:.0f} s): {checked - failures} decoded to exactly the "
          f"encoder's indices; payload above NLL by at most {100 * worst_gap:.3f}% / "
          f"{worst_bytes:.1f} bytes")
    if reference is not None:
        print(f"\nNLL of {loaded.name} vs float prior of {args.float_model} (same indices):")
        print("group      | kbps | float kbit | this kbit | extra bits")
        for (group, n), (mine, ref) in sorted(bits.items(), key=lambda kv: (kv[0][0] == "all",
                                                                            kv[0])):
            print(f"{group:10s} | {net.config.kbps(n):4g} | {ref / 1e3:10.1f} | "
                  f"{mine / 1e3:9.1f} | {100 * (mine / ref - 1):+.3f}%")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
