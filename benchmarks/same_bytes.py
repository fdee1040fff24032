"""SHA-256 of `examples/kodim23.png` compressed at every quality of every shipped image model
and `examples/speech-female.flac` at every bitrate of every shipped audio model.

Each line ends with the SHA-256 of the whole file and of its payload (the range-coder stream)
alone; the payload column stays comparable across container format versions.

Run before and after a change that must not change the bytes, and compare the two outputs:

    python benchmarks/same_bytes.py > before.txt   # ... change ...
    python benchmarks/same_bytes.py | diff before.txt -
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

import vqcodec
from vqcodec.format import unpack_container

try:  # the zoo's home moved in the layout refactor; this script reads both
    from vqcodec.zoo import load_model, shipped_models
except ImportError:  # pragma: no cover
    from vqcodec.zoo.registry import load_model, shipped_models

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def digests(data: bytes) -> str:
    payload = unpack_container(data)[1]
    payload = payload if isinstance(payload, bytes) else b"".join(payload)  # v3: the chunks
    return f"{hashlib.sha256(data).hexdigest()} payload {hashlib.sha256(payload).hexdigest()}"


def main() -> None:
    image = np.asarray(Image.open(EXAMPLES / "kodim23.png").convert("RGB"))
    samples, rate = soundfile.read(EXAMPLES / "speech-female.flac", dtype="float32",
                                   always_2d=True)
    samples = samples.T
    for name in shipped_models():
        loaded = load_model(name)
        if loaded.kind == "image":
            for q in range(1, loaded.num_qualities + 1):
                data = vqcodec.compress(image, quality=q, model=name, device="cpu")
                print(f"kodim23.png {name} q{q} {digests(data)}", flush=True)
        else:
            config = loaded.model.config
            for stages in loaded.qualities:
                n = stages[0] if isinstance(stages, list) else stages
                kbps = config.kbps(int(n))
                data = vqcodec.compress_audio(samples, rate, bitrate=kbps, model=name,
                                              device="cpu")
                print(f"speech-female.flac {name} {kbps:g}kbps {digests(data)}", flush=True)


if __name__ == "__main__":
    main()
