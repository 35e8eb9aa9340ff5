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
from lungsrad.config.presets import AST_PATCH_SIZE, MIN_NUM_CLASSES, NUM_FOLDS
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
    for key in ("embed_dim", "depth", "num_heads"):
        value = getattr(model, f"ast_{key}")
        if value is not None and value < 1:
            raise UserError(f"model.ast_{key} must be >= 1, got {value}")
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
    """Semantic checks across keys; raises ValueError naming the offending key."""
    model = config.model
    _validate_ast(config)
    if model.preset == "custom" and (model.dims is None or model.depths is None):
        raise UserError("model.preset is 'custom': set both model.dims and model.depths")
    dims, depths, drop_path_rate = resolved_architecture(model)
    if len(dims) != len(depths) or not dims:
        raise UserError(
            f"model.dims ({list(dims)}) and model.depths ({list(depths)}) must have the same length"
        )
    if any(d <= 0 for d in dims) or any(d % 2 for d in dims):
        raise UserError(f"model.dims must be positive even widths, got {list(dims)}")
    if any(d <= 0 for d in depths):
        raise UserError(f"model.depths must be positive, got {list(depths)}")
    if model.num_classes < MIN_NUM_CLASSES:
        raise UserError(
            f"model.num_classes must be at least {MIN_NUM_CLASSES}, got {model.num_classes}"
        )
    if not 0.0 <= drop_path_rate < 1.0:
        raise UserError(f"model.drop_path_rate must be in [0, 1), got {drop_path_rate}")

    regularization = config.method.regularization
    _validate_regularization(regularization, backbone_depths(model))

    patch_mix = config.method.patch_mix
    if patch_mix.alpha <= 0:
        raise UserError(f"method.patch_mix.alpha must be > 0, got {patch_mix.alpha}")
    if patch_mix.temperature <= 0:
        raise UserError(f"method.patch_mix.temperature must be > 0, got {patch_mix.temperature}")
    if patch_mix.projection_dim < 1:
        raise UserError(
            f"method.patch_mix.projection_dim must be >= 1, got {patch_mix.projection_dim}"
        )
    if patch_mix.time_loss_weight < 0 or patch_mix.freq_loss_weight < 0:
        raise UserError("method.patch_mix loss weights must be >= 0")
    width = backbone_feature_width(model)
    if patch_mix.mode != "none" and not patch_mix.project_target:
        if patch_mix.projection_dim != width:
            raise UserError(
                "method.patch_mix.project_target is false, so unprojected features "
                f"({width} wide) are compared with projections: set "
                f"method.patch_mix.projection_dim to {width}"
            )

    data = config.data
    if data.sample_rate_hz <= 0:
        raise UserError(f"data.sample_rate_hz must be > 0, got {data.sample_rate_hz}")
    if data.segment_seconds <= 0:
        raise UserError(f"data.segment_seconds must be > 0, got {data.segment_seconds}")
    if data.num_mel_bins < 8:
        raise UserError(f"data.num_mel_bins must be >= 8, got {data.num_mel_bins}")
    if data.feature_std <= 0:
        raise UserError(f"data.feature_std must be > 0, got {data.feature_std}")
    if data.model_frames is not None and data.model_frames < 1:
        raise UserError(f"data.model_frames must be >= 1 or null, got {data.model_frames}")
    if not 0.0 < data.validation_fraction < 1.0:
        raise UserError(
            f"data.validation_fraction must be in (0, 1), got {data.validation_fraction}"
        )

    _validate_protocol(config)

    train = config.train
    for key in ("num_epochs", "batch_size", "eval_batch_size", "step_size_epochs"):
        if getattr(train, key) < 1:
            raise UserError(f"train.{key} must be >= 1, got {getattr(train, key)}")
    if train.learning_rate <= 0:
        raise UserError(f"train.learning_rate must be > 0, got {train.learning_rate}")
    if train.weight_decay < 0:
        raise UserError(f"train.weight_decay must be >= 0, got {train.weight_decay}")
    if train.warmup_epochs < 0 or train.warmup_epochs >= train.num_epochs + 1:
        raise UserError(f"train.warmup_epochs must be in 0..num_epochs, got {train.warmup_epochs}")
    if train.time_mask < 0 or train.freq_mask < 0:
        raise UserError("train.time_mask and train.freq_mask must be >= 0")
    for key in ("num_time_masks", "num_freq_masks"):
        if getattr(train, key) < 0:
            raise UserError(f"train.{key} must be >= 0, got {getattr(train, key)}")
    if not 0.0 <= train.specaugment_probability <= 1.0:
        raise UserError(
            f"train.specaugment_probability must be in [0, 1], got {train.specaugment_probability}"
        )
    if not 0.0 <= train.min_learning_rate_factor <= 1.0:
        raise UserError(
            "train.min_learning_rate_factor must be in [0, 1] (a share of train.learning_rate), "
            f"got {train.min_learning_rate_factor}"
        )
    if train.min_learning_rate_factor > 0 and not train.schedule.startswith("cosine"):
        warnings.warn(
            "train.min_learning_rate_factor is the floor of the cosine schedules; ignored with "
            f"train.schedule '{train.schedule}'",
            stacklevel=3,
        )
    if train.weight_averaging is not None and not 0.0 < train.weight_averaging < 1.0:
        raise UserError(
            "train.weight_averaging must be null or a beta in (0, 1) (the reference: 0.5), "
            f"got {train.weight_averaging}"
        )
    if train.min_sensitivity is not None and not 0.0 <= train.min_sensitivity < 100.0:
        raise UserError(
            "train.min_sensitivity must be null or a percentage in [0, 100) (the reference: 5), "
            f"got {train.min_sensitivity}"
        )
    if train.max_steps_per_epoch is not None and train.max_steps_per_epoch < 1:
        raise UserError(
            f"train.max_steps_per_epoch must be >= 1 or null, got {train.max_steps_per_epoch}"
        )
    if train.grad_clip_norm is not None and train.grad_clip_norm <= 0:
        raise UserError(f"train.grad_clip_norm must be > 0 or null, got {train.grad_clip_norm}")
    if train.num_threads is not None and train.num_threads < 1:
        raise UserError(f"train.num_threads must be >= 1 or null, got {train.num_threads}")
    if train.finite_check_steps < 0:
        raise UserError(f"train.finite_check_steps must be >= 0, got {train.finite_check_steps}")


def _validate_protocol(config: ExperimentConfig) -> None:
    """data.fold in 0..NUM_FOLDS-1, set exactly when train.protocol is 'foldwise'."""
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
    if regularization.sigma <= 0:
        raise UserError(f"method.regularization.sigma must be > 0, got {regularization.sigma}")
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
