"""Trains the tiny models of `test_distributed.py` a few steps with every sharded recipe; run
as one process or under `python -m torch.distributed.run --nproc-per-node 2`.

    python tests/distributed_worker.py ROOT IMAGES AUDIO BATCH

ROOT holds the run folders (ROOT/grouped must already hold the codebooks' state.pt, which
`image-codebooks` builds in one process only); IMAGES and AUDIO the tiny training data; BATCH
is the whole batch of every step.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import TINY_AUDIO_CONFIG, TINY_CONFIG  # noqa: E402

from vqcodec.train.audio import train_audio_autoencoder, train_audio_prior  # noqa: E402
from vqcodec.train.image import (train_autoencoder, train_decoder_filter,  # noqa: E402
                                 train_prior)

STEPS = 3


def main(root: Path, images: str, audio: str, batch: int) -> None:
    torch.manual_seed(0)
    common = dict(minutes=5, max_steps=STEPS, log_every=1, eval_every_s=1e9)
    # vqimage-v2 recipe: conv autoencoder with EMA residual codebooks, then its prior.
    train_autoencoder(run=str(root / "ae"), train=[images], val=[images], config=TINY_CONFIG,
                      batch=batch, crop=32, val_crop=64, **common)
    train_prior(run=str(root / "ae"), train=[images], val=[images], config=TINY_CONFIG,
                crop=32, num_crops=8, batch=batch, stages_per_step=2, **common)
    # vqimage-v3 recipe: post-filter and prior on the codebooks' state.
    train_decoder_filter(run=str(root / "grouped"), train=[images], val=[images],
                         rd_lambdas=[0.01, 0.1], batch=batch, crop=32, val_crop=64, **common)
    train_prior(run=str(root / "grouped"), train=[images], val=[images], crop=32,
                num_crops=8, batch=batch, rd_lambdas=[0.01, 0.1], **common)
    files = sorted(Path(audio).glob("*.wav"))
    train_audio_autoencoder(run=str(root / "audio"), train=files, val=files,
                            config=TINY_AUDIO_CONFIG, batch=batch, seconds=0.25, **common)
    train_audio_prior(run=str(root / "audio"), train=files, val=files, config=TINY_AUDIO_CONFIG,
                      batch=batch, **common)


if __name__ == "__main__":
    from vqcodec.distributed import leave_and_exit
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]))
    leave_and_exit(0)
