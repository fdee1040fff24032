"""`vqcodec rd-curve` on audio and its library `vqcodec.eval`: batched NLL = the entropy
coder's NLL, real payloads close to it, the batched decode = decompress_audio, Opus, the
command's outputs, mode choice and errors. Tiny audio model, short generated clips."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from PIL import Image

from vqcodec.cli.main import cli
from vqcodec.errors import InputError
from vqcodec.errors import RDError
from vqcodec.eval import baselines, model
from vqcodec.eval.baselines import baseline_curve, evaluate_baseline, resolve_baselines
from vqcodec.eval.items import load_items
from vqcodec.eval.metrics import clip_distortion
from vqcodec.eval.model import chunked_nll_bits, evaluate_model, model_curve
from vqcodec.eval.rd import AUDIO, prior_saving
from vqcodec.io import media
from vqcodec.pipelines.audio import compress_audio, decompress_audio
from vqcodec.eval.opus import opus_available
from vqcodec.zoo import registry
from vqcodec.coding import file_codec, latent_codec

needs_opus = pytest.mark.skipif(not opus_available(), reason="opus-tools not installed")

MODEL_KEYS = {"bitrate", "stages", "kbps", "nll-kbps", "raw-kbps", "si-snr", "mel-distance",
              "mse", "encoding_time", "decoding_time"}
ACTUAL_KEYS = {"payload-kbps", "file-kbps", "gap-percent"}
OPUS_KEYS = {"bitrate", "kbps", "file-kbps", "si-snr", "mel-distance", "mse", "roundtrip_time"}
TINY_KBPS = [0.8, 1.6, 3.2]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny tensors: one intra-op thread is faster, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tones(rate: int, seconds: float, channels: int, seed: int) -> np.ndarray:
    """[n, channels] (soundfile's layout): a chirp-like tone mix with a little noise."""
    n = int(round(rate * seconds))
    t = np.arange(n) / rate
    g = np.random.default_rng(seed)
    cols = [0.3 * np.sin(2 * np.pi * (180 + 70 * c + 150 * t) * t)
            + 0.15 * np.sin(2 * np.pi * 900 * t) + 0.03 * g.standard_normal(n)
            for c in range(channels)]
    return np.stack(cols, 1).astype(np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three clips: 8 kHz mono over 10 prior chunks (the last one short), 16 kHz stereo and
    22.05 kHz mono (both resampled to the model's 8 kHz); plus an unreadable and a text file."""
    path = tmp_path_factory.mktemp("rd-audio")
    sf.write(path / "a.wav", tones(8000, 0.63, 1, 0), 8000, subtype="PCM_16")
    sf.write(path / "b.wav", tones(16000, 0.4, 2, 1), 16000, subtype="PCM_16")
    sf.write(path / "c.wav", tones(22050, 0.3, 1, 2), 22050, subtype="FLOAT")
    (path / "broken.wav").write_bytes(b"RIFF not really a wav file")
    (path / "notes.txt").write_text("not audio, ignored")
    return path


@pytest.fixture(scope="module")
def clips(folder):
    found, skipped = load_items(folder, "audio")
    assert [c.name for c in found] == ["a.wav", "b.wav", "c.wav"]
    assert [name for name, _ in skipped] == ["broken.wav"]
    return found


@pytest.fixture(scope="module")
def evaluation(tiny_audio_model, clips):
    return evaluate_model(tiny_audio_model, clips, actual=True)


def by_key(records):
    return {(r.setting, r.item): r for r in records}


# --- our model -------------------------------------------------------------------------------

def test_nll_equals_the_entropy_coders(tiny_audio_model, clips):
    """Without --actual the batched, chunked prior pass gives the coder's NLL bits."""
    ev = evaluate_model(tiny_audio_model, clips)
    assert ev.settings == pytest.approx(TINY_KBPS) and ev.stages == [1, 2, 4]
    found = by_key(ev.records)
    assert len(found) == 3 * len(clips)
    for named in clips:
        for kbps, n in zip(ev.settings, ev.stages):
            r = found[kbps, named.name]
            res = compress_audio(named.clip, model=tiny_audio_model, bitrate=round(kbps, 3),
                                 device="cpu")
            assert r.stages == n and r["kbps"] == r["nll-kbps"] and r["payload-kbps"] is None
            assert r["nll-kbps"] * named.seconds * 1000 == pytest.approx(res.nll_bits, rel=1e-3)


def test_chunked_nll_matches_frame_codec(tiny_audio_model):
    """Chunks of the prior's context (12 frames) per channel, the last one short, each from a
    fresh start; several passes when the logits budget is small."""
    codec = latent_codec(tiny_audio_model.model)
    idx = torch.randint(0, 16, (2, 3, 30), generator=torch.Generator().manual_seed(3))
    want = file_codec(tiny_audio_model.model).compress(idx).nll_bits
    assert chunked_nll_bits(codec, idx) == pytest.approx(want, rel=1e-4)
    small = 3 * 12 * 16  # one chunk per pass
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model, "PRIOR_BATCH_LOGITS", small)
        assert chunked_nll_bits(codec, idx) == pytest.approx(want, rel=1e-4)


def test_actual_payload_gap_and_same_audio(evaluation, clips):
    seconds = {c.name: c.seconds for c in clips}
    for r in evaluation.records:
        nll_bits = r["nll-kbps"] * seconds[r.item] * 1000
        payload_bits = r["payload-kbps"] * seconds[r.item] * 1000
        assert payload_bits >= nll_bits - 1
        assert r["kbps"] == r["payload-kbps"] < r["file-kbps"]
        assert r["gap-percent"] == pytest.approx(100 * (payload_bits / nll_bits - 1), rel=1e-6)
    assert evaluation.nll_difference < 1e-3
    assert evaluation.decoded_difference < 1e-5
    assert evaluation.max_gap == pytest.approx(max(r["gap-percent"] for r in evaluation.records)
                                               / 100)


def test_batched_decode_is_decompress_audio(tiny_audio_model, clips):
    """The stereo 16 kHz clip: batched decode at the original rate, channels and length."""
    named = clips[1]
    net = tiny_audio_model.model
    indices = model.encode_clip(net, named.clip, 4, torch.device("cpu"))
    for n, kbps in zip([1, 2, 4], TINY_KBPS):
        ours = model.decode_clip(net, indices[:, :n], named.clip)
        res = compress_audio(named.clip, model=tiny_audio_model, bitrate=kbps, device="cpu")
        real = decompress_audio(res.data, model=tiny_audio_model, device="cpu").samples
        assert ours.shape == real.shape == named.clip.samples.shape
        assert np.abs(ours - real).max() < 1e-5


def test_model_curve_and_saving(evaluation, clips, tiny_audio_model):
    curve = model_curve(evaluation, name=tiny_audio_model.name)
    r = curve.results
    assert set(r) == MODEL_KEYS | ACTUAL_KEYS
    assert r["bitrate"] == pytest.approx(TINY_KBPS) and r["stages"] == [1, 2, 4]
    assert r["kbps"] == r["payload-kbps"] and "payload" in curve.description
    first = [x for x in evaluation.records if x.setting == r["bitrate"][0]]
    assert r["si-snr"][0] == pytest.approx(np.mean([x["si-snr"] for x in first]))
    # raw-kbps: every coded index at log2(16) = 4 bits, all channels, padded frames included.
    a = by_key(evaluation.records)[r["bitrate"][0], "a.wav"]
    frames = -(-round(8000 * 0.63) // 40)
    assert a["raw-kbps"] == pytest.approx(frames * 4 / a["seconds"] / 1000)
    b = by_key(evaluation.records)[r["bitrate"][2], "b.wav"]
    assert b["raw-kbps"] == pytest.approx(2 * 4 * 4 * 200 / 1000, rel=0.05)  # stereo, 4 stages
    saving = prior_saving(curve, AUDIO)
    assert saving == pytest.approx(1 - np.array(r["nll-kbps"]) / np.array(r["raw-kbps"]))


def test_audio_metrics_against_original(clips):
    named = clips[0]
    found = clip_distortion(named.clip, named.clip.samples.copy())
    assert found == {"si-snr": 100.0, "mel-distance": 0.0, "mse": 0.0}


# --- Opus, baseline names --------------------------------------------------------------------

@needs_opus
def test_opus_rows_monotone(clips):
    (opus,), _ = resolve_baselines(["opus"], "audio")
    records = evaluate_baseline(opus, clips, settings=[6, 12, 24])
    curve = baseline_curve(opus, records)
    assert set(curve.results) == OPUS_KEYS
    assert curve.results["bitrate"] == [6.0, 12.0, 24.0]
    kbps = curve.values("kbps")
    assert np.all(np.diff(kbps) > 0) and np.all(kbps >= [6, 12, 24])


def test_audio_baseline_names(monkeypatch):
    assert resolve_baselines(["none"], "audio") == ([], [])
    with pytest.raises(RDError, match="'jpeg' is for images"):
        resolve_baselines(["opus", "jpeg"], "audio")
    with pytest.raises(RDError, match="unknown baseline 'mp3'"):
        resolve_baselines(["mp3"], "audio")
    monkeypatch.setattr(baselines, "opus_available", lambda: False)
    codecs, notes = resolve_baselines(["all"], "audio")
    assert codecs == [] and "opus-tools" in notes[0]


def test_folder_kind(tmp_path, folder):
    assert media.folder_kind(folder) == "audio"
    assert media.folder_kind(folder / "a.wav") == "audio"
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert media.folder_kind(tmp_path) == "image"
    (tmp_path / "y.wav").write_bytes((folder / "a.wav").read_bytes())
    with pytest.raises(InputError, match="both images"):
        media.folder_kind(tmp_path)


# --- the command -----------------------------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(cli, ["rd-curve", *[str(a) for a in args]])


def assert_one_line_error(result, pattern):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert pattern in lines[0], lines[0]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, folder, tiny_audio_model_path):
    out = tmp_path_factory.mktemp("rd-audio-out") / "results"
    result = invoke(folder, "--model", tiny_audio_model_path, "--device", "cpu", "--actual",
                    "--baselines", "opus", "--baseline-bitrates", "6,12,24", "--per-image",
                    "--out", out)
    return result, out


def test_cli_outputs(cli_run):
    result, out = cli_run
    assert result.exit_code == 0, result.output
    opus = opus_available()
    names = {p.name for p in out.iterdir()}
    assert names == {"tiny-audio.json", "rd.csv", "per_clip.csv", "rd-sisnr.png",
                     "rd-mel.png"} | ({"opus.json"} if opus else set())
    for png in ("rd-sisnr.png", "rd-mel.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ours = json.loads((out / "tiny-audio.json").read_text())
    assert set(ours) == {"name", "description", "results"} and ours["name"] == "tiny-audio"
    assert set(ours["results"]) == MODEL_KEYS | ACTUAL_KEYS
    assert {len(v) for v in ours["results"].values()} == {3}
    assert ours["results"]["kbps"] == ours["results"]["payload-kbps"]
    rows = list(csv.DictReader((out / "rd.csv").open()))
    assert [row["kind"] for row in rows] == ["model"] * 3 + ["baseline"] * (3 if opus else 0)
    assert {"codec", "bitrate", "kbps", "si-snr", "mel-distance"} <= set(rows[0])
    per_clip = list(csv.DictReader((out / "per_clip.csv").open()))
    assert len(per_clip) == 3 * (3 + (3 if opus else 0))
    assert {row["clip"] for row in per_clip} == {"a.wav", "b.wav", "c.wav"}
    if opus:
        base = json.loads((out / "opus.json").read_text())
        assert set(base["results"]) == OPUS_KEYS and base["results"]["bitrate"] == [6, 12, 24]
        assert np.all(np.diff(base["results"]["kbps"]) > 0)


def test_cli_output_text(cli_run):
    result, _ = cli_run
    assert "warning: skipping broken.wav" in result.stderr
    assert "notes.txt" not in result.output
    assert "3 clips" in result.stdout and "1 skipped (unreadable)" in result.stdout
    assert "saving%" in result.stdout and "max gap (payload - NLL) / NLL" in result.stdout
    table = [line for line in result.stdout.splitlines() if line.startswith("tiny-audio ")]
    assert len(table) == 3


def test_cli_nll_mode_default_audio_model(tmp_path, folder, tiny_audio_model_path,
                                          monkeypatch):
    """No --model and a folder of audio: the default audio model, NLL rates, no payload keys."""
    monkeypatch.setattr(registry, "DEFAULT_AUDIO_MODEL", tiny_audio_model_path)
    r = invoke(folder, "--device", "cpu", "--baselines", "none", "--qualities", "1,3",
               "--no-plots", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    ours = json.loads((tmp_path / "tiny-audio.json").read_text())["results"]
    assert set(ours) == MODEL_KEYS
    assert ours["kbps"] == ours["nll-kbps"] and ours["bitrate"] == [0.8, 3.2]
    assert {p.name for p in tmp_path.iterdir()} == {"tiny-audio.json", "rd.csv"}


def test_cli_image_folder_goes_to_the_image_path(tmp_path, tiny_model_path, monkeypatch):
    monkeypatch.setattr(registry, "DEFAULT_IMAGE_MODEL", tiny_model_path)
    (tmp_path / "img").mkdir()
    Image.fromarray(np.full((32, 48, 3), 120, np.uint8)).save(tmp_path / "img" / "a.png")
    r = invoke(tmp_path / "img", "--device", "cpu", "--baselines", "none", "--qualities", "1",
               "--no-plots", "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "tiny-test.json", "rd.csv", "bd_rate.json"}


def test_cli_interrupt_leaves_no_files(tmp_path, folder, tiny_audio_model_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(model, "model_curve", interrupted)
    r = invoke(folder, "--model", tiny_audio_model_path, "--device", "cpu", "--baselines",
               "none", "--out", tmp_path / "out")
    assert r.exit_code == 130
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_folder_errors(tmp_path, folder, tiny_audio_model_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke(tmp_path / "empty"), "no images or audio files found in")
    assert_one_line_error(invoke(tmp_path / "empty", "--model", tiny_audio_model_path),
                          "no audio files found in")
    assert_one_line_error(invoke(tmp_path / "missing"), "no such folder")
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.wav").write_bytes((folder / "a.wav").read_bytes())
    Image.new("RGB", (8, 8)).save(tmp_path / "mixed" / "x.png")
    assert_one_line_error(invoke(tmp_path / "mixed"), "holds both images (1) and audio files")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.wav").write_bytes(b"not audio")
    r = invoke(tmp_path / "bad", "--model", tiny_audio_model_path)
    assert r.exit_code == 1 and "warning: skipping x.wav" in r.output
    assert r.output.splitlines()[-1].startswith("error: no readable audio files in")


def test_cli_option_errors(folder, tmp_path, tiny_audio_model_path, tiny_model_path):
    audio = ("--model", tiny_audio_model_path, "--out", tmp_path)
    assert_one_line_error(invoke(folder, *audio, "--baselines", "jpeg"),
                          "baseline 'jpeg' is for images")
    assert_one_line_error(invoke(folder, *audio, "--reference", tmp_path), "--reference is for")
    assert_one_line_error(invoke(folder, *audio, "--baseline-bitrates", "3"),
                          "--baseline-bitrates")
    assert_one_line_error(invoke(folder, *audio, "--qualities", "4"), "--qualities")
    assert_one_line_error(invoke(folder, "--model", "no-such-model"), "unknown model")
    assert_one_line_error(invoke(folder, "--model", tiny_model_path, "--baseline-bitrates",
                                 "8"), "--baseline-bitrates is for audio")


def test_cli_default_audio_model_missing(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "DEFAULT_AUDIO_MODEL", "no-such-audio-model")
    assert_one_line_error(invoke(folder, "--out", tmp_path), "unknown model")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_cuda(folder, tiny_audio_model_path):
    assert_one_line_error(invoke(folder, "--model", tiny_audio_model_path, "--device", "cuda"),
                          "CUDA is not available")

