"""The grouped, entropy-constrained quantizer and its codec (the vqimage-v3 design)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_image_codec import smooth_image
from vqcodec.format import unpack_container
from vqcodec.pipelines.image import compress_image, decompress_image, image_to_tensor
from vqcodec.coding.latent_codec import GroupedStageCodec
from vqcodec.nn.grouped_rvq import GroupedResidualQuantizer, train_codebooks
from vqcodec.nn.image_autoencoder import init_linear_path_from_pca
from vqcodec.nn.image_model import VQImageModel
from vqcodec.coding import latent_codec


def _codec(net: VQImageModel) -> GroupedStageCodec:
    return GroupedStageCodec(prior=net.prior, quantizer=net.quantizer)


@pytest.mark.parametrize("size", [(1, 1), (1, 17), (15, 1), (16, 16), (17, 33), (64, 40)])
@pytest.mark.parametrize("stages,rd_lambda", [(1, 0.0), (3, 0.0), (3, 0.05)])
def test_indices_round_trip_exactly(tiny_grouped_model, rng, size, stages, rd_lambda):
    net = tiny_grouped_model.model
    x = image_to_tensor(smooth_image(rng, *size), net.config.stride, torch.device("cpu"))
    indices = net.encode(x, stages, rd_lambda)[0]
    assert indices.shape[:2] == (stages, net.config.num_groups)
    coded = _codec(net).compress(indices)
    assert torch.equal(_codec(net).decompress(coded.payload, *indices.shape[:1],
                                              *indices.shape[2:]), indices)


def test_nll_matches_prior_forward(tiny_grouped_model, rng):
    net = tiny_grouped_model.model
    x = image_to_tensor(smooth_image(rng, 64, 48), net.config.stride, torch.device("cpu"))
    indices = net.encode(x, None, 0.01)
    coded = _codec(net).compress(indices[0])
    with torch.no_grad():
        forward_bits = -latent_codec(net).forward(indices).sum().item()
    assert coded.nll_bits == pytest.approx(forward_bits, rel=1e-4)
    assert coded.nll_bits <= coded.payload_bits <= coded.nll_bits * 1.02 + 64


def test_rate_weight_picks_zero_codes():
    """A larger rate weight makes the encoder choose the free zero code more often, and with
    weight 0 it picks the nearest code (squared error never grows)."""
    torch.manual_seed(0)
    q = GroupedResidualQuantizer(dim=8, num_stages=2, num_groups=4, num_codes=8)
    q.codebooks.copy_(torch.randn_like(q.codebooks))
    q.codebooks[:, :, 0] = 0
    q.code_bits.fill_(3.0)
    q.code_bits[:, :, 0] = 0.1
    z = torch.randn(2, 8, 5, 6)
    zeros = [(q.encode(z, rd_lambda=lam) == 0).float().mean().item() for lam in (0.0, 0.3, 30.0)]
    assert zeros[0] < zeros[1] < zeros[2] == 1.0
    err = [(z - q.decode(q.encode(z, n))).pow(2).sum().item() for n in (1, 2)]
    assert err[1] <= err[0] <= z.pow(2).sum().item()


def test_train_codebooks_reduces_error():
    torch.manual_seed(0)
    q = GroupedResidualQuantizer(dim=8, num_stages=2, num_groups=2, num_codes=16)
    x = torch.randn(2000, 8) * torch.linspace(2, 0.1, 8)
    train_codebooks(q, x, rd_lambda=0.05, iters=5)
    assert torch.all(q.codebooks[:, :, 0] == 0)
    z = x.T.reshape(1, 8, 40, 50)
    err = [(z - q.decode(q.encode(z, n, 0.05))).pow(2).mean().item() for n in (1, 2)]
    assert err[1] < err[0] < 0.5 * z.pow(2).mean().item()


def test_pca_only_autoencoder_is_orthonormal(rng):
    """With no conv path the model is the block PCA: decode(encode(x)) is the projection and
    latent squared error equals pixel squared error (x4, from the [-1, 1] scaling)."""
    from conftest import TINY_GROUPED_CONFIG
    net = VQImageModel(TINY_GROUPED_CONFIG).eval()
    imgs = torch.stack([image_to_tensor(smooth_image(rng, 64, 64), 16, torch.device("cpu"))[0]
                        for _ in range(4)])
    init_linear_path_from_pca(net.encoder, net.decoder, imgs)
    with torch.no_grad():
        z = net.encoder(imgs[:1])
        dz = torch.randn_like(z) * 0.01
        dx = net.decoder(z + dz) - net.decoder(z)
    assert (dx * 2).pow(2).sum().item() == pytest.approx(dz.pow(2).sum().item(), rel=1e-3)


@pytest.mark.parametrize("channels", [1, 3])
def test_compress_decompress_api(tiny_grouped_model, rng, channels):
    img = smooth_image(rng, 37, 53, channels)
    sizes = []
    for quality in (1, 2, 3, 4):
        result = compress_image(img, model=tiny_grouped_model, quality=quality, device="cpu")
        header, _ = unpack_container(result.data)
        assert header.num_stages == tiny_grouped_model.stages_for_quality(quality)
        out = decompress_image(result.data, model=tiny_grouped_model, device="cpu")
        assert out.shape == img.shape and out.dtype == np.uint8
        sizes.append(len(result.data))
    assert sizes[1] <= sizes[3] and sizes[2] <= sizes[3]  # a rate weight saves bits
