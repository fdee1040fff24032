"""Encoder-side experiment: choose each pass's codes by squared error + lambda x their bits
under the context prior's actual tables (greedy, in the codec's own walk order), instead of
under the codebooks' static training rates. The decoder is unchanged: any indices decode.

For a subset of images it reports, per quality, the mean rate (the prior's NLL) and PSNR of
both choices, and the BD-rate of the context choice against the static one.

    python benchmarks/context_rdo.py ../shared/data/images/kodak --every 4 --qualities 1 3 6 9 12
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from vqcodec.coding import file_codec
from vqcodec.eval.bd_rate import bd_rate
from vqcodec.io.image import load_image
from vqcodec.io.media import list_media
from vqcodec.pipelines.image import image_to_tensor, to_8bit
from vqcodec.zoo.registry import load_model


def context_choice(codec, latents: torch.Tensor, rd_lambda: float, num_stages: int):
    """(indices [R', G, H, W], NLL bits) of latents [1, D, H, W] chosen pass by pass with the
    prior's tables as the rate term."""
    quantizer = codec.quantizer
    groups, group_dim = quantizer.num_groups, quantizer.group_dim
    _, _, height, width = latents.shape
    residual = latents[0].permute(1, 2, 0).reshape(height, width, groups, group_dim).double()
    books = quantizer.codebooks.double()
    book_sq = books.pow(2).sum(-1)  # [R, G, K]
    nll = 0.0

    def code_pass(stage, window, mask, counts, table):
        nonlocal nll
        mask = mask.cpu()
        part = residual[window][mask]  # [n, G, d]
        dist = (part.pow(2).sum(-1, keepdim=True)
                - 2 * torch.einsum("ngd,gkd->ngk", part, books[stage]) + book_sq[stage][None])
        bits = torch.from_numpy(-np.log2(table)).view(len(part), groups, -1)
        choice = (dist + rd_lambda * bits).argmin(-1)  # [n, G]
        view = residual[window]
        view[mask] = part - books[stage][torch.arange(groups), choice]
        symbols = choice.reshape(-1).numpy()
        nll += float(-np.log2(table[np.arange(len(symbols)), symbols]).sum())
        return symbols

    return codec._walk(num_stages, height, width, code_pass), nll


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--model", default="vqimage-v3i")
    ap.add_argument("--every", type=int, default=4, help="every N-th image of the folder")
    ap.add_argument("--qualities", type=int, nargs="+", default=[1, 3, 6, 9, 12])
    args = ap.parse_args()
    loaded = load_model(args.model, device=torch.device("cpu"))
    net, codec = loaded.model, file_codec(loaded.model)
    files = list_media(args.folder, "image")[::args.every]
    sums = {key: {q: [0.0, 0.0] for q in args.qualities} for key in ("static", "context")}
    for path in files:
        array = load_image(path)
        reference = torch.from_numpy(array).permute(2, 0, 1).float()
        pixels = array.shape[0] * array.shape[1]
        with torch.no_grad():
            latents = net.encoder(image_to_tensor(array, net.config.stride, torch.device("cpu")))
        for q in args.qualities:
            stages, rd_lambda = loaded.rate_for_quality(q)
            static = net.quantizer.encode(latents, stages, rd_lambda)
            static_bits = float(-codec.forward(static).double().sum())
            chosen, chosen_bits = context_choice(codec, latents, rd_lambda, stages)
            for key, indices, bits in (("static", static, static_bits),
                                       ("context", chosen[None], chosen_bits)):
                out = to_8bit(net.decode(indices))[0, :, :array.shape[0], :array.shape[1]]
                mse = float((out.float() - reference).pow(2).mean())
                sums[key][q][0] += bits / pixels
                sums[key][q][1] += 10 * math.log10(255 ** 2 / mse)
        print(f"{path.name} done", flush=True)
    curves = {key: ([v[0] / len(files) for v in per_q.values()],
                    [v[1] / len(files) for v in per_q.values()]) for key, per_q in sums.items()}
    print("| quality | static bpp | static dB | context bpp | context dB |")
    print("|---|---|---|---|---|")
    for i, q in enumerate(args.qualities):
        print(f"| {q} | {curves['static'][0][i]:.4f} | {curves['static'][1][i]:.2f} "
              f"| {curves['context'][0][i]:.4f} | {curves['context'][1][i]:.2f} |")
    print(f"BD-rate, context choice vs static: {bd_rate(*curves['static'], *curves['context']):+.2f} %")


if __name__ == "__main__":
    main()
