"""Held-out cross-kernel check through the CLI: is a file portable between machines?

One box stands in for several machines by choosing other CPU kernels. For a photo and a clip:
encode under each of 5 kernel settings, decode every such file under the default kernels, and
decode the default file under every setting: 10 decodes per input. A decode is broken when it
fails or its output differs from the default decode by more than 1 level of 8 bits (pixels) or
4 steps of 16 bits (samples); the decoder networks stay float, so a level of rounding is normal.

    python benchmarks/cross_kernel_check.py PHOTO CLIP [--model-image M] [--model-audio M]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

SETTINGS = {
    "default": {},
    "sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "1-thread": {"OMP_NUM_THREADS": "1"},
    "2-threads": {"OMP_NUM_THREADS": "2"},
}


def vqcodec(env: dict, *args: str) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-m", "vqcodec.cli.main", *args], env=full,
                          capture_output=True, text=True)


def load(path: Path) -> np.ndarray:
    if path.suffix == ".png":
        return np.asarray(Image.open(path)).astype(np.float64)
    return soundfile.read(path, dtype="float64")[0] * 32768


def check(source: Path, out_suffix: str, tolerance: float, model: str | None,
          work: Path) -> int:
    extra = ["--model", model] if model else []
    files = {}
    for name, env in SETTINGS.items():
        path = work / f"{source.stem}-{name}.vqc"
        result = vqcodec(env, "compress", str(source), str(path), "--device", "cpu", *extra)
        if result.returncode:
            print(f"  encode under {name} failed: {result.stderr.strip()}")
            continue
        files[name] = path
    digests = {n: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for n, p in files.items()}
    print(f"  encodes: {len(set(digests.values()))} distinct file(s) over {len(files)} settings")
    reference = work / f"{source.stem}-reference{out_suffix}"
    vqcodec({}, "decompress", str(files["default"]), str(reference))
    want = load(reference)
    broken = 0
    jobs = [(n, {}, files[n]) for n in files] + [(n, SETTINGS[n], files["default"])
                                                for n in SETTINGS]
    for name, env, path in jobs:
        out = work / f"{path.stem}-under-{'default' if not env else name}{out_suffix}"
        result = vqcodec(env, "decompress", str(path), str(out))
        if result.returncode:
            broken += 1
            print(f"  BROKEN {path.name} under {env or 'default'}: {result.stderr.strip()}")
            continue
        diff = float(np.abs(load(out) - want).max())
        status = "ok" if diff <= tolerance else "BROKEN"
        broken += status == "BROKEN"
        print(f"  {status:6s} {path.name} decoded under {'default' if not env else name}: "
              f"max difference {diff:g}")
    print(f"  {broken} of {len(jobs)} decodes broken")
    return broken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--model-image")
    parser.add_argument("--model-audio")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"photo {args.photo}:")
        broken = check(args.photo, ".png", 1, args.model_image, Path(tmp))
        print(f"clip {args.clip}:")
        broken += check(args.clip, ".wav", 4.5, args.model_audio, Path(tmp))
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()
