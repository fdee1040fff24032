"""Export of a finished run (image or audio) as a model file (`zoo.registry.save_model`)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import TrainingError
from ..nn.audio_model import AudioModelConfig, VQAudioModel
from ..nn.image_model import VQImageModel
from ..zoo.registry import save_model
from .loop import read_run_config, single_process


def export_run(run: str | Path, output: str | Path, *, name: str, qualities: list | None,
               default_quality: int) -> None:
    """Write a run's trained model (`prior_state.pt`, with `state.pt`) as a float16
    safetensors model file, with the steps and CPU seconds of its training.

    Args:
        run: the run folder.
        output: the model file to write.
        name: model id written into every .vqc file.
        qualities: stages per rate setting (e.g. [4, 8, 16]); None for a grouped image model
            means all rounds at each rate weight of its config's ladder.
        default_quality: the quality (1-based) used when none is asked for.

    Raises:
        TrainingError: the run has no trained prior, or the qualities are missing, or this
            is one of several torchrun processes (they would all write `output`).
    """
    single_process("export")
    run = Path(run)
    for needed in ("state.pt", "prior_state.pt"):
        if not (run / needed).exists():
            raise TrainingError(f"{run} has no {needed}: train the model and its prior first")
    config = read_run_config(run)
    grouped = bool(getattr(config, "num_groups", 0))
    if qualities is None:
        if not grouped:
            raise TrainingError("this model needs its qualities (stages per rate setting, "
                                "e.g. --qualities 4,8,16)")
        qualities = [[config.num_stages, lam] for lam in config.quality_lambdas]
    model = (VQAudioModel if isinstance(config, AudioModelConfig) else VQImageModel)(config)
    prior_state = torch.load(run / "prior_state.pt", weights_only=True)
    ae_state = torch.load(run / "state.pt", weights_only=True)
    weights = prior_state["model"]
    if grouped:
        # A grouped model's post-filter trains into state.pt beside the prior (it does not
        # change the indices): the prior from its run, everything else from state.pt.
        weights = {**{k: v for k, v in ae_state["model"].items() if not k.startswith("prior.")},
                   **{k: v for k, v in weights.items() if k.startswith("prior.")}}
    model.load_state_dict(weights)
    training = {"autoencoder_steps": ae_state["step"], "autoencoder_cpu_s": ae_state["cpu_s"],
                "autoencoder_wall_s": ae_state["wall_s"], "prior_steps": prior_state["step"],
                "prior_cpu_s": prior_state["cpu_s"]}
    if "filter_step" in ae_state:
        training.update(filter_steps=ae_state["filter_step"], filter_cpu_s=ae_state["filter_cpu_s"])
    save_model(model, output, name=name, qualities=qualities, default_quality=default_quality,
               training=training)
