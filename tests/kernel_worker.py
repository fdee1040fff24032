"""Run by `test_exact_files.py` in a subprocess under chosen CPU kernels (environment
variables must be set before torch starts, hence a process of its own).

    python tests/kernel_worker.py OUT_DIR [REFERENCE_DIR] MODEL [MODEL ...]

For each model (one process for all: torch starts once), compresses the golden input of the
model's kind (`tests/golden/make_golden.py`) into OUT_DIR/<i>.vqc and reports SHA-256s: the
file, its indices, the count tables of coding them, the exact log2-likelihoods of a batch of
two, and (given REFERENCE_DIR, the OUT_DIR of a run elsewhere) the indices decoded from that
run's file, whose decoded output is saved as OUT_DIR/<i>.npy. Prints one JSON list.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
from make_golden import golden_inputs  # noqa: E402

from vqcodec.coding import file_codec  # noqa: E402
from vqcodec.format import read_header, unpack_container  # noqa: E402
from vqcodec.pipelines.audio import compress_audio, decompress_audio  # noqa: E402
from vqcodec.pipelines.file import decode_indices  # noqa: E402
from vqcodec.pipelines.image import compress_image, decompress_image  # noqa: E402
from vqcodec.zoo.registry import load_model  # noqa: E402


def sha(x) -> str:
    if isinstance(x, (bytes, bytearray)):
        return hashlib.sha256(x).hexdigest()
    if isinstance(x, list):
        return sha(b"".join(bytes.fromhex(sha(t)) for t in x))
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def indices_of(data: bytes, loaded) -> torch.Tensor:
    header, payload = unpack_container(data)
    if loaded.kind == "image":
        return decode_indices(header, loaded, payload, header.num_stages, *header.latent_shape)
    return decode_indices(header, loaded, payload, header.latent_shape[0], header.num_stages,
                          header.latent_shape[1])


def report(model: str, out: Path, reference: Path | None) -> dict:
    loaded = load_model(model)
    codec = file_codec(loaded.model)
    image, clip = golden_inputs()
    if loaded.kind == "image":
        data = compress_image(image, model=loaded, device="cpu").data
    else:
        data = compress_audio(clip, model=loaded, device="cpu").data
    indices = indices_of(data, loaded)
    # A batch of two: images [2, S', (G,) H, W]; audio [2C, S', F], at most one chunk long.
    if loaded.kind == "image":
        pair = torch.stack([indices, indices.flip(-1)])
    else:
        pair = torch.cat([indices, indices.flip(-1)])[..., :codec.prior.context]
    tables = codec.tables(indices, **({"context_stages": read_header(data).context_stages}
                                      if loaded.kind == "image" else {}))
    found = {"file": sha(data), "indices": sha(indices), "tables": sha(tables),
             "batch": sha(codec.forward(pair))}
    out.with_suffix(".vqc").write_bytes(data)
    if reference is not None:
        written = reference.with_suffix(".vqc").read_bytes()
        found["decoded_indices"] = sha(indices_of(written, loaded))
        if loaded.kind == "image":
            decoded = decompress_image(written, model=loaded, device="cpu")
        else:
            decoded = decompress_audio(written, model=loaded, device="cpu").samples
        np.save(out.with_suffix(".npy"), decoded)
    return found


def main() -> None:
    out = Path(sys.argv[1])
    reference = Path(sys.argv[2]) if sys.argv[2] != "-" else None
    models = sys.argv[3:]
    print(json.dumps([report(m, out / str(i), reference and reference / str(i))
                      for i, m in enumerate(models)]))


if __name__ == "__main__":
    main()
