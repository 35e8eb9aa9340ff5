"""The training switches of the authors' recipe in a run: drop_last, the min_sensitivity epoch
guard, the model_frames resize in training and evaluation, a frozen projection head, and
`lungsrad train` with every switch on (tiny DASS and tiny AST, synthetic data)."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
import yaml

from lungsrad.cli import main
from lungsrad.config import TrainConfig
from lungsrad.errors import UserError
from lungsrad.metrics import SCORE, SENSITIVITY, SPLIT_TEST, metric_name
from lungsrad.training.loop import _batches, predict, steps_per_epoch
from lungsrad.training.run import _is_better, run_experiment
from lungsrad.training.setup import build_training_parts
from lungsrad.training.train_step import EpochData

TEST_SE = metric_name(SPLIT_TEST, SENSITIVITY)
TEST_SCORE = metric_name(SPLIT_TEST, SCORE)


def test_drop_last_drops_only_the_last_partial_batch():
    kept, dropped = TrainConfig(batch_size=4), TrainConfig(batch_size=4, drop_last=True)
    assert steps_per_epoch(47, kept) == 12 and steps_per_epoch(47, dropped) == 11
    assert steps_per_epoch(48, dropped) == 12
    order = torch.arange(47)
    sizes = [len(batch) for batch in _batches(order, 4, steps_per_epoch(47, dropped))]
    assert sizes == [4] * 11
    assert [len(b) for b in _batches(order, 4, steps_per_epoch(47, kept))][-1] == 3


def test_a_floor_without_a_cosine_schedule_is_warned_about():
    from lungsrad.config import config_from_dict

    with pytest.warns(UserWarning, match="min_learning_rate_factor .* ignored"):
        config_from_dict({"train": {"schedule": "step", "min_learning_rate_factor": 0.1}})


def test_drop_last_refuses_a_training_split_smaller_than_one_batch(make_tiny_config, tmp_path):
    config = make_tiny_config(train__drop_last=True, train__batch_size=500, train__num_epochs=1)
    with pytest.raises(UserError, match="train.drop_last drops every batch"):
        run_experiment(config, output_dir=tmp_path / "run", show_progress=False)


def _selected(history, guard):
    """The reference's rule, written out: the first epoch of highest Score among those with
    Se > guard; none qualifying: the first epoch of highest Score."""
    rows = [(row[TEST_SCORE], -index, index) for index, row in enumerate(history, 1)]
    qualifying = [r for r, row in zip(rows, history, strict=True) if row[TEST_SE] > guard]
    pool = qualifying or rows
    return max(pool)[2], bool(qualifying)


def test_is_better_puts_qualifying_epochs_first():
    assert _is_better(50.0, None, qualifies=False)
    unqualified = {"selection_score": 70.0, "qualifies": False}
    assert _is_better(40.0, unqualified, qualifies=True)
    assert not _is_better(80.0, {"selection_score": 40.0, "qualifies": True}, qualifies=False)
    assert _is_better(80.0, unqualified, qualifies=False)
    assert _is_better(41.0, {"selection_score": 40.0}, qualifies=True)  # older checkpoints


def test_min_sensitivity_moves_the_reported_epoch(make_tiny_config, tmp_path):
    base = make_tiny_config(train__num_epochs=4, train__max_steps_per_epoch=3)
    free = run_experiment(base, output_dir=tmp_path / "free", show_progress=False)
    assert free.min_sensitivity_met is None
    sensitivities = sorted({row[TEST_SE] for row in free.history})
    # A guard just below the selected epoch's Se, then just at it (excluding it and every epoch
    # with a lower Se), then above every epoch.
    best_se = free.history[free.best_epoch - 1][TEST_SE]
    guards = [max(best_se - 1e-6, 0.0), best_se, min(sensitivities[-1] + 1e-6, 99.99)]
    for index, guard in enumerate(guards):
        config = make_tiny_config(
            train__num_epochs=4, train__max_steps_per_epoch=3, train__min_sensitivity=guard
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run_experiment(config, output_dir=tmp_path / f"g{index}", show_progress=False)
        # Same seed, same CPU: the epochs replay the unguarded run exactly.
        assert [row[TEST_SCORE] for row in result.history] == [
            row[TEST_SCORE] for row in free.history
        ]
        epoch, met = _selected(result.history, guard)
        assert (result.best_epoch, result.min_sensitivity_met) == (epoch, met), guard
        written = json.loads((tmp_path / f"g{index}" / "result.json").read_text())
        assert written["min_sensitivity_met"] is met and written["best_epoch"] == epoch
        assert any("min_sensitivity" in str(w.message) for w in caught) == (not met)
    assert not met  # the last guard is above every epoch's Se


def _first_layer_inputs(model: torch.nn.Module) -> tuple[list, torch.utils.hooks.RemovableHandle]:
    seen: list[tuple[int, ...]] = []
    layer = model.patch_embed
    handle = layer.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    return seen, handle


@pytest.mark.parametrize("backbone", ["dass", "ast"])
def test_training_and_evaluation_both_see_model_frames(backbone, make_tiny_config, tiny_features):
    overrides = {"data__model_frames": 112}
    if backbone == "ast":
        overrides.update(model__backbone="ast", model__ast_size="tiny")
    config = make_tiny_config(**overrides)
    parts = build_training_parts(config, torch.device("cpu"))
    data = EpochData(
        features=tiny_features.features,
        labels=tiny_features.labels,
        train_indices=torch.arange(8),
    )
    step = parts.train_step(data, capture=False)
    seen, handle = _first_layer_inputs(parts.model)
    rows = torch.rand(1, 4000)
    mask_rows = step.specaugment.rows * 4
    step(torch.arange(4), rows[0, : mask_rows + _mix_width(step)], epoch=1, step=1)
    predict(
        parts.model, data.features, torch.arange(5), batch_size=8, amp_dtype=None, model_frames=112
    )
    handle.remove()
    assert tiny_features.features.shape[1] == 98
    # DASS embeds (batch, 1, mel, frames); AST (batch, 1, frames?, ...): the frame axis is 112.
    assert seen and all(112 in shape and 98 not in shape for shape in seen), seen


def _mix_width(step) -> int:
    return sum(2 + step.train.batch_size for _ in step.objective.mixes)


def test_a_frozen_projector_is_left_out_of_the_optimiser(make_tiny_config):
    frozen = make_tiny_config(
        method__patch_mix__mode="dual",
        method__patch_mix__project_target=False,
        method__patch_mix__train_projector=False,
        method__patch_mix__projection_dim=128,  # the tiny DASS's feature width
    )
    parts = build_training_parts(frozen, torch.device("cpu"))
    optimised = {id(p) for group in parts.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in parts.objective.parameters())
    assert all(id(p) in optimised for p in parts.model.parameters())
    trained = build_training_parts(
        make_tiny_config(method__patch_mix__mode="dual"), torch.device("cpu")
    )
    optimised = {id(p) for group in trained.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimised for p in trained.objective.parameters())


EVERY_SWITCH = {
    "data": {
        "segment_seconds": 1.0,
        "num_mel_bins": 32,
        "normalization": "per_example",
        "model_frames": 128,
        "fade": "reference",
    },
    "model": {"preset": "custom", "dims": [16, 32, 64, 128], "depths": [1, 1, 2, 1]},
    "method": {
        "regularization": {
            "enabled": True,
            "stage": 2,
            "blocks": [0, 1],
            "padding": "zero",
            "kernel_size": 5,
            "sigma": 3.0,
        },
        "patch_mix": {
            "mode": "dual",
            "temperature": 0.2,
            "gradient_block": "target",
            "project_target": False,
            "train_projector": False,
            "projection_dim": 128,
        },
    },
    "train": {
        "num_epochs": 2,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "max_steps_per_epoch": 3,
        "time_mask": 20,
        "freq_mask": 8,
        "num_time_masks": 2,
        "num_freq_masks": 2,
        "mask_fill": "mean",
        "specaugment_probability": 0.8413,
        "mask_sampling": "reference",
        "optimizer": "adamw",
        "min_learning_rate_factor": 1e-3,
        "schedule": "cosine_from_epoch_1",
        "drop_last": True,
        "weight_averaging": 0.5,
        "min_sensitivity": 5.0,
        "device": "cpu",
        "num_threads": 1,
    },
}


@pytest.mark.parametrize("backbone", ["dass", "ast"])
def test_lungsrad_train_with_every_switch_on(backbone, synthetic_root, feature_cache, tmp_path):
    values = json.loads(json.dumps(EVERY_SWITCH))
    values["data"]["cache_dir"] = str(feature_cache)
    if backbone == "ast":
        values["model"] = {"backbone": "ast", "ast_size": "tiny"}
        values["method"]["regularization"].update(stage=0, blocks=[0, 1])
        values["method"]["patch_mix"]["projection_dim"] = 64  # the tiny AST's width
        values["data"]["normalization"] = "audioset"
    path = tmp_path / "every_switch.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    out = tmp_path / "run"
    code = main(["train", "--config", str(path), "--data", str(synthetic_root), "--out", str(out)])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["num_epochs"] == 2 and result["min_sensitivity_met"] in (True, False)
    rates = [json.loads(line)["train/learning_rate"] for line in open(out / "metrics.jsonl")]
    floor = 1e-3 * 1e-3
    assert rates == pytest.approx(
        [floor + (1e-3 - floor) * (1 + math.cos(math.pi * e / 2)) / 2 for e in (1, 2)]
    )


TINY_STAND_INS = {
    "lung_srad_authors.yaml": [
        "model.preset=custom",
        "model.dims=[16, 32, 64, 128]",
        "model.depths=[1, 1, 4, 1]",
        "method.patch_mix.projection_dim=128",
    ],
    "table1_ast_patchmix.yaml": [
        "model.ast_size=tiny",
        "method.patch_mix.projection_dim=64",
    ],
}


@pytest.mark.parametrize("name", sorted(TINY_STAND_INS))
def test_the_shipped_authors_configs_train_a_tiny_stand_in(
    name, synthetic_root, feature_cache, tmp_path
):
    """The shipped recipe files themselves, every switch as the authors', with only the model
    shrunk and the run shortened on the command line (as a user tries a recipe on a laptop)."""
    from pathlib import Path

    from lungsrad.config import load_config

    config_path = Path(__file__).resolve().parents[3] / "configs" / name
    recipe = load_config(config_path)
    overrides = [
        *TINY_STAND_INS[name],
        "model.checkpoint=null",
        "data.segment_seconds=1.0",
        "data.num_mel_bins=32",
        f"data.cache_dir={feature_cache}",
        "train.num_epochs=2",
        "train.batch_size=4",
        "train.max_steps_per_epoch=3",
        "train.time_mask=20",
        "train.freq_mask=8",
        "train.device=cpu",
        "train.num_threads=1",
    ]
    if recipe.data.model_frames is not None:
        overrides.append("data.model_frames=128")
    out = tmp_path / "run"
    argv = ["train", "--config", str(config_path), "--data", str(synthetic_root)]
    argv += ["--out", str(out)] + [item for o in overrides for item in ("--set", o)]
    assert main(argv) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    # Everything the recipe says and the command line did not touch reached the run.
    for section, key in [
        ("data", "normalization"),
        ("data", "fade"),
        ("train", "optimizer"),
        ("train", "weight_averaging"),
        ("train", "specaugment_probability"),
        ("train", "drop_last"),
        ("train", "min_sensitivity"),
        ("train", "schedule"),
    ]:
        assert saved[section][key] == getattr(getattr(recipe, section), key), (section, key)
    assert saved["method"]["patch_mix"] == {
        **yaml.safe_load(yaml.safe_dump(recipe.method.patch_mix.__dict__)),
        "projection_dim": saved["method"]["patch_mix"]["projection_dim"],
    }
    result = json.loads((out / "result.json").read_text())
    assert result["num_epochs"] == 2
