"""Rate-distortion and speed of a vqcodec image model on Kodak, with real files.

Every image is compressed and decompressed for real at every quality (no shortcut through the
prior's NLL); bpp = payload bits / pixels as CompressAI reports it, file bpp includes the
container. PSNR on 8-bit RGB, averaged per image. JPEG and WebP are CompressAI's published
Kodak curves, interpolated at our bpp.

    python benchmarks/kodak_rd.py ../shared/data/images/kodak --out results/kodak
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vqcodec.codec.image_codec import compress_image, decompress_image
from vqcodec.codec.image_io import load_image
from vqcodec.models.registry import DEFAULT_IMAGE_MODEL, load_model


def psnr_rgb(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def interpolate_reference(path: Path, bpp: float) -> float | None:
    if not path.exists():
        return None
    r = json.loads(path.read_text())["results"]
    x, y = np.array(r["bpp"]), np.array(r["psnr-rgb"])
    order = np.argsort(x)
    x, y = x[order], y[order]
    return float(np.interp(bpp, x, y)) if x[0] <= bpp <= x[-1] else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--qualities", default=None, help="comma list (default: all)")
    ap.add_argument("--reference", default="../shared/data/compressai-kodak")
    ap.add_argument("--out", default="results/kodak")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    qualities = ([int(q) for q in args.qualities.split(",")] if args.qualities
                 else list(range(1, len(model.qualities) + 1)))
    paths = sorted(p for p in Path(args.folder).iterdir() if p.suffix.lower() == ".png")
    images = [load_image(p) for p in paths]
    compress_image(images[0][:64, :64], model=model, quality=1, device="cpu")  # warm-up
    rows = []
    for q in qualities:
        per = []
        for path, img in zip(paths, images):
            res = compress_image(img, model=model, quality=q, device="cpu")
            t0 = time.perf_counter()
            out = decompress_image(res.data, model=model, device="cpu")
            dec_s = time.perf_counter() - t0
            pixels = img.shape[0] * img.shape[1]
            per.append({"image": path.name, "bpp": res.payload_bpp, "file-bpp": res.bpp,
                        "nll-bpp": res.nll_bits / pixels, "psnr-rgb": psnr_rgb(out, img),
                        "encoding_time": res.seconds, "decoding_time": dec_s,
                        "gap": res.payload_bytes * 8 / res.nll_bits - 1})
        row = {k: float(np.mean([p[k] for p in per])) for k in per[0] if k != "image"}
        row.update(quality=q, stages=model.stages_for_quality(q),
                   max_gap=max(p["gap"] for p in per))
        ref = Path(args.reference)
        row["jpeg-psnr@bpp"] = interpolate_reference(ref / "jpeg.json", row["bpp"])
        row["webp-psnr@bpp"] = interpolate_reference(ref / "webp.json", row["bpp"])
        rows.append(row)
        print(f"q{q} stages {row['stages']:2d}: {row['bpp']:.4f} bpp (file {row['file-bpp']:.4f}, "
              f"nll {row['nll-bpp']:.4f}, max gap {100 * row['max_gap']:.2f}%) "
              f"PSNR {row['psnr-rgb']:.2f} dB | JPEG {row['jpeg-psnr@bpp']} WebP "
              f"{row['webp-psnr@bpp']} | enc {row['encoding_time']:.2f}s dec "
              f"{row['decoding_time']:.2f}s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"name": model.name, "description": f"vqcodec {model.name} on {args.folder}",
              "results": {k: [r[k] for r in rows] for k in
                          ("bpp", "psnr-rgb", "encoding_time", "decoding_time", "nll-bpp",
                           "file-bpp", "quality", "stages")}}
    (out / f"{model.name}.json").write_text(json.dumps(result, indent=2))
    lines = ["| quality | stages | bpp | file bpp | NLL bpp | max gap | PSNR (dB) | JPEG at same bpp "
             "| WebP at same bpp | encode (s) | decode (s) |", "|" + "---|" * 11]
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['quality']} | {r['stages']} | {r['bpp']:.3f} | {r['file-bpp']:.3f} | "
                     f"{r['nll-bpp']:.3f} | {100 * r['max_gap']:.2f}% | {r['psnr-rgb']:.2f} | "
                     f"{fmt(r['jpeg-psnr@bpp'])} | {fmt(r['webp-psnr@bpp'])} | "
                     f"{r['encoding_time']:.2f} | {r['decoding_time']:.2f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
