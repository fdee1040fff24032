"""Where the bits and the error go in a grouped image model (issue 11's "measure first").

For each image and quality it reports:
- the rate per round and per group under the context prior, and the same indices' static
  (0th-order) rate under the codebooks' training frequencies, i.e. what the context saves;
- the distortion of the transform alone (unquantized latents through the decoder, with and
  without the post-filter) against the distortion at each quality;
- the squared error on pixels next to a block edge against the interior.

Usage:
    python benchmarks/image_breakdown.py ../shared/data/images/kodak --qualities 1 6 12
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from vqcodec.coding import latent_codec
from vqcodec.io.image import load_image
from vqcodec.io.media import list_media
from vqcodec.pipelines.image import image_to_tensor
from vqcodec.zoo.registry import load_model


def psnr(mse: float) -> float:
    return 10 * math.log10(1 / mse) if mse > 0 else float("inf")


def edge_mask(h: int, w: int, stride: int) -> torch.Tensor:
    """True on the two pixel rows/columns at each side of a block edge."""
    ii = torch.arange(h) % stride
    jj = torch.arange(w) % stride
    near_i = (ii == 0) | (ii == stride - 1)
    near_j = (jj == 0) | (jj == stride - 1)
    return near_i[:, None] | near_j[None, :]


def add_distortion(acc: dict, net, latent: torch.Tensor, x: torch.Tensor,
                   edges: torch.Tensor, weight: float) -> None:
    """Add weight x the MSEs of `latent` decoded (with and without the post-filter, on block
    edge pixels and the interior) to acc's mse, mse_nofilter, edge and interior."""
    full = net.decoder(latent).clamp(0, 1)
    nof = ((net.decoder.linear(latent) + 1) / 2).clamp(0, 1)
    err = (full - x).pow(2).mean(1)[0]
    acc["mse"] += err.mean().item() * weight
    acc["mse_nofilter"] += (nof - x).pow(2).mean().item() * weight
    acc["edge"] += err[edges].mean().item() * weight
    acc["interior"] += err[~edges].mean().item() * weight


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--model", default="vqimage-v3i")
    ap.add_argument("--qualities", type=int, nargs="+", default=[1, 6, 12])
    ap.add_argument("--limit", type=int, default=0, help="first N images only")
    ap.add_argument("--json", help="write the totals here")
    args = ap.parse_args()
    torch.set_num_threads(2)

    loaded = load_model(args.model)
    net = loaded.model.eval()
    codec = latent_codec(net)  # the float prior: teacher-forced per-symbol likelihoods
    q = net.quantizer
    stride = net.config.stride
    files = list_media(Path(args.folder), "image")
    if args.limit:
        files = files[: args.limit]

    r, g = q.num_stages, q.num_groups
    tot = {k: {"ctx": np.zeros((r, g)), "static": np.zeros((r, g)), "zero_frac": np.zeros((r, g)),
               "mse": 0.0, "mse_nofilter": 0.0, "edge": 0.0, "interior": 0.0}
           for k in args.qualities}
    transform = {"mse": 0.0, "mse_nofilter": 0.0, "edge": 0.0, "interior": 0.0}
    for f in files:
        x = image_to_tensor(load_image(f), stride, torch.device("cpu"))
        h, w = x.shape[-2:]
        n_pix = h * w
        em = edge_mask(h, w, stride)
        with torch.no_grad():
            add_distortion(transform, net, net.encoder(x), x, em, 1 / len(files))
            for quality in args.qualities:
                stages, rd_lambda = loaded.rate_for_quality(quality)
                idx = net.encode(x, stages, rd_lambda)
                log2p = codec.forward(idx)[0]  # [R, G, H, W]
                t = tot[quality]
                t["ctx"] += -log2p.sum((-1, -2)).numpy() / n_pix
                bits = q.code_bits  # [R, G, K]
                st = bits.gather(2, idx[0].flatten(2)).sum(-1).numpy()
                t["static"] += st / n_pix
                t["zero_frac"] += (idx[0] == 0).float().mean((-1, -2)).numpy() / len(files)
                add_distortion(t, net, q.decode(idx), x, em, 1 / len(files))
        print(f"{f.name} done", file=sys.stderr, flush=True)

    n = len(files)
    print(f"# {args.model} on {n} images of {args.folder}")
    print("\n## Transform alone (unquantized latents)")
    print(f"PSNR of mean MSE: with post-filter {psnr(transform['mse']):.2f} dB, inverse "
          f"transform only {psnr(transform['mse_nofilter']):.2f} dB; edge pixels "
          f"{psnr(transform['edge']):.2f} dB, interior {psnr(transform['interior']):.2f} dB")
    out = {"transform": transform, "qualities": {}}
    for quality in args.qualities:
        t = tot[quality]
        ctx, st = t["ctx"] / n, t["static"] / n
        print(f"\n## Quality {quality}")
        print(f"rate: context {ctx.sum():.4f} bpp, static (0th order) {st.sum():.4f} bpp, "
              f"context saves {100 * (1 - ctx.sum() / st.sum()):.1f} %")
        print(f"PSNR of mean MSE {psnr(t['mse']):.2f} dB (no post-filter {psnr(t['mse_nofilter']):.2f}); "
              f"edge {psnr(t['edge']):.2f} dB, interior {psnr(t['interior']):.2f} dB")
        print("| round | ctx bpp | static bpp | saved | share of rate | code-0 share |")
        print("|---|---|---|---|---|---|")
        for s in range(r):
            print(f"| {s} | {ctx[s].sum():.4f} | {st[s].sum():.4f} | "
                  f"{100 * (1 - ctx[s].sum() / max(st[s].sum(), 1e-12)):.1f} % | "
                  f"{100 * ctx[s].sum() / ctx.sum():.1f} % | {100 * t['zero_frac'][s].mean():.1f} % |")
        print("per group (all rounds), ctx bpp: " + " ".join(f"{v:.4f}" for v in ctx.sum(0)))
        out["qualities"][quality] = {"ctx_bpp": ctx.tolist(), "static_bpp": st.tolist(),
                                     "mse": t["mse"], "mse_nofilter": t["mse_nofilter"],
                                     "edge_mse": t["edge"], "interior_mse": t["interior"]}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
