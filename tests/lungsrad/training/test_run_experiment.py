"""run_experiment end to end on real synthetic wavs and a real tiny DASS: outputs, callbacks,
exact resume (also past a corrupt checkpoint), refusals, NaN loss, both protocols, every
Table 2 variant, and evaluate_checkpoint."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lungsrad.checkpoint_format import read_lungsrad_checkpoint
from lungsrad.config import load_config
from lungsrad.metrics import (
    CLASS_NAMES,
    EPOCH,
    EVAL_KEYS,
    REPORT_EPOCH,
    REPORT_PREFIX,
    REPORT_SCORE,
    SCORE,
    SELECTION_SCORE,
    SPLIT_TEST,
    SPLIT_VALIDATION,
    TRAIN_CE_LOSS,
    TRAIN_FREQ_LOSS,
    TRAIN_LEARNING_RATE,
    TRAIN_LOSS,
    TRAIN_SAMPLES_PER_SECOND,
    TRAIN_TIME_LOSS,
    confusion_degenerate_note,
    metric_name,
    metrics_degenerate_note,
    predicted_metric_name,
)
from lungsrad.training import (
    CheckpointError,
    NonFiniteLossError,
    RunInfo,
    RunResult,
    TrainingCallback,
    evaluate_checkpoint,
    run_experiment,
)
from lungsrad.training.checkpoint_files import (
    BEST_FILE,
    CHECKPOINT_FILE,
    epoch_checkpoints,
    epoch_folder,
)

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
TABLE2 = sorted(CONFIGS.glob("earlier_reading/table2_*.yaml"))


class Recorder(TrainingCallback):
    def __init__(self, stop_after_epoch: int | None = None) -> None:
        self.infos: list[RunInfo] = []
        self.epochs: list[tuple[int, dict[str, float], list[str]]] = []
        self.results: list[RunResult] = []
        self.stop_after_epoch = stop_after_epoch

    def on_run_start(self, info: RunInfo) -> None:
        self.infos.append(info)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        self.epochs.append((epoch, metrics, sorted(p.name for p in checkpoint_dir.iterdir())))
        if epoch == self.stop_after_epoch:
            raise KeyboardInterrupt  # what a killed worker looks like to the run: it just stops

    def on_run_end(self, result: RunResult) -> None:
        self.results.append(result)


def _final_model(output_dir: Path) -> dict[str, torch.Tensor]:
    _, path = epoch_checkpoints(output_dir)[-1]
    return read_lungsrad_checkpoint(path)["model"]


def _assert_same_run(first: Path, second: Path) -> None:
    history_a = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines()]
    history_b = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    for row in history_a + history_b:
        row.pop(TRAIN_SAMPLES_PER_SECOND)  # wall-clock dependent
    assert history_a == history_b
    model_a, model_b = _final_model(first), _final_model(second)
    assert model_a.keys() == model_b.keys()
    for key in model_a:
        assert torch.equal(model_a[key], model_b[key]), key


@pytest.fixture(scope="module")
def dual_config(make_tiny_config):
    return make_tiny_config(
        method__patch_mix__mode="dual",
        method__regularization__enabled=True,
        model__drop_path_rate=0.1,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, dual_config, tiny_features):
    """An uninterrupted 2-epoch run of the full method (regularization + dual mix + drop path)."""
    output_dir = tmp_path_factory.mktemp("finished_run")
    recorder = Recorder()
    result = run_experiment(
        dual_config,
        output_dir=output_dir,
        feature_set=tiny_features,
        callbacks=[recorder],
        show_progress=False,
    )
    return output_dir, result, recorder


def test_outputs_and_callbacks(finished_run, dual_config):
    output_dir, result, recorder = finished_run
    assert len(recorder.infos) == 1 and recorder.infos[0].start_epoch == 1
    info = recorder.infos[0]
    assert info.device == "cpu" and info.amp_dtype == "off" and info.num_parameters > 0
    assert set(info.split_sizes) == {"train", "test"}
    assert [epoch for epoch, _, _ in recorder.epochs] == [1, 2]
    for epoch, metrics, files in recorder.epochs:
        assert files == [CHECKPOINT_FILE]
        assert metrics[EPOCH] == epoch
        expected = {TRAIN_LOSS, TRAIN_CE_LOSS, TRAIN_TIME_LOSS, TRAIN_FREQ_LOSS}
        expected |= {TRAIN_LEARNING_RATE, TRAIN_SAMPLES_PER_SECOND, SELECTION_SCORE, REPORT_EPOCH}
        expected |= {metric_name(SPLIT_TEST, key) for key in EVAL_KEYS}
        expected |= {metric_name(REPORT_PREFIX, key) for key in EVAL_KEYS}
        assert expected <= set(metrics)
        assert metrics[SELECTION_SCORE] == metrics[metric_name(SPLIT_TEST, SCORE)]
        assert metrics[TRAIN_TIME_LOSS] > 0 and metrics[TRAIN_FREQ_LOSS] > 0  # dual mode
    assert recorder.results == [result]
    best = result.best_epoch
    assert result.report[REPORT_SCORE] == result.history[best - 1][metric_name(SPLIT_TEST, SCORE)]
    assert result.report[REPORT_SCORE] == max(row[SELECTION_SCORE] for row in result.history)
    assert result.confusion.shape == (4, 4)
    assert result.confusion.sum() == info.split_sizes["test"]
    for name in ("config.yaml", "metrics.jsonl", "result.json", BEST_FILE):
        assert (output_dir / name).is_file(), name
    assert len((output_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((output_dir / "result.json").read_text())["best_epoch"] == best
    assert read_lungsrad_checkpoint(output_dir / BEST_FILE)["epoch"] == best
    assert load_config(output_dir / "config.yaml") == dual_config
    assert "ICBHI Score" in result.format_text() and "crackle" in result.format_text()
    shares = [result.report[predicted_metric_name(REPORT_PREFIX, name)] for name in CLASS_NAMES]
    assert sum(shares) == pytest.approx(100.0)
    assert metrics_degenerate_note(result.report) == confusion_degenerate_note(result.confusion)


def test_lungsrad_train_says_when_its_classifier_is_degenerate(finished_run):
    _, result, _ = finished_run
    every_cycle_normal = np.zeros_like(result.confusion)
    every_cycle_normal[:, 0] = result.confusion.sum(axis=1)
    lines = dataclasses.replace(result, confusion=every_cycle_normal).format_text().splitlines()
    score = next(i for i, line in enumerate(lines) if line.startswith("test at that epoch:"))
    assert lines[score + 1] == (
        "warning: degenerate: predicts only 'normal' on the test split; its score is not a result"
    )
    mixed = np.array([[5, 1, 1, 1], [1, 5, 1, 0], [1, 1, 5, 0], [0, 0, 0, 1]])
    assert "degenerate" not in dataclasses.replace(result, confusion=mixed).format_text()


def test_resume_after_an_interruption_matches_the_uninterrupted_run(
    tmp_path, finished_run, dual_config, tiny_features
):
    reference_dir = finished_run[0]
    interrupted = Recorder(stop_after_epoch=1)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(
            dual_config,
            output_dir=tmp_path,
            feature_set=tiny_features,
            callbacks=[interrupted],
            show_progress=False,
        )
    resumed = Recorder()
    run_experiment(
        dual_config,
        output_dir=tmp_path,
        feature_set=tiny_features,
        callbacks=[resumed],
        show_progress=False,
    )
    assert resumed.infos[0].start_epoch == 2
    assert [epoch for epoch, _, _ in resumed.epochs] == [2]
    _assert_same_run(reference_dir, tmp_path)

    # A Ray Tune restore: a copy of the epoch-1 checkpoint, continued in a fresh folder.
    copy = tmp_path / "restored_checkpoint.pt"
    shutil.copy(epoch_folder(tmp_path, 1) / CHECKPOINT_FILE, copy)
    # The selected epoch's checkpoint is expected to be absent there: no warning about best.pt.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        run_experiment(
            dual_config,
            output_dir=tmp_path / "restored",
            feature_set=tiny_features,
            resume_from=copy,
            show_progress=False,
        )
    _assert_same_run(reference_dir, tmp_path / "restored")


def test_a_corrupt_latest_checkpoint_is_skipped_and_the_run_still_replays(
    tmp_path, finished_run, dual_config, tiny_features
):
    reference_dir, _, _ = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(reference_dir, run_dir)
    latest = epoch_folder(run_dir, 2) / CHECKPOINT_FILE
    latest.write_bytes(latest.read_bytes()[:1000])
    recorder = Recorder()
    with pytest.warns(UserWarning, match="skipping corrupt checkpoint"):
        run_experiment(
            dual_config,
            output_dir=run_dir,
            feature_set=tiny_features,
            callbacks=[recorder],
            show_progress=False,
        )
    assert recorder.infos[0].start_epoch == 2
    _assert_same_run(reference_dir, run_dir)


def test_a_finished_run_is_not_trained_again(tmp_path, finished_run, dual_config, tiny_features):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run[0], run_dir)
    recorder = Recorder()
    result = run_experiment(
        dual_config,
        output_dir=run_dir,
        feature_set=tiny_features,
        callbacks=[recorder],
        show_progress=False,
    )
    assert recorder.epochs == [] and recorder.infos[0].start_epoch == 3
    assert result.report == finished_run[1].report


def test_resume_refuses_another_config_and_no_resume_refuses_old_checkpoints(
    tmp_path, finished_run, dual_config, tiny_features
):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run[0], run_dir)
    other = dataclasses.replace(
        dual_config, train=dataclasses.replace(dual_config.train, learning_rate=0.5)
    )
    with pytest.raises(CheckpointError, match="different config.*train.learning_rate"):
        run_experiment(other, output_dir=run_dir, feature_set=tiny_features, show_progress=False)
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        run_experiment(
            dual_config,
            output_dir=run_dir,
            feature_set=tiny_features,
            resume=False,
            show_progress=False,
        )


def test_non_finite_loss_raises_naming_epoch_and_step(tmp_path, make_tiny_config, tiny_features):
    features = tiny_features.features.clone()
    features[:] = float("inf")
    poisoned = dataclasses.replace(tiny_features, features=features)
    config = make_tiny_config(train__use_specaugment=False)
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 1"):
        run_experiment(config, output_dir=tmp_path, feature_set=poisoned, show_progress=False)
    assert epoch_checkpoints(tmp_path) == []


def test_an_optimizer_update_that_overflows_is_a_non_finite_loss(
    tmp_path, make_tiny_config, tiny_features
):
    # Adam's step size lr / (1 - beta1) = 1e39 is past float32's range: torch refuses the update.
    config = make_tiny_config(train__learning_rate=1.0e38)
    with pytest.raises(NonFiniteLossError, match="optimizer update overflowed at epoch 1, step 1"):
        run_experiment(config, output_dir=tmp_path, feature_set=tiny_features, show_progress=False)
    assert epoch_checkpoints(tmp_path) == []


def test_validated_protocol_selects_on_validation_and_reports_test(
    tmp_path, make_tiny_config, tiny_features
):
    config = make_tiny_config(
        train__protocol="validated", train__num_epochs=3, train__max_steps_per_epoch=1
    )
    result = run_experiment(
        config, output_dir=tmp_path, feature_set=tiny_features, show_progress=False
    )
    assert set(result.info.split_sizes) == {"train", "val", "test"}
    for row in result.history:
        assert row[SELECTION_SCORE] == row[metric_name(SPLIT_VALIDATION, SCORE)]
    scores = [row[SELECTION_SCORE] for row in result.history]
    finite = [s if np.isfinite(s) else -np.inf for s in scores]
    assert result.best_epoch == int(np.argmax(finite)) + 1
    selected = result.history[result.best_epoch - 1]
    for key in EVAL_KEYS:
        np.testing.assert_equal(
            result.report[metric_name(REPORT_PREFIX, key)], selected[metric_name(SPLIT_TEST, key)]
        )


@pytest.mark.parametrize("path", TABLE2, ids=[path.stem for path in TABLE2])
def test_every_table2_variant_trains_a_step(tmp_path, path, make_tiny_config, tiny_features):
    table_config = load_config(path)
    # A tiny DASS with 4 blocks in stage 2, so the paper's placement (blocks 2 and 3) stays.
    config = make_tiny_config(
        table_config,
        model__depths=[1, 1, 4, 1],
        train__num_epochs=1,
        train__max_steps_per_epoch=1,
        method__regularization__blocks=list(table_config.method.regularization.blocks),
        method__patch_mix__projection_dim=table_config.method.patch_mix.projection_dim,
    )
    assert config.method == table_config.method
    result = run_experiment(
        config, output_dir=tmp_path, feature_set=tiny_features, show_progress=False
    )
    row = result.history[0]
    assert np.isfinite(row[TRAIN_LOSS])
    mode = table_config.method.patch_mix.mode
    assert (row[TRAIN_TIME_LOSS] > 0) == (mode in ("time", "dual", "ast_style"))
    assert (row[TRAIN_FREQ_LOSS] > 0) == (mode in ("freq", "dual"))


def test_evaluate_checkpoint_reproduces_the_reported_metrics(tmp_path, finished_run):
    output_dir, result, _ = finished_run
    report = evaluate_checkpoint(
        output_dir / BEST_FILE, data_root=None, split="test", output_dir=tmp_path
    )
    assert report.epoch == result.best_epoch
    for key in EVAL_KEYS:
        np.testing.assert_equal(
            report.metrics[metric_name(SPLIT_TEST, key)],
            result.report[metric_name(REPORT_PREFIX, key)],
        )
    np.testing.assert_array_equal(report.confusion, result.confusion)
    assert (tmp_path / "confusion_test.png").stat().st_size > 1000
    assert json.loads((tmp_path / "evaluation_test.json").read_text())["split"] == "test"
    text = report.format_text()
    assert "ICBHI Score" in text and "wheeze" in text
