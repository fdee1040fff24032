"""Remake the golden files of the current format version: for every shipped model, a 64x48
crop of `examples/kodim23.png` at qualities 1, 6 and 12 and the refined quality 16 (images;
format version 8, the others 5) or the first 2 s of
`examples/speech-female.flac` at 1.5 and 6 kbps (audio); each as the `.vqc` file, the SHA-256
of its indices and the decoded output. Files of an earlier format version stay in the manifest
as they are (`{model}-{setting}.vqc`: version 2; later ones `{model}-{setting}-v{N}.vqc`),
so the files earlier vqcodec versions wrote stay tested.

    python tests/golden/make_golden.py

Only remake them on purpose (a new shipped model or a new format version): `test_golden.py`
decodes them on whatever machine CI runs on, which is the point.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from vqcodec.io.audio import save_audio
from vqcodec.io.image import save_image
from vqcodec.pipelines.audio import compress_audio, decompress_audio
from vqcodec.pipelines.image import compress_image, decompress_image
from vqcodec.zoo.registry import load_model, shipped_models

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent.parent / "examples"
IMAGE_QUALITIES = (1, 6, 12)
REFINED_QUALITIES = (16,)  # past the ladder: written as version 8
AUDIO_KBPS = (1.5, 6.0)


def golden_inputs() -> tuple[np.ndarray, tuple[np.ndarray, int]]:
    image = np.asarray(Image.open(EXAMPLES / "kodim23.png").convert("RGB"))[100:148, 96:160]
    samples, rate = soundfile.read(EXAMPLES / "speech-female.flac", dtype="float32",
                                   always_2d=True)
    return np.ascontiguousarray(image), (np.ascontiguousarray(samples[:2 * rate].T), rate)


def main() -> None:
    from vqcodec.format import stage_payload, unpack_container
    from vqcodec.pipelines.file import decode_indices
    import hashlib

    image, clip = golden_inputs()
    old = json.loads((HERE / "manifest.json").read_text()) if (HERE / "manifest.json").exists() else {}
    # Every file written before stays (each version's reader is checked on its files); the
    # files written now replace those of the same name.
    manifest = dict(old)
    for name in shipped_models():
        loaded = load_model(name)
        if loaded.kind == "image":
            settings = [(f"q{q}", dict(quality=min(q, loaded.ladder_qualities)))
                        for q in IMAGE_QUALITIES]
            settings += [(f"q{q}", dict(quality=q)) for q in REFINED_QUALITIES
                         if q <= loaded.num_qualities]
        else:
            settings = [(f"{k:g}kbps", dict(bitrate=k)) for k in AUDIO_KBPS]
        for label, kwargs in settings:
            if loaded.kind == "image":
                data = compress_image(image, model=loaded, device="cpu", **kwargs).data
                stem = f"{name}-{label}-v{data[4]}"
                decoded = f"{stem}.png"
                save_image(decompress_image(data, model=loaded, device="cpu"), HERE / decoded)
            else:
                data = compress_audio(clip, model=loaded, device="cpu", **kwargs).data
                stem = f"{name}-{label}-v{data[4]}"
                decoded = f"{stem}.flac"
                save_audio(HERE / decoded, decompress_audio(data, model=loaded, device="cpu"))
            (HERE / f"{stem}.vqc").write_bytes(data)
            header, payload = unpack_container(data)
            shape = ((header.num_stages, *header.latent_shape) if loaded.kind == "image" else
                     (header.latent_shape[0], header.num_stages, header.latent_shape[1]))
            indices = decode_indices(header, loaded, stage_payload(header, payload), *shape)
            manifest[f"{stem}.vqc"] = {
                "model": name, "setting": label, "decoded": decoded,
                "version": data[4],
                "indices_sha256": hashlib.sha256(
                    np.ascontiguousarray(indices.numpy(), dtype="<i4").tobytes()).hexdigest()}
            print(stem, len(data), "bytes")
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
