"""Values derived from a config: the architecture after its preset, the checkpoint to load,
frame counts, feature widths, the regularized blocks."""

from __future__ import annotations

from lungsrad.assets.paths import CHECKPOINT, resolve_reference
from lungsrad.config.presets import AST_SIZES, MODEL_PRESETS, RANDOM_INIT_CHECKPOINT
from lungsrad.config.sections import DataConfig, ExperimentConfig, ModelConfig
from lungsrad.errors import UserError


def checkpoint_file(model: ModelConfig) -> str | None:
    """model.checkpoint as a file to load; None when unset or "none" (random initialisation).
    `fetch:NAME` is the fetched asset's file (a UserError with the `lungsrad fetch` command when
    it is not fetched; the assets folder: $LUNGSRAD_ASSETS, else ~/.cache/lungsrad/assets)."""
    checkpoint = model.checkpoint
    if checkpoint is None or checkpoint.strip().lower() == RANDOM_INIT_CHECKPOINT:
        return None
    return resolve_reference(checkpoint, key=CHECKPOINT)


def resolved_architecture(model: ModelConfig) -> tuple[tuple[int, ...], tuple[int, ...], float]:
    """Returns (dims, depths, drop_path_rate) after applying the preset."""
    if model.preset == "custom":
        assert model.dims is not None and model.depths is not None  # checked by validate_config
        rate = 0.0 if model.drop_path_rate is None else model.drop_path_rate
        return tuple(model.dims), tuple(model.depths), rate
    preset = MODEL_PRESETS[model.preset]
    dims = tuple(model.dims) if model.dims is not None else preset["dims"]
    depths = tuple(model.depths) if model.depths is not None else preset["depths"]
    rate = preset["drop_path_rate"] if model.drop_path_rate is None else model.drop_path_rate
    return dims, depths, rate


def resolved_ast_size(model: ModelConfig) -> tuple[int, int, int]:
    """Returns the AST's (embed_dim, depth, num_heads) after applying `model.ast_size`."""
    size = AST_SIZES.get(model.ast_size, {})
    values = []
    for key in ("embed_dim", "depth", "num_heads"):
        value = getattr(model, f"ast_{key}")
        value = size.get(key) if value is None else value
        assert value is not None, key  # custom without it: refused by validate_config
        values.append(int(value))
    embed_dim, depth, num_heads = values
    return embed_dim, depth, num_heads


def backbone_depths(model: ModelConfig) -> tuple[int, ...]:
    """Blocks per stage of the configured backbone (AST: one stage)."""
    if model.backbone == "ast":
        return (resolved_ast_size(model)[1],)
    return resolved_architecture(model)[1]


def expected_num_frames(data: DataConfig) -> int:
    """Fbank frames per segment, as Kaldi computes them (snip_edges: only whole windows)."""
    rate = data.sample_rate_hz
    num_samples = int(round(data.segment_seconds * rate))
    window = int(rate * data.frame_length_ms * 0.001)
    shift = int(rate * data.frame_shift_ms * 0.001)
    if window < 1 or shift < 1 or num_samples < window:
        raise UserError(
            f"data.segment_seconds ({data.segment_seconds}) must hold at least one "
            f"{data.frame_length_ms} ms window at {rate} Hz"
        )
    return 1 + (num_samples - window) // shift


def model_input_frames(data: DataConfig) -> int:
    """Frames of the map the model sees: data.model_frames, or the fbank's own count."""
    return data.model_frames if data.model_frames is not None else expected_num_frames(data)


def backbone_feature_width(model: ModelConfig) -> int:
    """Width of the pooled features the backbone hands the classifier and the projection head."""
    if model.backbone == "ast":
        return resolved_ast_size(model)[0]
    return resolved_architecture(model)[0][-1]


def regularized_blocks(config: ExperimentConfig) -> list[int]:
    """Block indices (inside `method.regularization.stage`) that get smoothed."""
    regularization = config.method.regularization
    depths = backbone_depths(config.model)
    if regularization.blocks == "all":
        return list(range(depths[regularization.stage]))
    return list(regularization.blocks)
