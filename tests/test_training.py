"""Training runs end to end on tiny data, writes checkpoints, resumes, and exports a model."""
from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from PIL import Image

from conftest import TINY_CONFIG
from vqcodec.cli.main import cli
from vqcodec.models.training import train_autoencoder, train_prior


def make_folder(path, rng, n=3, size=(80, 96)):
    path.mkdir()
    for i in range(n):
        yy, xx = np.mgrid[0:size[0], 0:size[1]]
        img = (128 + 90 * np.sin(xx / (5 + i))[..., None] * np.cos(yy / 7)[..., None]
               + rng.normal(0, 10, (*size, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(path / f"{i}.png")
    return str(path)


def test_train_resume_export_and_use(tmp_path, rng):
    import torch
    data = make_folder(tmp_path / "imgs", rng)
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

    from vqcodec.models.registry import load_model
    data = make_folder(tmp_path / "imgs", rng, n=2)
    run = str(tmp_path / "run")
    train_autoencoder(run=run, train=[data], val=[data], config=TINY_CONFIG, minutes=5, batch=2,
                      crop=32, val_crop=64, eval_every_s=1e9, max_steps=1,
                      init_from=tiny_model_path)
    trained = torch.load(f"{run}/state.pt", weights_only=True)["model"]
    start = load_model(tiny_model_path).model.state_dict()
    # One step moves the weights a little from the file's, not from a fresh initialisation.
    key = "decoder.net.0.weight"
    assert (trained[key] - start[key]).abs().max() < 0.05
