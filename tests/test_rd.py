"""`vqcodec rd-curve` on images and its library `vqcodec.eval`: batched NLL = the prior's sum =
the entropy coder's NLL, real payloads close to it, BD-rate, baselines, reference files, the
command's outputs and errors. Tiny model, tiny images."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vqcodec.cli.main import cli
from vqcodec.coding import latent_codec
from vqcodec.errors import RDError
from vqcodec.eval import baselines
from vqcodec.eval.baselines import (BASELINE_NAMES, baseline_curve, evaluate_baseline,
                                    resolve_baselines)
from vqcodec.eval.bd_rate import bd_rate, bd_rate_details
from vqcodec.eval.items import NamedImage
from vqcodec.eval.metrics import image_distortion
from vqcodec.eval.model import evaluate_model, model_curve
from vqcodec.eval.references import load_reference_curves
from vqcodec.pipelines.image import (IMAGE_CONTEXT_STAGES, compress_image, decompress_image, image_to_tensor,
                                    rgb_to_luma)

COMPRESSAI_KEYS = {"bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"}
OUR_KEYS = {"nll-bpp", "mse", "payload-bpp", "file-bpp", "quality", "stages"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny tensors: one intra-op thread is faster, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smooth_image(rng, h, w, channels=3):
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 5.0)[..., None] * np.ones(channels)
    img = np.clip(base + rng.normal(0, 8, (h, w, channels)), 0, 255).astype(np.uint8)
    return img[..., 0] if channels == 1 else img


@pytest.fixture(scope="module")
def images() -> list[NamedImage]:
    """Three 48x64 (one grayscale), one 64x48 and one 200x170 (large enough for MS-SSIM)."""
    rng = np.random.default_rng(0)
    return [NamedImage("a.png", smooth_image(rng, 48, 64)),
            NamedImage("b.png", smooth_image(rng, 48, 64)),
            NamedImage("g.png", smooth_image(rng, 48, 64, channels=1)),
            NamedImage("t.png", smooth_image(rng, 64, 48)),
            NamedImage("big.png", smooth_image(rng, 200, 170))]


@pytest.fixture(scope="module")
def evaluation(tiny_model, images):
    return evaluate_model(tiny_model, images, batch_size=2, actual=True)


def by_key(records):
    return {(r.setting, r.item): r for r in records}


def assert_batched_decode_is_delivered(ev):
    """The batched decode (grayscale included) is what decompress_image hands back, up to the
    rounding of floats.

    The batched and the per-image decode run the decoder on different batch shapes, so the
    CPU backend may choose other kernels (oneDNN on AVX2 vs AVX-512, or SSE4.1) that round
    floats differently, and a value within a rounding error of .5 lands on the neighbouring
    8-bit level. So allow one level on at most 0.1 % of an image's values. Such flips on a share
    p of the values move the RMSE by at most sqrt(p) (triangle inequality), hence the PSNR by at
    most 20 log10(1 + sqrt(p) / (rmse - sqrt(p))) dB.
    """
    assert ev.decoded_difference <= 1
    assert ev.decoded_mismatch <= MAX_FLIPS
    assert ev.metric_difference <= psnr_flip_bound(ev.decoded_mismatch,
                                                   min(r["mse"] for r in ev.records))


MAX_FLIPS = 1e-3
"""The share of 8-bit values that may differ by one level between two decodes of the same
indices in different batch shapes (see `assert_batched_decode_is_delivered`)."""


def psnr_flip_bound(share: float, mse: float) -> float:
    """The most a PSNR (dB) at this MSE can move when a share of the values moves one level."""
    root = math.sqrt(share)
    rmse = math.sqrt(mse)
    return 20 * math.log10(1 + root / (rmse - root)) + 1e-9


# --- our model -------------------------------------------------------------------------------

def test_nll_is_the_priors_sum_and_the_entropy_coders(tiny_model, images, evaluation):
    net = tiny_model.model
    found = by_key(evaluation.records)
    assert len(found) == len(images) * 4
    for im in images:
        x = image_to_tensor(im.array, net.config.stride, torch.device("cpu"))
        with torch.no_grad():
            indices = net.encode(x)
            log2p = latent_codec(net).forward(indices, context_stages=IMAGE_CONTEXT_STAGES)
        for q, n in zip(range(1, 5), tiny_model.qualities):
            want = float(-log2p[:, :n].double().sum())
            r = found[q, im.name]
            assert r.stages == n
            # With --actual, nll_bpp is the entropy coder's; the batched sum must agree.
            assert r["nll-bpp"] * im.pixels == pytest.approx(want, rel=1e-3)
    assert evaluation.nll_difference < 1e-3
    res = compress_image(images[0].array, model=tiny_model, quality=2, device="cpu")
    assert found[2, "a.png"]["nll-bpp"] * images[0].pixels == pytest.approx(res.nll_bits, rel=1e-3)


def test_batched_nll_without_actual(tiny_model, images):
    """Batch size 1 and 4 give the same NLL bits as the prior's sum, and the same metrics."""
    net = tiny_model.model
    one = by_key(evaluate_model(tiny_model, images, qualities=[1, 4], batch_size=1).records)
    four = evaluate_model(tiny_model, images, qualities=[1, 4], batch_size=4)
    assert [r.setting for r in four.records] == [1] * 5 + [4] * 5
    for r in four.records:
        s = one[r.setting, r.item]
        assert r["bpp"] == r["nll-bpp"] and r["payload-bpp"] is None and r["gap-percent"] is None
        assert r["nll-bpp"] == pytest.approx(s["nll-bpp"], rel=1e-5)
        assert abs(r["psnr-rgb"] - s["psnr-rgb"]) <= psnr_flip_bound(MAX_FLIPS, s["mse"])
    im = images[1]
    x = image_to_tensor(im.array, net.config.stride, torch.device("cpu"))
    with torch.no_grad():
        indices = net.encode(x)
        want = float(-latent_codec(net).forward(indices)[:, :1].double().sum())
    assert one[1, im.name]["nll-bpp"] * im.pixels == pytest.approx(want, rel=1e-6)


def test_actual_payload_close_to_nll_and_same_metrics(evaluation, images):
    pixels = {im.name: im.pixels for im in images}
    for r in evaluation.records:
        nll_bits = r["nll-bpp"] * pixels[r.item]
        payload_bits = r["payload-bpp"] * pixels[r.item]
        assert payload_bits <= nll_bits * 1.05 + 64
        assert r["bpp"] == r["payload-bpp"] < r["file-bpp"]
        assert r["gap-percent"] == pytest.approx(100 * (payload_bits / nll_bits - 1))
    assert_batched_decode_is_delivered(evaluation)
    big = [r for r in evaluation.records if r.item == "big.png"]
    assert all(0 < r["ms-ssim-rgb"] <= 1 for r in big)
    assert all(math.isnan(r["ms-ssim-rgb"]) for r in evaluation.records if r.item != "big.png")


def test_luma_is_pillows():
    """The batched path and decompress_image share rgb_to_luma; it must equal Pillow's
    convert("L"), which decompress_image used before (same output bytes)."""
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    rgb[0, :256] = np.arange(256)[:, None]  # every gray level
    want = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(rgb_to_luma(torch.from_numpy(rgb).permute(2, 0, 1)).numpy(), want)


def test_gray_metrics_against_decompressed(tiny_model, images, evaluation):
    gray = images[2]
    res = compress_image(gray.array, model=tiny_model, quality=3, device="cpu")
    out = decompress_image(res.data, model=tiny_model, device="cpu")
    assert out.ndim == 2
    mse = np.mean((np.repeat(out[..., None], 3, 2).astype(float)
                   - np.repeat(gray.array[..., None], 3, 2)) ** 2)
    assert by_key(evaluation.records)[3, "g.png"]["mse"] == pytest.approx(mse)


def test_curve_averages(evaluation, tiny_model):
    curve = model_curve(evaluation, name=tiny_model.name, batch_size=2)
    r = curve.results
    assert r["quality"] == [1, 2, 3, 4] and r["stages"] == tiny_model.qualities
    q1 = [x for x in evaluation.records if x.setting == 1]
    assert r["psnr-rgb"][0] == pytest.approx(np.mean([x["psnr-rgb"] for x in q1]))
    big = [x["ms-ssim-rgb"] for x in q1 if x.item == "big.png"]
    assert r["ms-ssim-rgb"][0] == pytest.approx(big[0])
    assert "payload" in curve.description


# --- metrics, BD-rate ------------------------------------------------------------------------

def test_distortion_conventions():
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.integers(0, 256, (2, 3, 170, 180))).float()
    b = (a + torch.from_numpy(rng.normal(0, 3, a.shape)).float())
    found = image_distortion(a, b)
    mse, psnr, ms = found["mse"], found["psnr-rgb"], found["ms-ssim-rgb"]
    ref = ((b.clamp(0, 255).round() - a) ** 2).flatten(1).mean(1).double().numpy()
    np.testing.assert_allclose(mse, ref, rtol=1e-6)
    np.testing.assert_allclose(psnr, 10 * np.log10(255 ** 2 / ref), rtol=1e-6)
    assert np.all((ms > 0.5) & (ms <= 1))
    small = image_distortion(a[..., :160, :], b[..., :160, :])["ms-ssim-rgb"]
    assert np.isnan(small).all()


RATES = [0.1, 0.2, 0.4, 0.8, 1.6]
PSNRS = [26.0, 29.0, 32.0, 35.0, 38.5]


def test_bd_rate_self_is_zero():
    assert abs(bd_rate(RATES, PSNRS, RATES, PSNRS)) < 1e-9
    assert abs(bd_rate(RATES[:3], PSNRS[:3], RATES[:3], PSNRS[:3])) < 1e-9


@pytest.mark.parametrize("n", [5, 4, 3, 2])
def test_bd_rate_half_the_bits(n):
    doubled = [2 * r for r in RATES[:n]]
    result = bd_rate_details(doubled, PSNRS[:n], RATES[:n], PSNRS[:n])
    assert result.percent == pytest.approx(-50, abs=1e-6)
    assert result.method == ("cubic" if n >= 4 else "linear")
    assert bd_rate(RATES[:n], PSNRS[:n], doubled, PSNRS[:n]) == pytest.approx(100, abs=1e-6)


def test_bd_rate_overlap_only_and_none():
    # The test curve is the anchor shifted by 20% less rate, on a partly overlapping range.
    anchor_r = np.exp(np.linspace(-2, 1, 8))
    anchor_d = 30 + 4 * np.log(anchor_r)
    test_r = 0.8 * np.exp(np.linspace(-1, 2, 8))
    test_d = 30 + 4 * np.log(test_r / 0.8)
    result = bd_rate_details(anchor_r, anchor_d, test_r, test_d)
    assert result.percent == pytest.approx(-20, abs=1e-6)
    assert (result.low, result.high) == pytest.approx((26, 34))
    assert bd_rate([0.1, 0.2], [20, 21], [0.1, 0.2], [30, 31]) is None  # no overlap
    assert bd_rate([0.1], [20], [0.1, 0.2], [20, 21]) is None  # one point
    assert bd_rate([0.1, 0.2, None], [20, 22, 25], [0.1, 0.2], [20, 22]) == pytest.approx(0)


def test_bd_rate_within_a_range():
    # Half the bits below 30 dB, the same bits above: the split tells them apart.
    anchor_r = np.exp(np.linspace(-2, 1, 12))
    anchor_d = 30 + 4 * np.log(anchor_r)
    test_r = anchor_r * np.where(anchor_d < 30, 0.5, 1.0)
    low = bd_rate_details(anchor_r, anchor_d, test_r, anchor_d, within=(-np.inf, 30.0))
    high = bd_rate_details(anchor_r, anchor_d, test_r, anchor_d, within=(30.0, np.inf))
    assert (low.low, low.high) == pytest.approx((22, 30)) and high.low == 30
    assert low.percent < -30 and abs(high.percent) < abs(low.percent)
    assert bd_rate_details(anchor_r, anchor_d, test_r, anchor_d, within=(40, 50)) is None


# --- baselines, references -------------------------------------------------------------------

def test_baselines_are_monotone(images):
    codecs, notes = resolve_baselines(["jpeg", "webp"], "image")
    assert [c.name for c in codecs] == ["jpeg", "webp"] and not notes
    for codec in codecs:
        records = evaluate_baseline(codec, images[:3], settings=[10, 50, 90])
        curve = baseline_curve(codec, records)
        bpp, psnr = curve.values("bpp"), curve.values("psnr-rgb")
        assert np.all(np.diff(bpp) > 0) and np.all(np.diff(psnr) > 0), (codec.name, bpp, psnr)
        assert curve.results["quality"] == [10, 50, 90]


def test_baseline_names():
    assert resolve_baselines(["none"], "image") == ([], [])
    with pytest.raises(RDError, match="unknown baseline"):
        resolve_baselines(["jpeg", "gif"], "image")
    with pytest.raises(RDError, match="'opus' is for audio"):
        resolve_baselines(["opus"], "image")
    codecs, notes = resolve_baselines(["all"], "image")
    assert len(codecs) + len(notes) == len(BASELINE_NAMES["image"])


def write_references(folder):
    folder.mkdir(exist_ok=True)
    full = {"name": "Anchor", "description": "d", "results": {
        "bpp": RATES, "psnr-rgb": PSNRS, "ms-ssim-rgb": [0.9, 0.93, 0.96, 0.98, 0.99],
        "encoding_time": [1] * 5, "decoding_time": [1] * 5}}
    (folder / "anchor.json").write_text(json.dumps(full))
    (folder / "db_only.json").write_text(json.dumps(
        {"name": "x", "results": {"bpp": [0.1, 0.2], "ms-ssim-db-rgb": [10.0, 20.0]}}))
    (folder / "junk.json").write_text("{not json")
    (folder / "other.json").write_text(json.dumps({"something": 1}))


def test_reference_curves(tmp_path):
    write_references(tmp_path / "ref")
    curves, skipped = load_reference_curves(tmp_path / "ref")
    assert [c.label for c in curves] == ["ref/anchor", "ref/db_only"]
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in skipped) == ["junk.json", "other.json"]
    assert curves[1].values("ms-ssim-rgb") == pytest.approx([0.9, 0.99])
    assert not curves[1].has("psnr-rgb") and curves[0].has("psnr-rgb")


# --- the command -----------------------------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(cli, ["rd-curve", *[str(a) for a in args]])


def assert_one_line_error(result, pattern):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert pattern in lines[0], lines[0]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, images):
    path = tmp_path_factory.mktemp("rd-images")
    for im in images[:3] + images[4:]:
        Image.fromarray(im.array).save(path / im.name)
    (path / "broken.png").write_bytes(b"this is not a png")
    (path / "notes.txt").write_text("not an image, ignored")
    return path


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, folder, tiny_model_path):
    out = tmp_path_factory.mktemp("rd-out") / "results"
    ref = tmp_path_factory.mktemp("rd-ref")
    write_references(ref)
    # A reference named like a measured baseline: both must survive in the BD-rate table.
    (ref / "jpeg.json").write_text(json.dumps({"name": "JPEG", "results": {
        "bpp": RATES, "psnr-rgb": [p - 1 for p in PSNRS]}}))
    result = invoke(folder, "--model", tiny_model_path, "--device", "cpu", "--actual",
                    "--baselines", "jpeg,webp", "--baseline-qualities", "10,50,90",
                    "--reference", ref, "--per-image", "--batch-size", "3", "--out", out)
    return result, out


def test_cli_outputs(cli_run):
    result, out = cli_run
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert names == {"tiny-test.json", "jpeg.json", "webp.json", "rd.csv", "per_image.csv",
                     "bd_rate.json", "rd-psnr.png", "rd-msssim.png"}
    for png in ("rd-psnr.png", "rd-msssim.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ours = json.loads((out / "tiny-test.json").read_text())
    assert set(ours) == {"name", "description", "results"} and ours["name"] == "tiny-test"
    assert COMPRESSAI_KEYS | OUR_KEYS <= set(ours["results"])
    assert {len(v) for v in ours["results"].values()} == {4}
    assert ours["results"]["bpp"] == ours["results"]["payload-bpp"]
    assert "payload" in ours["description"]
    jpeg = json.loads((out / "jpeg.json").read_text())
    assert COMPRESSAI_KEYS <= set(jpeg["results"]) and len(jpeg["results"]["bpp"]) == 3
    rows = list(csv.DictReader((out / "rd.csv").open()))
    assert [row["kind"] for row in rows] == ["model"] * 4 + ["baseline"] * 6 + ["reference"] * 12
    assert {"codec", "quality", "bpp", "psnr-rgb", "ms-ssim-rgb"} <= set(rows[0])
    assert len(list(csv.DictReader((out / "per_image.csv").open()))) == 4 * (4 + 3 + 3)
    bd = json.loads((out / "bd_rate.json").read_text())
    # db_only has no PSNR; the reference jpeg.json is labelled by its folder, so it does not
    # replace the measured jpeg baseline.
    assert {a.split("/")[-1] for a in bd["anchors"]} == {"jpeg", "webp", "anchor"}
    assert len(bd["anchors"]) == 4
    assert bd["anchors"]["jpeg"]["kind"] == "baseline"
    assert {"bd-rate-low", "psnr-range-low", "bd-rate-high", "psnr-range-high"} <= set(
        bd["anchors"]["jpeg"])  # the split at SPLIT_PSNR_DB
    assert sorted(row["kind"] for row in bd["anchors"].values()) == [
        "baseline", "baseline", "reference", "reference"]


def test_cli_output_text(cli_run):
    result, _ = cli_run
    assert "warning: skipping broken.png" in result.stderr
    assert "notes.txt" not in result.output
    assert "4 images, 1 skipped (unreadable)" in result.stdout
    assert "BD-rate" in result.stdout and "tiny-test" in result.stdout


def test_cli_nll_mode(tmp_path, folder, tiny_model_path):
    r = invoke(folder, "--model", tiny_model_path, "--device", "cpu", "--baselines", "none",
               "--qualities", "1,3", "--no-plots", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    ours = json.loads((tmp_path / "tiny-test.json").read_text())["results"]
    assert ours["bpp"] == ours["nll-bpp"] and ours["quality"] == [1, 3]
    assert ours["payload-bpp"] == [None, None]
    assert {p.name for p in tmp_path.iterdir()} == {"tiny-test.json", "rd.csv", "bd_rate.json"}


def test_cli_interrupt_leaves_no_files(tmp_path, folder, tiny_model_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(baselines, "evaluate_baseline", interrupted)
    r = invoke(folder, "--model", tiny_model_path, "--device", "cpu", "--baselines", "jpeg",
               "--out", tmp_path / "out")
    assert r.exit_code == 130
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_empty_folder(tmp_path, tiny_model_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke(tmp_path / "empty", "--model", tiny_model_path),
                          "no images found in")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    assert_one_line_error(invoke(tmp_path / "text", "--model", tiny_model_path),
                          "no images found in")
    assert_one_line_error(invoke(tmp_path / "missing", "--model", tiny_model_path),
                          "no such folder")


def test_cli_unknown_model(folder, tmp_path):
    assert_one_line_error(invoke(folder, "--model", "no-such-model", "--out", tmp_path),
                          "unknown model")


def test_cli_bad_options(folder, tiny_model_path, tmp_path):
    assert_one_line_error(invoke(folder, "--model", tiny_model_path, "--qualities", "9"),
                          "--qualities")
    assert_one_line_error(invoke(folder, "--model", tiny_model_path, "--baselines", "gif"),
                          "unknown baseline")
    assert_one_line_error(invoke(folder, "--model", tiny_model_path, "--batch-size", "0"),
                          "--batch-size")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_cuda(folder, tiny_model_path):
    assert_one_line_error(invoke(folder, "--model", tiny_model_path, "--device", "cuda"),
                          "CUDA is not available")


def test_grouped_model_batched_matches_actual(tiny_grouped_model, images):
    """A grouped model: one encoder pass per rate weight; the batched NLL and metrics equal
    what the real compress/decompress give at every quality."""
    ev = evaluate_model(tiny_grouped_model, images, batch_size=2, actual=True)
    assert len(ev.records) == len(images) * tiny_grouped_model.num_qualities  # refined too
    assert ev.nll_difference < 1e-3
    assert_batched_decode_is_delivered(ev)
    found = by_key(ev.records)
    big = {q: found[q, "big.png"] for q in range(1, 5)}
    assert big[4]["nll-bpp"] > big[3]["nll-bpp"] > big[2]["nll-bpp"]  # rate weight 0 > 0.01 > 0.05
