"""`build_model(config)`: the backbone `model.backbone` names (DASS or AST), from its checkpoint."""

from __future__ import annotations

from pathlib import Path

from lungsrad.config import (
    RANDOM_INIT_CHECKPOINT,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    checkpoint_file,
    model_input_frames,
    resolved_architecture,
    resolved_ast_size,
)
from lungsrad.errors import UserError
from lungsrad.models.ast import AST, load_ast_checkpoint
from lungsrad.models.dass import DASS, load_dass_checkpoint

# What build_model returns; code above `models/` uses only the surface both share (embed,
# forward_from_embedding, forward_head, num_features, depths, block).
Backbone = DASS | AST

_RELEASE_FILES = {
    "dass": "a DASS release file (DASS_small.pth / DASS_medium.pth)",
    "ast": "the AST AudioSet release file (audioset_10_10_0.4593.pth)",
}


def build_model(config: ExperimentConfig | ModelConfig) -> Backbone:
    """The backbone of `config.model`, loading `model.checkpoint` when it names a file (unset or
    "none": a random initialisation).

    DASS: preset / dims / depths / drop path / scan backend. AST: `model.ast_size` (or the
    custom ast_* sizes) on the input the data section produces (frames from
    `data.segment_seconds`, `data.num_mel_bins`), its checkpoint adapted by
    `model.ast_pos_embed`. Given only a `ModelConfig`, the data section's defaults are used.

    Args:
        config: a run config (or just its `model` section).

    Raises:
        FileNotFoundError: `model.checkpoint` is set but the file does not exist (never a
            silent random initialisation).
        UserError: the checkpoint does not fit the architecture, or is the other backbone's.
    """
    if isinstance(config, ExperimentConfig):
        model_config, data_config = config.model, config.data
    else:
        model_config, data_config = config, DataConfig()
    checkpoint = checkpoint_file(model_config)
    path = Path(checkpoint).expanduser() if checkpoint else None
    if path is not None and not path.is_file():  # before building: AST-base takes seconds
        raise FileNotFoundError(
            f"model.checkpoint not found: {path}; point it at "
            f"{_RELEASE_FILES[model_config.backbone]} or a lungsrad checkpoint, or set it to "
            f"'{RANDOM_INIT_CHECKPOINT}' to train from a random initialisation"
        )
    if model_config.backbone == "ast":
        model: Backbone = _build_ast(model_config, data_config)
    else:
        model = _build_dass(model_config)
    if path is not None:
        try:
            if isinstance(model, AST):
                load_ast_checkpoint(model, path, pos_embed_mode=model_config.ast_pos_embed)
            else:
                load_dass_checkpoint(model, path)
        except UserError as error:
            raise UserError(f"model.checkpoint {error}") from None
    return model


def _build_dass(model_config: ModelConfig) -> DASS:
    dims, depths, drop_path_rate = resolved_architecture(model_config)
    return DASS(
        num_classes=model_config.num_classes,
        dims=dims,
        depths=depths,
        drop_path_rate=drop_path_rate,
        scan_backend=model_config.scan_backend,
    )


def _build_ast(model_config: ModelConfig, data_config: DataConfig) -> AST:
    embed_dim, depth, num_heads = resolved_ast_size(model_config)
    return AST(
        num_classes=model_config.num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        input_frames=model_input_frames(data_config),
        num_mel_bins=data_config.num_mel_bins,
    )
