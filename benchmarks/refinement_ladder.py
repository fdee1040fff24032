"""Where the refinement should take over from the quantizer: every n-th photo of a folder at
the quantizer's qualities and refined over the refined qualities' base picture (the stages of
a refined file) at each step, deblocked (format version 7) and restored (version 8); mean file
bpp, PSNR-RGB and MS-SSIM per point, to compare at equal bpp.

    python benchmarks/refinement_ladder.py ../shared/data/images/bsds500/test --every 16
        [--qualities 4,5,6,7,8,9] [--steps 80,72,64,60,56,52,48,40,32,26,21,17,14]

Session 15 chose quality 10's step with this on the BSDS500 test (every 16th) and validation
(every 8th) photos, when that base was all 6 stages of quality 3 (3 since session 16); the
filter's gains per step are the restored minus the deblocked rows.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from vqcodec.coding.refinement import encode_refinement
from vqcodec.eval.metrics import image_distortion, image_levels
from vqcodec.format import unpack_container
from vqcodec.io.image import as_rgb, load_image
from vqcodec.io.media import list_media
from vqcodec.pipelines.image import compress_image, decompress_image, restore_refined
from vqcodec.zoo.registry import DEFAULT_IMAGE_MODEL, load_model

CHUNK_OVERHEAD_BYTES = 8 + 2  # a chunk's length and CRC32, and the header's step field


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--every", type=int, default=16)
    ap.add_argument("--qualities", default="4,5,6,7,8,9")
    ap.add_argument("--steps", default="80,72,64,60,56,52,48,40,32,26,21,17,14")
    args = ap.parse_args()
    loaded = load_model(DEFAULT_IMAGE_MODEL)
    cpu = torch.device("cpu")
    rows: dict[str, list[tuple[float, float, float]]] = {}

    def add(key: str, num_bytes: int, original: np.ndarray, decoded: np.ndarray) -> None:
        d = image_distortion(image_levels(original)[None], image_levels(decoded)[None])
        rows.setdefault(key, []).append((8 * num_bytes / original.shape[0] / original.shape[1],
                                         float(d["psnr-rgb"][0]), float(d["ms-ssim-rgb"][0])))

    for path in list_media(args.folder, "image")[::args.every]:
        image = as_rgb(load_image(path))
        for q in map(int, args.qualities.split(",")):
            data = compress_image(image, model=loaded, quality=q, device="cpu").data
            add(f"quality {q}", len(data), image, decompress_image(data, model=loaded))
        # The base: a refined file's stages, and their bytes without the refinement's chunk.
        first = compress_image(image, model=loaded, quality=loaded.ladder_qualities + 1)
        base = decompress_image(first.data, model=loaded, stages=first.header.num_stages)
        chunk = unpack_container(first.data)[1][-1]
        base_bytes = len(first.data) - len(chunk) - CHUNK_OVERHEAD_BYTES
        for step in map(float, args.steps.split(",")):
            stream, _, refined = encode_refinement(image, base, step)
            size = base_bytes + len(stream) + CHUNK_OVERHEAD_BYTES
            add(f"step {step:g} deblocked", size, image, refined)
            add(f"step {step:g} restored", size, image,
                restore_refined(refined, base, step, cpu))
        print(path.name, flush=True)
    for key, values in rows.items():
        v = np.array(values)
        print(f"{key:22s} bpp {v[:, 0].mean():.4f}  PSNR {v[:, 1].mean():.3f} dB  "
              f"MS-SSIM {v[:, 2].mean():.5f}")


if __name__ == "__main__":
    main()
