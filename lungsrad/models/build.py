"""`build_model(config)`: the DASS described by a run config, initialised from its checkpoint."""

from __future__ import annotations

from pathlib import Path

from lungsrad.config import ExperimentConfig, ModelConfig, resolved_architecture
from lungsrad.models.checkpoint import load_dass_checkpoint
from lungsrad.models.dass import DASS


def build_model(config: ExperimentConfig | ModelConfig) -> DASS:
    """DASS from `config.model` (preset/dims/depths/drop path/backend), loading `model.checkpoint`.

    Args:
        config: a run config (or just its `model` section).

    Raises:
        FileNotFoundError: `model.checkpoint` is set but the file does not exist (never a
            silent random initialisation).
        ValueError: the checkpoint does not fit the architecture (see `load_dass_checkpoint`).
    """
    model_config = config.model if isinstance(config, ExperimentConfig) else config
    dims, depths, drop_path_rate = resolved_architecture(model_config)
    model = DASS(
        num_classes=model_config.num_classes,
        dims=dims,
        depths=depths,
        drop_path_rate=drop_path_rate,
        scan_backend=model_config.scan_backend,
    )
    if model_config.checkpoint:
        path = Path(model_config.checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"model.checkpoint not found: {path}; point it at a DASS release file "
                "(DASS_small.pth / DASS_medium.pth) or a lungsrad checkpoint, or set it to null"
            )
        load_dass_checkpoint(model, path)
    return model
