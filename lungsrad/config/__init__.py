"""The one typed experiment configuration: frozen dataclasses, YAML load/save, dotted overrides.

Every run (CLI, Ray trial, final training) is `ExperimentConfig`; unknown keys and bad values
fail with a `UserError` (lungsrad.errors) naming the key, NaN and inf included, so a typo never
costs a training run. The sections declare their bounds (lungsrad.schema field rules);
validation checks what spans keys. This package re-exports its public names.
"""

from lungsrad.config.derived import (
    backbone_depths,
    backbone_feature_width,
    checkpoint_file,
    expected_num_frames,
    model_input_frames,
    regularized_blocks,
    resolved_architecture,
    resolved_ast_size,
)
from lungsrad.config.io import (
    config_from_dict,
    config_to_dict,
    dump_config,
    flatten_config,
    load_config,
    save_config,
)
from lungsrad.config.overrides import (
    apply_overrides,
    check_config_path,
    config_paths,
    parse_override,
)
from lungsrad.config.presets import (
    AST_PATCH_SIZE,
    AST_SIZES,
    MIN_NUM_CLASSES,
    MODEL_PRESETS,
    NUM_FOLDS,
    PROTOCOLS,
    RANDOM_INIT_CHECKPOINT,
    REFERENCE_SPECAUGMENT_PROBABILITY,
    VALIDATION_PROTOCOLS,
)
from lungsrad.config.sections import (
    DataConfig,
    ExperimentConfig,
    MethodConfig,
    ModelConfig,
    PatchMixConfig,
    RegularizationConfig,
    TrainConfig,
)
from lungsrad.config.validation import validate_config
from lungsrad.config.versions import CONFIG_VERSION, LEGACY_DEFAULTS

__all__ = [
    "parse_override",
    "AST_PATCH_SIZE",
    "AST_SIZES",
    "CONFIG_VERSION",
    "LEGACY_DEFAULTS",
    "MIN_NUM_CLASSES",
    "MODEL_PRESETS",
    "NUM_FOLDS",
    "PROTOCOLS",
    "RANDOM_INIT_CHECKPOINT",
    "REFERENCE_SPECAUGMENT_PROBABILITY",
    "VALIDATION_PROTOCOLS",
    "DataConfig",
    "ExperimentConfig",
    "MethodConfig",
    "ModelConfig",
    "PatchMixConfig",
    "RegularizationConfig",
    "TrainConfig",
    "apply_overrides",
    "backbone_depths",
    "backbone_feature_width",
    "check_config_path",
    "checkpoint_file",
    "config_from_dict",
    "config_paths",
    "config_to_dict",
    "dump_config",
    "expected_num_frames",
    "flatten_config",
    "load_config",
    "model_input_frames",
    "regularized_blocks",
    "resolved_architecture",
    "resolved_ast_size",
    "save_config",
    "validate_config",
]
