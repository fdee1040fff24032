"""Training runs end to end on tiny data, writes checkpoints, resumes, and exports a model."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import TINY_CONFIG, make_clip_folder, make_image_folder
from vqcodec.cli.main import cli
from vqcodec.train.image import train_autoencoder, train_prior




def test_train_resume_export_and_use(tmp_path, rng):
    import torch
    data = make_image_folder(tmp_path / "imgs", rng)
    run = str(tmp_path / "run")
    kw = dict(run=run, train=[data], val=[data], config=TINY_CONFIG, minutes=5, batch=2,
              crop=32, val_crop=64, eval_every_s=1e9, log_every=1)
    train_autoencoder(**kw, max_steps=3)
    assert torch.load(f"{run}/state.pt", weights_only=True)["step"] == 3
    train_autoencoder(**kw, max_steps=2)  # resumes
    assert torch.load(f"{run}/state.pt", weights_only=True)["step"] == 5
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "EVAL step 5" in log and "dB" in log

    train_prior(run=run, autoencoder_state=f"{run}/state.pt", train=[data], val=[data],
                config=TINY_CONFIG, minutes=5, crop=32, num_crops=8, batch=2, stages_per_step=2,
                max_steps=3, log_every=1)
    assert "bpp" in (tmp_path / "run" / "prior_log.txt").read_text()

    out = tmp_path / "m.safetensors"
    r = CliRunner().invoke(cli, ["train", "export", run, str(out), "--name", "tiny-trained",
                                 "--qualities", "1,2,4", "--default-quality", "2"])
    assert r.exit_code == 0, r.output
    img = tmp_path / "imgs" / "0.png"
    r = CliRunner().invoke(cli, ["compress", str(img), str(tmp_path / "a.vqc"), "--model", str(out)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["decompress", str(tmp_path / "a.vqc"), str(tmp_path / "a.png"),
                                 "--model", str(out)])
    assert r.exit_code == 0, r.output


def test_training_continues_from_a_model_file(tmp_path, rng, tiny_model_path):
    import torch

    from vqcodec.zoo.registry import load_model
    data = make_image_folder(tmp_path / "imgs", rng, n=2)
    run = str(tmp_path / "run")
    train_autoencoder(run=run, train=[data], val=[data], config=TINY_CONFIG, minutes=5, batch=2,
                      crop=32, val_crop=64, eval_every_s=1e9, max_steps=1,
                      init_from=tiny_model_path)
    trained = torch.load(f"{run}/state.pt", weights_only=True)["model"]
    start = load_model(tiny_model_path).model.state_dict()
    # One step moves the weights a little from the file's, not from a fresh initialisation.
    key = "decoder.net.0.weight"
    assert (trained[key] - start[key]).abs().max() < 0.05


def test_linear_path_starts_at_the_patch_pca(tmp_path, rng):
    """A fresh model with the linear path is exactly the PCA block transform: orthonormal
    basis, encoder = projection, decoder = its transpose, conv paths silent."""
    import dataclasses

    import torch

    from vqcodec.nn.image_autoencoder import init_linear_path_from_pca
    from vqcodec.nn.image_model import VQImageModel
    from vqcodec.train.data import CropSampler, load_training_images

    ae = dataclasses.replace(TINY_CONFIG.autoencoder, linear_path=True, latent_dim=24)
    model = VQImageModel(dataclasses.replace(TINY_CONFIG, autoencoder=ae))
    images = load_training_images([make_image_folder(tmp_path / "imgs", rng)])
    crops = CropSampler(images, 32, seed=0).batch(16)
    explained = init_linear_path_from_pca(model.encoder, model.decoder, crops)
    assert 0.5 < explained < 1.0
    basis = model.encoder.linear.weight.flatten(1)
    assert torch.allclose(basis @ basis.T, torch.eye(24), atol=1e-4)
    with torch.no_grad():
        z = model.encoder(crops)
        y = model.decoder(z)
        # Projection onto the kept components: applying it twice changes nothing.
        again = model.decoder(model.encoder(y))
        assert torch.allclose(again, y, atol=1e-4)
        mse = (y - crops).pow(2).mean()
        assert mse < crops.var()  # keeps most of the signal
    # Training moves the linear path slowly (lr scale) and the log records the PCA step.
    run = tmp_path / "run"
    train_autoencoder(run=str(run), train=[str(tmp_path / "imgs")], val=[str(tmp_path / "imgs")],
                      config=dataclasses.replace(TINY_CONFIG, autoencoder=ae), minutes=5,
                      batch=2, crop=32, val_crop=64, eval_every_s=1e9, max_steps=2,
                      pca_crops_count=8)
    assert "PCA init of the linear path" in (run / "log.txt").read_text()


def test_audio_training_resumes_and_exports(tmp_path):
    """Audio autoencoder + prior train a few steps on generated clips, resume, export, and the
    exported model compresses through the CLI."""
    from pathlib import Path

    import torch

    from conftest import TINY_AUDIO_CONFIG
    from vqcodec.train.audio import train_audio_autoencoder, train_audio_prior

    folder = Path(make_clip_folder(tmp_path / "clips"))
    files = sorted(folder.glob("*.wav"))
    run = tmp_path / "arun"
    kw = dict(run=str(run), train=files, val=files, config=TINY_AUDIO_CONFIG, minutes=5,
              batch=2, seconds=0.25, eval_every_s=1e9, log_every=1)
    train_audio_autoencoder(**kw, max_steps=2)
    train_audio_autoencoder(**kw, max_steps=1)
    assert torch.load(run / "state.pt", weights_only=True)["step"] == 3
    assert "EVAL step 3" in (run / "log.txt").read_text()
    train_audio_prior(run=str(run), config=TINY_AUDIO_CONFIG, train=files, val=files, minutes=5,
                      batch=2, max_steps=2, log_every=1)
    assert "kbps" in (run / "prior_log.txt").read_text()
    out = tmp_path / "a.safetensors"
    r = CliRunner().invoke(cli, ["train", "export", str(run), str(out), "--name", "a-test",
                                 "--qualities", "1,2,4", "--default-quality", "2"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["compress", str(files[0]), str(tmp_path / "a.vqc"),
                                 "--model", str(out), "--bitrate", "1.6"])
    assert r.exit_code == 0, r.output
    assert "kbps" in r.output


def test_grouped_model_codebooks_filter_prior_export_and_use(tmp_path, rng):
    """The vqimage-v3 recipe in miniature: PCA + codebooks, post-filter (resumes), prior,
    export with the rate-weight ladder, then the CLI round trip."""
    import json

    import torch

    from conftest import TINY_GROUPED_CONFIG
    from vqcodec.zoo.registry import load_model
    from vqcodec.train.image import train_decoder_filter, train_grouped_codebooks
    data = make_image_folder(tmp_path / "imgs", rng)
    run = str(tmp_path / "run")
    train_grouped_codebooks(run=run, train=[data], config=TINY_GROUPED_CONFIG, rd_lambda=0.01,
                            crop=32, pca_crops=8, codebook_crops=20, iters=2)
    st = torch.load(f"{run}/state.pt", weights_only=True)
    assert torch.all(st["model"]["quantizer.codebooks"][:, :, 0] == 0)
    kw = dict(run=run, train=[data], val=[data], minutes=5, rd_lambdas=[0.01, 0.1], batch=2,
              crop=32, val_crop=64, log_every=1)
    train_decoder_filter(**kw, max_steps=2)
    train_decoder_filter(**kw, max_steps=1)  # resumes
    assert torch.load(f"{run}/state.pt", weights_only=True)["filter_step"] == 3
    assert "EVAL step 3" in (tmp_path / "run" / "filter_log.txt").read_text()
    train_prior(run=run, autoencoder_state=f"{run}/state.pt", train=[data], val=[data],
                config=TINY_GROUPED_CONFIG, minutes=5, crop=32, num_crops=8, batch=2,
                max_steps=2, log_every=1, rd_lambdas=[0.01, 0.1])
    assert "bpp" in (tmp_path / "run" / "prior_log.txt").read_text()

    out = tmp_path / "g.safetensors"
    r = CliRunner().invoke(cli, ["train", "export", run, str(out), "--name", "g-test",
                                 "--default-quality", "5"])
    assert r.exit_code == 0, r.output
    loaded = load_model(str(out))
    assert loaded.rate_for_quality(1)[0] == TINY_GROUPED_CONFIG.num_stages
    assert loaded.training["filter_steps"] == 3
    filtered = torch.load(f"{run}/state.pt", weights_only=True)["model"]
    last = f"decoder.net.{len(loaded.model.decoder.net) - 2}.weight"
    assert filtered[last].abs().sum() > 0  # the filter trained away from its zero start
    assert torch.equal(loaded.model.state_dict()[last], filtered[last].half().float())
    img = tmp_path / "imgs" / "0.png"
    r = CliRunner().invoke(cli, ["compress", str(img), str(tmp_path / "g.vqc"), "--model",
                                 str(out), "--quality", "2"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["decompress", str(tmp_path / "g.vqc"), str(tmp_path / "g.png"),
                                 "--model", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["num_groups"] == 4


def test_training_commands_report_user_errors_in_one_line(tmp_path, rng):
    """Misuse is a TrainingError: one line on stderr and exit status 1, no traceback."""
    from vqcodec.train.loop import write_run_config
    from conftest import TINY_AUDIO_CONFIG
    run = tmp_path / "run"
    write_run_config(run, TINY_AUDIO_CONFIG)
    cases = [["image-prior", str(run), "--train", "x"],          # an audio run, not image
             ["image-filter", str(tmp_path / "empty")],           # nothing to filter yet
             ["export", str(run), str(tmp_path / "m.safetensors"), "--name", "m",
              "--default-quality", "1"]]                          # no trained prior
    for args in cases:
        r = CliRunner().invoke(cli, ["train", *args])
        assert r.exit_code == 1, (args, r.output)
        assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output


def test_training_run_resumes_saves_atomically_and_closes_its_log(tmp_path):
    """TrainingRun: progress entries under a prefix beside the file's other entries, a log
    that is closed after the with block, and wall + CPU seconds on every line."""
    import torch

    from vqcodec.train.loop import TrainingRun
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    torch.save({"model": model.state_dict(), "step": 7}, tmp_path / "state.pt")
    job = TrainingRun(tmp_path, log_file="f.txt", prefix="filter_")
    assert not job.resumed and job.step == 0
    with job:
        job.train(model=model, optimizer=opt, take_step=lambda: 1.0,
                  describe=lambda m: f"x {m[0]:.1f}", evaluate=lambda: "ok", minutes=1,
                  max_steps=2, log_every=1, eval_every_s=1e9)
    with pytest.raises(RuntimeError):  # the log is closed after the with block
        job.log("late")
    st = torch.load(tmp_path / "state.pt", weights_only=True)
    assert st["step"] == 7 and st["filter_step"] == 2 and "filter_opt" in st
    assert not (tmp_path / "state.tmp").exists()
    lines = (tmp_path / "f.txt").read_text().splitlines()
    assert lines[0].startswith("step 1 wall ") and " cpu " in lines[0] and lines[0].endswith("x 1.0")
    assert lines[-1].startswith("EVAL step 2 wall ") and lines[-1].endswith(" ok")
    again = TrainingRun(tmp_path, log_file="f.txt", prefix="filter_")
    assert again.resumed and again.step == 2


def test_prior_run_from_a_model_with_another_prior_size(tmp_path, rng, tiny_grouped_model_path):
    """`train image-prior RUN --from-model M --width W` (`start_prior_run`): a fresh prior of
    width W on M's frozen transform and quantizer, trained in RUN; a second start in the same
    RUN is refused, and --width without --from-model too."""
    import torch

    from vqcodec.train.image import start_prior_run
    from vqcodec.train.loop import read_run_config
    from vqcodec.zoo.registry import load_model
    data = make_image_folder(tmp_path / "imgs", rng)
    run = tmp_path / "run"
    base = load_model(tiny_grouped_model_path)
    width = base.model.config.prior_width // 2
    start_prior_run(str(run), tiny_grouped_model_path, width=width, depth=1)
    config = read_run_config(run, "image")
    assert (config.prior_width, config.prior_depth) == (width, 1)
    assert config.autoencoder == base.model.config.autoencoder
    state = torch.load(run / "state.pt", weights_only=True)["model"]
    assert not any(k.startswith(("prior.", "integer_prior.")) for k in state)
    assert torch.equal(state["quantizer.codebooks"],
                       base.model.state_dict()["quantizer.codebooks"])
    train_prior(run=str(run), train=[data], val=[data], minutes=5, crop=32, num_crops=8,
                batch=2, max_steps=1, log_every=1, rd_lambdas=[0.01, 0.1])
    prior = torch.load(run / "prior_state.pt", weights_only=True)["model"]
    assert prior["prior.stem.weight"].shape[0] == width
    assert torch.equal(prior["quantizer.codebooks"], state["quantizer.codebooks"])
    from vqcodec.train.export import export_run
    export_run(run, tmp_path / "f.safetensors", name="f", qualities=None, default_quality=1)
    exported = load_model(str(tmp_path / "f.safetensors"))
    assert exported.model.config.prior_width == width
    assert exported.training.get("filter_steps") == base.training.get("filter_steps")
    r = CliRunner().invoke(cli, ["train", "image-prior", str(run), "--from-model",
                                 tiny_grouped_model_path, "--width", "8"])
    assert r.exit_code == 1 and "already holds a run" in r.output, r.output
    r = CliRunner().invoke(cli, ["train", "image-prior", str(tmp_path / "other"),
                                 "--width", "8"])
    assert r.exit_code != 0 and "--from-model" in r.output, r.output
