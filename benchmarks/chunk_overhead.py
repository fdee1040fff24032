"""What one chunk per stage (format version 3) costs against one stream (version 2), and what
a decode from the first r stages gives, on Kodak images with the default image model.

For each image and quality the indices are encoded once, then coded both ways; the file sizes
are exact (`pack_container` of each), so the difference is the per-chunk flushes of the range
coder plus the container's per-chunk length and CRC (8 bytes) and header CRC.

    python benchmarks/chunk_overhead.py ../shared/data/images/kodak/kodim0{1,4}.png
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from PIL import Image

from vqcodec.coding import file_codec
from vqcodec.format import pack_container, unpack_container
from vqcodec.pipelines.image import compress_image, decompress_image
from vqcodec.zoo.registry import DEFAULT_IMAGE_MODEL, load_model


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255 ** 2 / mse))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--qualities", default="1,6,12")
    parser.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    args = parser.parse_args()
    loaded = load_model(args.model, device=torch.device("cpu"))
    codec = file_codec(loaded.model)
    print("image quality stages v2-bytes v3-bytes extra-bytes v2-bpp v3-bpp extra-% "
          "psnr-by-stages(dB) seconds")
    for path in args.images:
        image = np.asarray(Image.open(path).convert("RGB"))
        pixels = image.shape[0] * image.shape[1]
        for quality in map(int, args.qualities.split(",")):
            start = time.perf_counter()
            v3 = compress_image(image, model=loaded, quality=quality, device="cpu")
            header, data = v3.header, v3.data
            indices_shape = (header.num_stages, *header.latent_shape)
            # The same indices in one stream, as version 2 wrote them.
            indices = codec.decompress(unpack_container(data)[1], *indices_shape)
            one_stream = codec.compress(indices).payload
            v2 = pack_container(dataclasses.replace(header, version=2, num_chunks=1), one_stream)
            by_stage = [psnr(image, decompress_image(data, model=loaded, device="cpu",
                                                     stages=r))
                        for r in range(1, header.num_stages + 1)]
            extra = len(data) - len(v2)
            print(f"{path.rsplit('/', 1)[-1]} {quality} {header.num_stages} {len(v2)} {len(data)} "
                  f"{extra} {8 * len(v2) / pixels:.4f} {8 * len(data) / pixels:.4f} "
                  f"{100 * extra / len(v2):.2f} {'/'.join(f'{p:.2f}' for p in by_stage)} "
                  f"{time.perf_counter() - start:.1f}", flush=True)


if __name__ == "__main__":
    main()
