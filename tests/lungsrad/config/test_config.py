"""Tests of the typed experiment config: YAML round trip, unknown keys, types, overrides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lungsrad.config import (
    CONFIG_VERSION,
    ExperimentConfig,
    apply_overrides,
    check_config_path,
    config_from_dict,
    config_to_dict,
    flatten_config,
    load_config,
    regularized_blocks,
    resolved_architecture,
    save_config,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_defaults_are_the_paper_protocol():
    config = ExperimentConfig()
    assert resolved_architecture(config.model) == ((96, 192, 384, 768), (2, 2, 8, 2), 0.2)
    assert config.train.batch_size == 16
    assert (config.train.time_mask, config.train.freq_mask) == (160, 48)
    assert config.data.sample_rate_hz == 16000 and config.data.segment_seconds == 8.0
    assert regularized_blocks(config) == [2, 3]


def test_disabled_regularization_placement_is_not_checked():
    tiny = {"preset": "custom", "dims": [16, 32, 64, 128], "depths": [1, 1, 2, 1]}
    config_from_dict({"model": tiny})  # default blocks [2, 3] do not exist, but it is disabled
    with pytest.raises(ValueError, match="stage 2 has blocks 0..1"):
        config_from_dict({"model": tiny, "method": {"regularization": {"enabled": True}}})


def test_yaml_round_trip(tmp_path):
    config = apply_overrides(
        ExperimentConfig(),
        {"method.patch_mix.mode": "dual", "method.regularization.blocks": "all", "train.seed": 3},
    )
    path = tmp_path / "run.yaml"
    save_config(config, path)
    assert load_config(path) == config
    assert regularized_blocks(config) == list(range(8))


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  learnig_rate: 0.1\n")
    with pytest.raises(
        ValueError,
        match=r"run.yaml: unknown config key 'train.learnig_rate'.*"
        r"did you mean 'train.learning_rate'",
    ):
        load_config(path)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"train": {"batch_size": "16"}}, "train.batch_size' must be an integer"),
        ({"train": {"batch_size": True}}, "train.batch_size' must be an integer"),
        ({"train": {"learning_rate": "fast"}}, "train.learning_rate' must be a number"),
        ({"method": {"patch_mix": {"mode": "both"}}}, "method.patch_mix.mode' must be one of"),
        ({"method": {"regularization": {"kernel_size": 4}}}, "kernel_size must be a positive odd"),
        (
            {"method": {"regularization": {"sigma": 0}}},
            r"config key 'method\.regularization\.sigma' must be a number > 0, got 0\.0$",
        ),
        ({"method": {"regularization": {"enabled": True, "stage": 4}}}, "stage must be in 0..3"),
        (
            {"method": {"regularization": {"enabled": True, "blocks": [2, 8]}}},
            r"blocks \[2, 8\] not valid",
        ),
        ({"model": {"preset": "custom"}}, "set both model.dims and model.depths"),
        ({"model": {"dims": [96, 192], "depths": [2, 2, 8, 2]}}, "same length"),
        ({"data": "x"}, "'data' must be a mapping"),
        ({"config_version": CONFIG_VERSION + 1}, "config_version is"),
    ],
)
def test_bad_values_name_the_key(values, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(values)


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  seed: [1,\n")
    with pytest.raises(ValueError, match=r"bad.yaml: line \d+ is not valid YAML"):
        load_config(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config("/nonexistent/run.yaml")


def test_overrides_check_paths_and_values():
    config = ExperimentConfig()
    assert (
        apply_overrides(config, {"method.patch_mix.temperature": 0.2}).method.patch_mix.temperature
        == 0.2
    )
    with pytest.raises(ValueError, match="did you mean 'method.patch_mix.temperature'"):
        apply_overrides(config, {"method.patch_mix.temprature": 0.2})
    with pytest.raises(ValueError, match="regularization.sigma' must be a number > 0, got -1.0"):
        apply_overrides(config, {"method.regularization.sigma": -1.0})
    assert check_config_path("train.seed") is int


def test_flatten_is_scalar_and_complete():
    flat = flatten_config(ExperimentConfig())
    assert flat["method.regularization.blocks"] == "[2, 3]"
    assert flat["train.learning_rate"] == 5e-05
    assert all(not isinstance(value, (dict, list, tuple)) for value in flat.values())
    assert yaml.safe_load(yaml.safe_dump(config_to_dict(ExperimentConfig())))["train"]["seed"] == 0


def test_library_never_imports_ray_or_mlflow():
    code = (
        "import sys, lungsrad.config, lungsrad.metrics, lungsrad.cli, lungsrad.data, "
        "lungsrad.models, lungsrad.method, lungsrad.training\n"
        "import lungsrad.training.run\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow', 'tuning', "
        "'mlflow_tracking', 'optuna')]\n"
        "print(bad); assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# Reproduction switches (issue: the authors' recipe) and version-1 configs


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"data": {"normalization": "global"}}, "data.normalization' must be one of"),
        (
            {"data": {"model_frames": 0}},
            "data.model_frames' must be an integer >= 1 or null, got 0",
        ),
        ({"data": {"fade": "linear"}}, "data.fade' must be one of"),
        ({"data": {"cycle_slicing": "floor"}}, "data.cycle_slicing' must be one of"),
        ({"data": {"zero_padding": "middle"}}, "data.zero_padding' must be one of"),
        ({"train": {"num_time_masks": -1}}, "train.num_time_masks' must be an integer >= 0"),
        ({"train": {"num_freq_masks": -2}}, "train.num_freq_masks' must be an integer >= 0"),
        ({"train": {"mask_fill": "noise"}}, "train.mask_fill' must be one of"),
        (
            {"train": {"specaugment_probability": 1.5}},
            r"specaugment_probability' must be a number in \[0, 1\], got 1\.5",
        ),
        ({"train": {"optimizer": "sgd"}}, "train.optimizer' must be one of"),
        (
            {"train": {"min_learning_rate_factor": 2}},
            r"min_learning_rate_factor' must be a number in \[0, 1\] \(a share of train",
        ),
        (
            {"train": {"weight_averaging": 1.0}},
            r"weight_averaging' must be a number in \(0, 1\) or null \(a beta",
        ),
        (
            {"train": {"min_sensitivity": 100}},
            r"min_sensitivity' must be a number in \[0, 100\) or null \(a percentage",
        ),
        ({"train": {"drop_last": "yes"}}, "train.drop_last' must be true or false"),
        ({"train": {"schedule": "cosine_1"}}, "train.schedule' must be one of"),
        (
            {"method": {"regularization": {"padding": "same"}}},
            "regularization.padding' must be one",
        ),
        (
            {"method": {"patch_mix": {"train_projector": 1}}},
            "train_projector' must be true or false",
        ),
        (
            {
                "method": {
                    "patch_mix": {"mode": "dual", "project_target": False, "projection_dim": 128}
                }
            },
            "project_target is false.*set method.patch_mix.projection_dim to 768",
        ),
        ({"config_version": 0}, "config_version must be an integer >= 1"),
    ],
)
def test_reproduction_switches_refuse_bad_values(values, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(values)


def test_unprojected_targets_need_the_feature_width_of_the_backbone():
    tiny = {"preset": "custom", "dims": [16, 32, 64, 128], "depths": [1, 1, 2, 1]}
    patch_mix = {"mode": "time", "project_target": False, "projection_dim": 128}
    config = config_from_dict({"model": tiny, "method": {"patch_mix": patch_mix}})
    assert config.method.patch_mix.project_target is False
    ast = {"backbone": "ast", "ast_size": "tiny"}
    with pytest.raises(ValueError, match="projection_dim to 64"):
        config_from_dict({"model": ast, "method": {"patch_mix": patch_mix}})


def test_version_1_configs_keep_their_meaning_and_say_so():
    with pytest.warns(UserWarning, match="config_version 1: read with its own meaning"):
        old = config_from_dict({"config_version": 1, "train": {"num_time_masks": 3}})
    assert old.config_version == CONFIG_VERSION
    assert (old.data.fade, old.data.cycle_slicing, old.data.zero_padding) == (
        "none",
        "rounded",
        "end",
    )
    assert (old.train.num_freq_masks, old.train.mask_fill) == (1, "zero")
    assert (old.train.specaugment_probability, old.train.mask_sampling) == (1.0, "torchaudio")
    assert old.train.num_time_masks == 3  # a key the file sets keeps its value
    # Saved again, it is a current-version config with the same meaning and no warning.
    assert config_from_dict(config_to_dict(old)) == old
    new = config_from_dict({})
    assert (new.data.fade, new.data.cycle_slicing, new.data.zero_padding) == (
        "reference",
        "truncated",
        "centre",
    )
    assert (new.train.num_time_masks, new.train.num_freq_masks, new.train.mask_fill) == (
        2,
        2,
        "mean",
    )
    assert new.train.specaugment_probability == pytest.approx(0.841344746)


@pytest.mark.parametrize(
    ("path", "value", "bound"),
    [
        ("data.sample_rate_hz", 0, "an integer > 0"),
        ("data.segment_seconds", 0, "a number > 0"),
        ("data.num_mel_bins", 7, "an integer >= 8"),
        ("data.feature_std", 0, "a number > 0"),
        ("data.validation_fraction", 1, r"a number in \(0, 1\)"),
        ("model.num_classes", 1, "an integer >= 2"),
        ("model.drop_path_rate", 1, r"a number in \[0, 1\) or null"),
        ("model.depths", [2, 0, 2, 2], "an integer >= 1"),
        ("model.ast_depth", 0, "an integer >= 1"),
        ("method.patch_mix.alpha", 0, "a number > 0"),
        ("method.patch_mix.temperature", 0, "a number > 0"),
        ("method.patch_mix.projection_dim", 0, "an integer >= 1"),
        ("method.patch_mix.freq_loss_weight", -1, "a number >= 0"),
        ("train.num_epochs", 0, "an integer >= 1"),
        ("train.eval_batch_size", 0, "an integer >= 1"),
        ("train.learning_rate", 0, "a number > 0"),
        ("train.weight_decay", -1, "a number >= 0"),
        ("train.warmup_epochs", -1, "an integer >= 0"),
        ("train.time_mask", -1, "an integer >= 0"),
        ("train.max_steps_per_epoch", 0, "an integer >= 1 or null"),
        ("train.grad_clip_norm", 0, "a number > 0 or null"),
        ("train.num_threads", 0, "an integer >= 1 or null"),
    ],
)
def test_field_bounds_are_declared_on_the_fields_and_name_key_and_bound(path, value, bound):
    """The bounds are field rules (lungsrad.schema), checked once, the same way for a config
    file and an override; the message names the key and the bound."""
    key = path.replace(".", r"\.")
    with pytest.raises(ValueError, match=rf"config key '{key}(\[\d\])?' must be {bound}, got"):
        apply_overrides(ExperimentConfig(), {path: value})


def test_warmup_longer_than_the_run_is_a_cross_key_check():
    with pytest.raises(ValueError, match=r"train.warmup_epochs must be in 0..num_epochs, got 6"):
        config_from_dict({"train": {"num_epochs": 5, "warmup_epochs": 6}})
