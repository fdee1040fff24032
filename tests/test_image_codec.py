"""End-to-end image coding with a tiny random model: exact index round trips at many sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vqcodec.format import ContainerError, unpack_container
from vqcodec.pipelines.image import (image_to_tensor, compress_image, decompress_image)
from vqcodec.coding.latent_codec import StageByStageCodec
from vqcodec.zoo.registry import ModelError
from vqcodec.coding import latent_codec


def smooth_image(rng, h, w, channels=3):
    """A photo-like test image: smooth gradients plus a little noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 5.0)[..., None] * np.ones(channels)
    img = base + rng.normal(0, 8, (h, w, channels))
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img[..., 0] if channels == 1 else img


@pytest.mark.parametrize("size", [(1, 1), (1, 17), (15, 1), (16, 16), (17, 33), (31, 47), (64, 40)])
@pytest.mark.parametrize("stages", [1, 4])
def test_indices_round_trip_exactly(tiny_model, rng, size, stages):
    net = tiny_model.model
    img = smooth_image(rng, *size)
    x = image_to_tensor(img, net.config.stride, torch.device("cpu"))
    indices = net.encode(x, stages)[0]
    codec = StageByStageCodec(prior=net.prior, quantizer=net.quantizer)
    coded = codec.compress(indices)
    decoded = codec.decompress(coded.payload, stages, *indices.shape[1:])
    assert torch.equal(decoded, indices)


def test_payload_close_to_nll(tiny_model, rng):
    net = tiny_model.model
    x = image_to_tensor(smooth_image(rng, 128, 96), net.config.stride, torch.device("cpu"))
    indices = net.encode(x)[0]
    coded = StageByStageCodec(prior=net.prior, quantizer=net.quantizer).compress(indices)
    # Small streams pay for the coder's final words; the bound is loose on tiny inputs.
    assert coded.nll_bits <= coded.payload_bits <= coded.nll_bits * 1.02 + 64


def test_nll_matches_prior_forward(tiny_model, rng):
    """The coder's NLL equals the sum of the prior's training-time log-likelihoods."""
    net = tiny_model.model
    x = image_to_tensor(smooth_image(rng, 64, 48), net.config.stride, torch.device("cpu"))
    indices = net.encode(x)
    coded = StageByStageCodec(prior=net.prior, quantizer=net.quantizer).compress(indices[0])
    with torch.no_grad():
        forward_bits = -latent_codec(net).forward(indices).sum().item()
    assert coded.nll_bits == pytest.approx(forward_bits, rel=1e-4)


@pytest.mark.parametrize("channels", [1, 3])
def test_compress_decompress_api(tiny_model, rng, channels):
    img = smooth_image(rng, 37, 53, channels)
    result = compress_image(img, model=tiny_model, quality=2, device="cpu")
    header, payload = unpack_container(result.data)
    assert header.shape == (channels, 37, 53) and header.num_stages == 2
    assert header.model_id == "tiny-test"
    out = decompress_image(result.data, model=tiny_model, device="cpu")
    assert out.shape == img.shape and out.dtype == np.uint8
    # Same indices -> the same image every time.
    again = decompress_image(result.data, model=tiny_model, device="cpu")
    assert np.array_equal(out, again)


def test_more_quality_more_bits(tiny_model, rng):
    img = smooth_image(rng, 64, 64)
    sizes = [len(compress_image(img, model=tiny_model, quality=q, device="cpu").data)
             for q in (1, 2, 3, 4)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_pil_input(tiny_model, rng):
    from PIL import Image
    img = smooth_image(rng, 20, 30)
    a = compress_image(Image.fromarray(img), model=tiny_model, device="cpu").data
    b = compress_image(img, model=tiny_model, device="cpu").data
    assert a == b


def test_bad_quality(tiny_model, rng):
    with pytest.raises(ModelError, match="quality must be 1..4"):
        compress_image(smooth_image(rng, 8, 8), model=tiny_model, quality=9, device="cpu")


@pytest.mark.parametrize("model_fixture", ["tiny_model", "tiny_grouped_model"])
def test_corrupted_payload_never_crashes(model_fixture, request, rng):
    model = request.getfixturevalue(model_fixture)
    data = bytearray(compress_image(smooth_image(rng, 40, 40), model=model, device="cpu").data)
    for pos in range(0, len(data), 3):
        bad = bytearray(data)
        bad[pos] ^= 0x55
        with pytest.raises((ContainerError, ModelError)):
            decompress_image(bytes(bad), model=model, device="cpu")


def test_other_model_refused(tiny_model, tiny_model_path, tmp_path, rng):
    from conftest import make_tiny_model
    from vqcodec.zoo.registry import load_model, save_model
    data = compress_image(smooth_image(rng, 16, 16), model=tiny_model, device="cpu").data
    other = tmp_path / "other.safetensors"
    save_model(make_tiny_model(seed=1), other, name="tiny-test", qualities=[1, 2, 3, 4],
               default_quality=3)
    with pytest.raises(ModelError, match="made by model 'tiny-test'"):
        decompress_image(data, model=load_model(str(other)), device="cpu")


def test_tables_do_not_depend_on_thread_count(tiny_model, rng):
    """A file made with one thread count decodes with another (same machine)."""
    net = tiny_model.model
    x = image_to_tensor(smooth_image(rng, 96, 80), net.config.stride, torch.device("cpu"))
    indices = net.encode(x)[0]
    codec = StageByStageCodec(prior=net.prior, quantizer=net.quantizer)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        coded = codec.compress(indices)
        torch.set_num_threads(max(2, before))
        decoded = codec.decompress(coded.payload, indices.shape[0], *indices.shape[1:])
    finally:
        torch.set_num_threads(before)
    assert torch.equal(decoded, indices)


def test_top_level_api(tiny_model_path, rng):
    import vqcodec
    img = smooth_image(rng, 24, 40)
    data = vqcodec.compress(img, model=tiny_model_path, device="cpu")
    out = vqcodec.decompress(data, model=tiny_model_path, device="cpu")
    assert out.shape == img.shape and out.dtype == np.uint8


def test_images_from_a_size_on_take_the_large_image_model(monkeypatch, tiny_model_path,
                                                          tiny_integer_grouped_model_path, rng):
    """With no model named, an image of LARGE_IMAGE_PIXELS or more is coded with
    LARGE_IMAGE_MODEL (the shipped default's faster prior), a smaller one with the default;
    the file names its model, so decoding needs no rule."""
    from vqcodec.zoo import registry
    assert registry.default_image_model(registry.LARGE_IMAGE_PIXELS - 1) == registry.DEFAULT_IMAGE_MODEL
    assert registry.default_image_model(registry.LARGE_IMAGE_PIXELS) == registry.LARGE_IMAGE_MODEL
    assert registry.LARGE_IMAGE_MODEL in registry.shipped_models()
    monkeypatch.setattr(registry, "DEFAULT_IMAGE_MODEL", tiny_model_path)
    monkeypatch.setattr(registry, "LARGE_IMAGE_MODEL", tiny_integer_grouped_model_path)
    monkeypatch.setattr(registry, "LARGE_IMAGE_PIXELS", 32 * 48)
    paths = {registry.load_model(p).name: p
             for p in (tiny_model_path, tiny_integer_grouped_model_path)}
    names = {}
    for h, w in ((32, 48), (32, 32)):
        data = compress_image((rng.random((h, w, 3)) * 255).astype(np.uint8), device="cpu").data
        names[h * w] = unpack_container(data)[0].model_id
        decoded = decompress_image(data, model=paths[names[h * w]], device="cpu")
        assert decoded.shape == (h, w, 3)
    assert names == {32 * 48: registry.load_model(tiny_integer_grouped_model_path).name,
                     32 * 32: registry.load_model(tiny_model_path).name}
