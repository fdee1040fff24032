"""Pilot for issue 11: how fast does a nonlinear analysis/synthesis pair learn on this CPU?

A Ballé-style transform (four 5x5 stride-2 convs with GDN, mirrored by transposed convs with
inverse GDN: stride 16, as vqimage-v3's block transform) is trained end to end with additive
uniform noise as the quantization proxy and a per-channel logistic density as the rate
(bits of the rounded latents), loss = lambda * 255^2 * MSE + bpp, on random crops of the
training split. Every `--eval-minutes` it reports, on 8 BSDS500 test crops (256x256, never
trained on), the rate of the rounded latents under that density (ideal code length) and the
PSNR of their decode. With `--compare` it also codes the same crops with vqimage-v3i (its
prior's NLL) and WebP, so one point of the pilot can be placed against both.

This is a measurement, not a shipped model: the rate model is a simple factorized one, and a
codec would put the latents through the project's quantizer and context prior instead.

    python benchmarks/transform_pilot.py runs/pilot --minutes 75 --channels 96
    python benchmarks/transform_pilot.py runs/pilot --compare      # the comparison only
"""
from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vqcodec.eval.metrics import psnr
from vqcodec.train.data import (CropSampler, image_split, load_training_images,
                                validation_crops)


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016); `inverse` multiplies."""

    def __init__(self, channels: int, *, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta.abs() + 1e-6
        gamma = self.gamma.abs()[:, :, None, None]
        norm = torch.sqrt(F.conv2d(x * x, gamma, beta))
        return x * norm if self.inverse else x / norm


def analysis(n: int, m: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, n, 5, 2, 2), GDN(n), nn.Conv2d(n, n, 5, 2, 2), GDN(n),
                         nn.Conv2d(n, n, 5, 2, 2), GDN(n), nn.Conv2d(n, m, 5, 2, 2))


def synthesis(n: int, m: int) -> nn.Sequential:
    def up(i, o):
        return nn.ConvTranspose2d(i, o, 5, 2, 2, output_padding=1)
    return nn.Sequential(up(m, n), GDN(n, inverse=True), up(n, n), GDN(n, inverse=True),
                         up(n, n), GDN(n, inverse=True), up(n, 3))


class LogisticRate(nn.Module):
    """Bits of integer-rounded (or noisy) latents under a per-channel logistic density."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        mu, s = self.mean[:, None, None], self.log_scale.exp()[:, None, None]
        upper = torch.sigmoid((y + 0.5 - mu) / s)
        lower = torch.sigmoid((y - 0.5 - mu) / s)
        return -torch.log2((upper - lower).clamp_min(1e-9)).sum()


class Pilot(nn.Module):
    def __init__(self, n: int, m: int) -> None:
        super().__init__()
        self.g_a, self.g_s, self.rate = analysis(n, m), synthesis(n, m), LogisticRate(m)

    def forward(self, x: torch.Tensor, *, noise: bool) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.g_a(x)
        y = y + torch.empty_like(y).uniform_(-0.5, 0.5) if noise else torch.round(y)
        bits = self.rate(y)
        return self.g_s(y), bits


def mean_psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean per-crop PSNR of y (clamped to [0, 1]) against x, both 8-bit rounded."""
    return float(psnr(x, y.clamp(0, 1)).mean())


def evaluate(model: Pilot, crops: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        out, bits = model(crops, noise=False)
    model.train()
    return float(bits) / crops[:, 0].numel(), mean_psnr(crops, out)


def compare(crops: torch.Tensor) -> None:
    """v3i (its prior's NLL on the same crops) and WebP at a few settings."""
    from vqcodec.coding import rate_codec
    from vqcodec.zoo.registry import load_model
    loaded = load_model("vqimage-v3i", device=torch.device("cpu"))
    net = loaded.model
    pixels = crops[:, 0].numel()
    for q in (1, 3, 6, 9, 12):
        n, lam = loaded.rate_for_quality(q)
        with torch.no_grad():
            idx = net.encode(crops, n, lam)
            bits = -float(rate_codec(net).forward(idx).double().sum())
            out = net.decode(idx)
        print(f"vqimage-v3i q{q}: {bits / pixels:.4f} bpp, {mean_psnr(crops, out):.2f} dB", flush=True)
    for q in (5, 20, 40, 60, 80):
        size, total = 0, 0.0
        for crop in crops:
            im = Image.fromarray((crop.permute(1, 2, 0) * 255).round().byte().numpy())
            buf = io.BytesIO()
            im.save(buf, format="WEBP", quality=q)
            size += len(buf.getvalue())
            dec = torch.from_numpy(np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
            total += mean_psnr(crop[None], dec.permute(2, 0, 1)[None].float() / 255)
        print(f"webp q{q}: {8 * size / pixels:.4f} bpp, {total / len(crops):.2f} dB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--channels", type=int, default=96)
    ap.add_argument("--lmbda", type=float, default=0.0067, help="MSE weight (CompressAI's q3)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--eval-minutes", type=float, default=10)
    ap.add_argument("--compare", action="store_true")
    args = ap.parse_args()
    train, val = image_split([], [])
    crops = validation_crops(load_training_images(val), size=256, count=8)
    if args.compare:
        compare(crops)
        return
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    model = Pilot(args.channels, args.channels)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    state_path, step, cpu_s = run / "pilot.pt", 0, 0.0
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"]), opt.load_state_dict(state["opt"])
        step, cpu_s = state["step"], state["cpu_s"]
    sampler = CropSampler(load_training_images(train), args.crop, seed=step)
    log = open(run / "log.txt", "a")

    def note(text: str) -> None:
        print(text, flush=True)
        log.write(text + "\n")
        log.flush()

    start, cpu0, last_eval = time.perf_counter(), time.process_time(), time.perf_counter()
    while time.perf_counter() - start < 60 * args.minutes:
        x = sampler.batch(args.batch)
        out, bits = model(x, noise=True)
        bpp = bits / x[:, 0].numel()
        mse = F.mse_loss(out, x)
        loss = args.lmbda * 255 ** 2 * mse + bpp
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            note(f"step {step} train bpp {float(bpp):.4f} psnr {10 * math.log10(1 / float(mse)):.2f}")
        if time.perf_counter() - last_eval > 60 * args.eval_minutes:
            last_eval = time.perf_counter()
            val_bpp, val_psnr = evaluate(model, crops)
            total_cpu = cpu_s + time.process_time() - cpu0
            note(f"EVAL step {step} cpu {total_cpu:.0f}s val {val_bpp:.4f} bpp {val_psnr:.2f} dB")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "cpu_s": total_cpu}, state_path)
    val_bpp, val_psnr = evaluate(model, crops)
    total_cpu = cpu_s + time.process_time() - cpu0
    note(f"EVAL step {step} cpu {total_cpu:.0f}s val {val_bpp:.4f} bpp {val_psnr:.2f} dB")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "cpu_s": total_cpu}, state_path)


if __name__ == "__main__":
    main()
