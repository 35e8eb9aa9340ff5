"""Checks across keys (and the ones a field rule cannot say); a UserError names the key."""

from __future__ import annotations

import warnings

from lungsrad.config.derived import (
    backbone_depths,
    backbone_feature_width,
    model_input_frames,
    resolved_architecture,
    resolved_ast_size,
)
from lungsrad.config.presets import AST_PATCH_SIZE, NUM_FOLDS
from lungsrad.config.sections import ExperimentConfig, RegularizationConfig
from lungsrad.errors import UserError


def _validate_ast(config: ExperimentConfig) -> None:
    """The AST keys; DASS-only keys set on an AST are warned about (they are ignored)."""
    model = config.model
    if model.ast_size == "custom":
        unset = [
            f"model.ast_{k}"
            for k in ("embed_dim", "depth", "num_heads")
            if getattr(model, f"ast_{k}") is None
        ]
        if unset:
            raise UserError(f"model.ast_size is 'custom': set {', '.join(unset)}")
    embed_dim, _, num_heads = resolved_ast_size(model)
    if embed_dim % num_heads:
        raise UserError(
            f"model.ast_num_heads ({num_heads}) must divide model.ast_embed_dim ({embed_dim}); "
            "choose a head count that divides the width (base: 768 wide, 12 heads)"
        )
    if model.backbone != "ast":
        return
    frames = model_input_frames(config.data)
    if min(frames, config.data.num_mel_bins) < AST_PATCH_SIZE:
        source = (
            f"data.segment_seconds ({config.data.segment_seconds}) gives"
            if config.data.model_frames is None
            else "data.model_frames is"
        )
        raise UserError(
            f"{source} {frames} frames and "
            f"data.num_mel_bins is {config.data.num_mel_bins}: AST needs at least "
            f"{AST_PATCH_SIZE} of each for one {AST_PATCH_SIZE} x {AST_PATCH_SIZE} patch"
        )
    ignored = [
        f"model.{key}" for key in ("dims", "depths", "drop_path_rate") if getattr(model, key)
    ]
    if ignored:
        warnings.warn(
            f"{', '.join(ignored)}: DASS settings, ignored with model.backbone 'ast'",
            stacklevel=3,
        )


def validate_config(config: ExperimentConfig) -> None:
    """Checks across keys (each field's own bounds are its field rule, checked on parsing);
    raises UserError naming the offending key."""
    _validate_ast(config)
    _validate_dass(config)
    _validate_regularization(config.method.regularization, backbone_depths(config.model))
    _validate_patch_mix(config)
    _validate_protocol(config)
    _validate_train(config)


def _validate_dass(config: ExperimentConfig) -> None:
    """The DASS architecture after its preset: as many widths as stages, even widths."""
    model = config.model
    if model.preset == "custom" and (model.dims is None or model.depths is None):
        raise UserError("model.preset is 'custom': set both model.dims and model.depths")
    dims, depths, _ = resolved_architecture(model)
    if len(dims) != len(depths) or not dims:
        raise UserError(
            f"model.dims ({list(dims)}) and model.depths ({list(depths)}) must have the same length"
        )
    if any(d <= 0 for d in dims) or any(d % 2 for d in dims):
        raise UserError(f"model.dims must be positive even widths, got {list(dims)}")


def _validate_patch_mix(config: ExperimentConfig) -> None:
    """Unprojected targets are compared with projections: the widths must agree."""
    patch_mix = config.method.patch_mix
    width = backbone_feature_width(config.model)
    if patch_mix.mode != "none" and not patch_mix.project_target:
        if patch_mix.projection_dim != width:
            raise UserError(
                "method.patch_mix.project_target is false, so unprojected features "
                f"({width} wide) are compared with projections: set "
                f"method.patch_mix.projection_dim to {width}"
            )


def _validate_train(config: ExperimentConfig) -> None:
    """Warm-up within the run; a cosine floor set with another schedule is warned about."""
    train = config.train
    if train.warmup_epochs >= train.num_epochs + 1:
        raise UserError(f"train.warmup_epochs must be in 0..num_epochs, got {train.warmup_epochs}")
    if train.min_learning_rate_factor > 0 and not train.schedule.startswith("cosine"):
        warnings.warn(
            "train.min_learning_rate_factor is the floor of the cosine schedules; ignored with "
            f"train.schedule '{train.schedule}'",
            stacklevel=4,
        )


def _validate_protocol(config: ExperimentConfig) -> None:
    """data.fold in 0..NUM_FOLDS-1, set exactly when train.protocol is 'foldwise' (the range
    stays here, beside the protocol, in the words docs/protocols.md quotes)."""
    fold, protocol = config.data.fold, config.train.protocol
    if fold is not None and not 0 <= fold < NUM_FOLDS:
        raise UserError(
            f"data.fold must be in 0..{NUM_FOLDS - 1} (RespireNet's {NUM_FOLDS} folds), got {fold}"
        )
    if protocol == "foldwise" and fold is None:
        raise UserError(
            f"train.protocol 'foldwise' needs data.fold: the test fold, 0..{NUM_FOLDS - 1}"
        )
    if protocol != "foldwise" and fold is not None:
        raise UserError(
            f"data.fold is {fold} but train.protocol is '{protocol}'; data.fold only applies to "
            "train.protocol 'foldwise' (set it, or remove data.fold)"
        )


def _validate_regularization(regularization: RegularizationConfig, depths: tuple[int, ...]) -> None:
    """Kernel checks always; the placement only when the regularization is enabled, so a
    disabled default (stage 2, blocks [2, 3]) does not reject models with fewer blocks."""
    if regularization.kernel_size < 1 or regularization.kernel_size % 2 == 0:
        raise UserError(
            "method.regularization.kernel_size must be a positive odd integer, "
            f"got {regularization.kernel_size}"
        )
    if not regularization.enabled:
        return
    if not 0 <= regularization.stage < len(depths):
        raise UserError(
            f"method.regularization.stage must be in 0..{len(depths) - 1} "
            f"(the model has {len(depths)} stage{'s' if len(depths) > 1 else ''}), "
            f"got {regularization.stage}"
        )
    if regularization.blocks != "all":
        depth = depths[regularization.stage]
        bad = [b for b in regularization.blocks if not 0 <= b < depth]
        if bad or not regularization.blocks:
            raise UserError(
                f"method.regularization.blocks {list(regularization.blocks)} not valid: stage "
                f"{regularization.stage} has blocks 0..{depth - 1}"
            )
