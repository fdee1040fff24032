"""Warm starts of a wider grouped model (vqimage-v4) from a narrower one's prior and filter."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from vqcodec.coding import latent_codec
from vqcodec.errors import TrainingError
from vqcodec.nn.image_autoencoder import init_linear_path_from_pca
from vqcodec.nn.image_model import (GROUPED_RD_LAMBDAS, V4_RUN_CONFIG, ImageModelConfig,
                                    VQImageModel)
from vqcodec.train.image import transfer_decoder_filter, transfer_grouped_prior

from conftest import TINY_GROUPED_CONFIG, make_tiny_grouped_model


def _wider_pair(flip: list[int]) -> tuple[VQImageModel, VQImageModel]:
    """A tiny grouped donor (8 components, 4 groups) and a model of 16 components whose first
    8 are the donor's, the components in `flip` with the opposite sign, and whose first 4
    groups' codebooks are the donor's (sign-flipped likewise)."""
    donor = make_tiny_grouped_model(seed=1)
    images = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    init_linear_path_from_pca(donor.encoder, donor.decoder, images)
    ae = dataclasses.replace(TINY_GROUPED_CONFIG.autoencoder, latent_dim=16)
    model = VQImageModel(dataclasses.replace(TINY_GROUPED_CONFIG, autoencoder=ae, num_groups=8))
    init_linear_path_from_pca(model.encoder, model.decoder, images)
    sign = torch.ones(8)
    sign[flip] = -1
    with torch.no_grad():
        # Same crops, same PCA; eigenvector signs are arbitrary, so force the test's.
        ref = donor.encoder.linear.weight.flatten(1)
        ours = model.encoder.linear.weight.flatten(1)[:8]
        own = torch.sign((ours * ref).sum(1))
        model.encoder.linear.weight[:8] *= (own * sign)[:, None, None, None]
        model.encoder.linear.bias[:8] *= own * sign
        q = model.quantizer
        q.codebooks.copy_(torch.randn_like(q.codebooks) * 0.3)
        q.codebooks[:, :, 0] = 0
        q.codebooks[:, :4] = donor.quantizer.codebooks * sign.view(4, 2)[None, :, None, :]
        q.code_bits.copy_(torch.rand_like(q.code_bits) * 4)
    return donor.eval(), model.eval()


def test_transferred_prior_scores_the_shared_groups_as_the_donor():
    donor, model = _wider_pair(flip=[1, 6])
    assert transfer_grouped_prior(model, donor) == 8
    g = torch.Generator().manual_seed(0)
    indices = torch.randint(0, 8, (1, 3, 8, 4, 4), generator=g)
    ours = latent_codec(model).forward(indices)
    theirs = latent_codec(donor).forward(indices[:, :, :4])
    # New groups have no effect on the shared ones at first; the shared ones match exactly
    # up to float rounding.
    torch.testing.assert_close(ours[:, :, :4], theirs, atol=1e-4, rtol=1e-4)
    # The new groups start at their codebooks' static rates.
    log2_static = torch.log_softmax(-model.quantizer.code_bits[:, 4:] * math.log(2), -1) / math.log(2)
    static = log2_static.gather(-1, indices[0, :, 4:].flatten(2)).view(3, 4, 4, 4)
    torch.testing.assert_close(ours[0, :, 4:], static, atol=1e-4, rtol=1e-4)


def test_transferred_filter_sees_the_shared_components_only():
    donor, model = _wider_pair(flip=[0])
    transfer_decoder_filter(model, donor)
    z = torch.randn(1, 16, 2, 2)
    z_old = z[:, :8].clone()
    z_old[:, 0] *= -1
    with torch.no_grad():
        torch.testing.assert_close(model.decoder.net(z), donor.decoder.net(z_old),
                                   atol=1e-5, rtol=1e-5)


def test_transfer_refuses_a_donor_of_another_shape():
    donor, _ = _wider_pair(flip=[])
    other = VQImageModel(dataclasses.replace(TINY_GROUPED_CONFIG, num_codes=16))
    with pytest.raises(TrainingError):
        transfer_grouped_prior(other, donor)


def test_ladder_lives_in_the_config():
    assert ImageModelConfig().quality_lambdas == GROUPED_RD_LAMBDAS
    d = V4_RUN_CONFIG.to_dict()
    again = ImageModelConfig.from_dict(d)
    assert again == V4_RUN_CONFIG and len(again.quality_lambdas) == 14
