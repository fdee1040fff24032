"""The refinement filter (format version 8): refined images are restored by a small shipped
network after deblocking; the stream does not change, so version 7 files decode as before."""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vqcodec.cli.main import cli
from vqcodec.coding.refinement import decode_refinement
from vqcodec.errors import ModelError, TrainingError
from vqcodec.format import DEBLOCKED_VERSION, FILTERED_VERSION, pack_container, unpack_container
from vqcodec.nn import refinement_filter
from vqcodec.nn.refinement_filter import (RefinementFilter, RefinementFilterConfig,
                                          restore_picture)
from vqcodec.pipelines.image import compress_image, decompress_image, restore_refined
from vqcodec.zoo.filters import (REFINEMENT_FILTER_FILE, load_refinement_filter,
                                 save_refinement_filter)

# The shipped filter is part of format version 8: a new one needs a new version.
SHIPPED_FILTER_SHA256 = "9555bb5ea1f3217a44ca541345768519f042ccf1953c755eabd1d54db242b04f"


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / ((a.astype(np.float64) - b) ** 2).mean()))


@pytest.fixture(scope="module")
def crop():
    image = Image.open("examples/kodim23.png").convert("RGB")
    return np.ascontiguousarray(np.asarray(image)[64:192, 48:208])


def _random_filter(seed: int = 0) -> RefinementFilter:
    torch.manual_seed(seed)
    net = RefinementFilter(config=RefinementFilterConfig(channels=8, layers=2))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net.eval()


def test_the_filter_knows_the_refinement_block():
    from vqcodec.coding import refinement
    assert refinement_filter.BLOCK == refinement.BLOCK


def test_new_filter_is_the_identity(rng):
    net = RefinementFilter(config=RefinementFilterConfig(channels=8, layers=2)).eval()
    refined = rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)
    base = rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)
    assert np.array_equal(restore_picture(net, refined, base, 30.0), refined)


def test_restoring_in_bands_is_the_whole_picture(rng, monkeypatch):
    net = _random_filter()
    refined = rng.integers(0, 256, (70, 36, 3), dtype=np.uint8)
    base = rng.integers(0, 256, (70, 36, 3), dtype=np.uint8)
    whole = restore_picture(net, refined, base, 40.0).astype(np.int16)
    assert np.abs(whole - refined).max() > 0  # the random filter changes the picture
    for rows in (8, 13, 32):
        monkeypatch.setattr(refinement_filter, "BAND_ROWS", rows)
        banded = restore_picture(net, refined, base, 40.0).astype(np.int16)
        # The same inputs at every pixel; float sums in another order may round across .5.
        assert np.abs(banded - whole).max() <= 1 and (banded != whole).mean() < 0.01


def test_the_filter_sees_the_block_grid_of_the_whole_picture(rng):
    """A band that starts at row 4 must see its rows' places in the picture's blocks."""
    net = _random_filter(1)
    refined = torch.from_numpy(rng.integers(0, 256, (1, 3, 24, 16))).float()
    base = refined.clone()
    whole = net(refined, base, torch.tensor([30.0]))
    band = net(refined[..., 4:, :], base[..., 4:, :], torch.tensor([30.0]), top=4)
    # Rows far enough from the band's top edge (the radius) see the same neighbourhood.
    r = net.radius
    assert torch.allclose(band[..., r:-r, :], whole[..., 4 + r:-r, :], atol=1e-4)
    shifted = net(refined[..., 4:, :], base[..., 4:, :], torch.tensor([30.0]))
    assert not torch.allclose(shifted[..., r:-r, :], whole[..., 4 + r:-r, :], atol=1e-2)


def test_gray_pictures_are_restored_as_three_equal_channels(rng):
    net = _random_filter(2)
    gray = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    base = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    out = restore_picture(net, gray, base, 20.0)
    planes = [torch.from_numpy(a).float().expand(1, 3, *a.shape) for a in (gray, base)]
    with torch.no_grad():
        want = net(*planes, torch.tensor([20.0]))[0].mean(0).round().clamp(0, 255).numpy()
    assert out.shape == gray.shape
    assert np.abs(out - want).max() <= 1 and (out != want).mean() < 0.01


def test_filter_file_round_trips_and_bad_files_are_refused(tmp_path):
    net = _random_filter(3)
    path = tmp_path / "f.safetensors"
    save_refinement_filter(net, path, training={"steps": 3})
    loaded, digest = load_refinement_filter(path)
    assert loaded.config == net.config and len(digest) == 8
    for a, b in zip(loaded.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10" + bytes(40))
    with pytest.raises(ModelError, match="not a vqcodec refinement filter file"):
        load_refinement_filter(tmp_path / "bad.safetensors")


def test_shipped_filter_is_pinned():
    digest = hashlib.sha256(REFINEMENT_FILTER_FILE.read_bytes()).hexdigest()
    assert digest == SHIPPED_FILTER_SHA256


def test_version_8_files_are_restored_and_their_version_7_copies_are_not(shipped, crop):
    quality = shipped.ladder_qualities + 1  # the coarsest step, where the filter does most
    result = compress_image(crop, model=shipped, quality=quality, device="cpu")
    header = result.header
    assert header.version == FILTERED_VERSION
    restored = decompress_image(result.data, model=shipped)
    # The same stream, read as version 7: deblocked only.
    header7, payload = unpack_container(result.data)
    old = pack_container(dataclasses.replace(header7, version=DEBLOCKED_VERSION), payload)
    deblocked = decompress_image(old, model=shipped)
    base = decompress_image(result.data, model=shipped, stages=header.num_stages)
    refined = decode_refinement(payload[-1], header.refinement_step, base)
    assert np.array_equal(deblocked, refined)
    assert np.array_equal(restored, restore_refined(refined, base, header.refinement_step,
                                                    torch.device("cpu")))
    assert _psnr(restored, crop) > _psnr(deblocked, crop) + 0.05


def test_refined_gray_is_restored(shipped, crop):
    gray = np.asarray(Image.fromarray(crop).convert("L"))
    result = compress_image(gray, model=shipped, quality=shipped.ladder_qualities + 2)
    out = decompress_image(result.data, model=shipped)
    assert out.shape == gray.shape and out.dtype == np.uint8 and _psnr(out, gray) > 30


def test_info_says_a_version_8_file_is_restored(tmp_path, shipped, crop):
    result = compress_image(crop, model=shipped, quality=shipped.ladder_qualities + 1)
    (tmp_path / "a.vqc").write_bytes(result.data)
    r = CliRunner().invoke(cli, ["info", str(tmp_path / "a.vqc")])
    assert r.exit_code == 0, r.output
    assert "deblocked, restored by the refinement filter" in r.output


def test_examples_training_resumes_and_exports(tmp_path, crop):
    from vqcodec.train.refinement_filter import (export_refinement_filter, load_examples,
                                                 make_examples, train_refinement_filter)
    Image.fromarray(crop[:64, :96]).save(tmp_path / "a.png")
    Image.fromarray(crop[32:96, 40:112]).convert("L").save(tmp_path / "b.png")
    examples = tmp_path / "examples"
    assert make_examples([str(tmp_path)], examples, steps=(48, 24)) == 2
    assert make_examples([str(tmp_path)], examples, steps=(48, 24)) == 0  # resumable
    loaded = load_examples(examples)
    assert [d["refined"].shape for d in loaded] == [(2, 64, 96, 3), (2, 64, 72, 3)]
    run = tmp_path / "run"
    for _ in range(2):
        train_refinement_filter(run=str(run), examples=str(examples), val=str(examples),
                                minutes=5, max_steps=3, batch=2, crop=32,
                                config=RefinementFilterConfig(channels=4, layers=1))
    log = (run / "log.txt").read_text()
    assert log.count("EVAL step") == 2 and "EVAL step 6 " in log and "48:" in log
    # The schedule ends at total_steps, and so does training (no steps at learning rate 0).
    train_refinement_filter(run=str(run), examples=str(examples), val=str(examples),
                            minutes=5, max_steps=10, total_steps=8, batch=2, crop=32)
    assert "EVAL step 8 " in (run / "log.txt").read_text()
    export_refinement_filter(str(run), str(tmp_path / "f.safetensors"))
    net, _ = load_refinement_filter(tmp_path / "f.safetensors")
    assert net.config == RefinementFilterConfig(channels=4, layers=1)
    with pytest.raises(TrainingError, match="no refinement examples"):
        load_examples(tmp_path / "nothing")
