"""`load_trained_model`: a checkpoint written by `lungsrad train` -> its model, ready for
evaluation, with the config it was trained with. Evaluation (evaluate.py) and the spectral
analysis (lungsrad/analysis/spectral/driver.py) both load through here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from lungsrad.checkpoint_format import CheckpointError, read_lungsrad_checkpoint
from lungsrad.config import ExperimentConfig
from lungsrad.models import Backbone
from lungsrad.training.checkpoint_files import checkpoint_config
from lungsrad.training.runtime import build_classifier, cpu_threads, resolve_device

# What a checkpoint must hold to rebuild its model (best.pt and epoch checkpoints both do).
_MODEL_KEYS = ("config", "model")


@dataclass(frozen=True)
class TrainedModel:
    """A trained model and what it was trained with."""

    path: Path
    model: Backbone  # in eval mode, on `device`, spectral regularization hooks attached
    config: ExperimentConfig  # the embedded config, model.checkpoint cleared
    device: torch.device
    epoch: int  # the checkpoint's epoch (0 when it does not say)


def load_trained_model(
    checkpoint: str | os.PathLike[str],
    *,
    device: str | None = None,
    scan_backend: Literal["auto", "reference", "chunked", "mamba_ssm", "triton"] | None = None,
) -> TrainedModel:
    """Rebuilds the model of a lungsrad checkpoint (best.pt or an epoch checkpoint).

    The architecture comes from the embedded config; the trained weights replace the run's
    initial checkpoint (`model.checkpoint`), which is not read (it may not exist on this
    machine). The run's spectral regularization hooks are attached, as in training, so later
    blocks see the smoothed maps the run trained with.

    Args:
        checkpoint: file written by `lungsrad train`.
        device: "auto", "cpu", "cuda[:N]"; None: the config's train.device.
        scan_backend: overrides model.scan_backend (None: the run's own).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, not a lungsrad checkpoint, no model or config in it, or a
            config this lungsrad does not accept.
    """
    path = Path(checkpoint)
    payload = read_lungsrad_checkpoint(path)
    missing = [key for key in _MODEL_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: no {' or '.join(missing)} stored in this checkpoint")
    config = checkpoint_config(payload, path=path)
    model_config = dataclasses.replace(config.model, checkpoint=None)
    if scan_backend is not None:
        model_config = dataclasses.replace(model_config, scan_backend=scan_backend)
    config = dataclasses.replace(config, model=model_config)
    torch_device = resolve_device(device if device is not None else config.train.device)
    with cpu_threads(config.train.num_threads):
        model = build_classifier(config, torch_device, load_initial_checkpoint=False)
        model.load_state_dict(payload["model"])
    model.eval()
    return TrainedModel(
        path=path,
        model=model,
        config=config,
        device=torch_device,
        epoch=int(payload.get("epoch", 0)),
    )
