"""The training step on CUDA: no host sync inside a step, a captured (CUDA-graph) step that matches
the eager step on the same numbers, and a run with train.capture_step that reports its capture
time and resumes like an uninterrupted run. Needs a GPU; skipped elsewhere."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from lungsrad.config import apply_overrides
from lungsrad.data.loaders import split_indices
from lungsrad.metrics import (
    TRAIN_CAPTURE_SECONDS,
    TRAIN_CE_LOSS,
    TRAIN_FREQ_LOSS,
    TRAIN_LOSS,
    TRAIN_SAMPLES_PER_SECOND,
    TRAIN_TIME_LOSS,
)
from lungsrad.training.loop import EpochTotals, draw_epoch_randomness, train_one_epoch
from lungsrad.training.optimization import learning_rate_factor
from lungsrad.training.run import TrainingCallback, run_experiment
from lungsrad.training.setup import build_training_parts
from lungsrad.training.train_step import EpochData, TrainStep

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = torch.device("cuda")


@pytest.fixture
def deterministic_cudnn():
    """Deterministic convolution kernels, so that differences come from the step itself."""
    previous = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    yield
    torch.backends.cudnn.deterministic = previous


@pytest.fixture
def gpu_config(make_tiny_config):
    """The full method on the tiny DASS, every training cycle per epoch (several full batches
    and a smaller last one), drop path on."""
    return make_tiny_config(
        method__patch_mix__mode="dual",
        method__regularization__enabled=True,
        model__drop_path_rate=0.1,
        train__device="cuda",
        train__max_steps_per_epoch=None,
        train__amp="off",
    )


def _train_step(
    config, features, *, capture: bool, amp: str = "off", capturable: bool = True
) -> TrainStep:
    """The run's TrainStep; by default with capture_step's capturable Adam in both modes, so
    the eager and the captured step compute the same update."""
    config = dataclasses.replace(
        config, train=dataclasses.replace(config.train, capture_step=capturable, amp=amp)
    )
    parts = build_training_parts(config, CUDA)
    splits = split_indices(features, protocol="paper", validation_fraction=0.2, seed=0)
    data = EpochData(
        features=features.features.to(CUDA),
        labels=features.labels.to(CUDA),
        train_indices=torch.as_tensor(splits["train"]).to(CUDA),
    )
    return parts.train_step(data, capture=capture)


def _train_epochs(step: TrainStep, config, epochs: int) -> list[dict[str, float]]:
    history = []
    for epoch in range(1, epochs + 1):
        for group in step.optimizer.param_groups:
            group["lr"].fill_(
                config.train.learning_rate * learning_rate_factor(epoch - 1, config.train)
            )
        metrics = train_one_epoch(
            step_function=step,
            data=step.data,
            train=config.train,
            seed=config.train.seed,
            epoch=epoch,
            show_progress=False,
        )
        metrics.pop(TRAIN_SAMPLES_PER_SECOND)
        metrics.pop(TRAIN_CAPTURE_SECONDS, None)
        history.append(metrics)
    return history


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_captured_step_matches_the_eager_step(gpu_config, tiny_features, amp, deterministic_cudnn):
    eager = _train_step(gpu_config, tiny_features, capture=False, amp=amp)
    captured = _train_step(gpu_config, tiny_features, capture=True, amp=amp)
    steps = -(-eager.data.train_indices.shape[0] // gpu_config.train.batch_size)
    assert steps > TrainStep.WARMUP_STEPS + 1, "too few steps to replay the graph"
    eager_history = _train_epochs(eager, gpu_config, 2)
    captured_history = _train_epochs(captured, gpu_config, 2)
    assert captured._graph is not None and captured.capture_seconds > 0
    tolerance = {"rtol": 1e-4, "atol": 1e-5} if amp == "off" else {"rtol": 2e-2, "atol": 1e-3}
    worst = 0.0
    for (name, want), got in zip(
        eager.model.state_dict().items(), captured.model.state_dict().values(), strict=True
    ):
        if want.is_floating_point():
            worst = max(worst, float((want - got).abs().max()))
            torch.testing.assert_close(got, want, **tolerance, msg=name)
    print(f"captured vs eager (amp {amp}): largest parameter difference {worst:.3g}")
    for want, got in zip(eager_history, captured_history, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=tolerance["rtol"] * 10), key


AUTHORS_SWITCHES = dict(
    method__patch_mix__gradient_block="target",
    method__patch_mix__project_target=False,
    method__patch_mix__train_projector=False,
    method__patch_mix__projection_dim=128,  # the tiny DASS's feature width
    method__regularization__padding="zero",
    data__model_frames=128,
    train__optimizer="adamw",
    train__weight_averaging=0.5,
    train__drop_last=True,
)


def test_captured_step_with_the_authors_switches_matches_the_eager_step(
    gpu_config, tiny_features, deterministic_cudnn
):
    # AdamW, weight averaging (snapshot and lerp inside the graph), the resize, the frozen
    # projector and the reference's SpecAugment, captured and eager.
    config = apply_overrides(
        gpu_config, {key.replace("__", "."): value for key, value in AUTHORS_SWITCHES.items()}
    )
    eager = _train_step(config, tiny_features, capture=False)
    captured = _train_step(config, tiny_features, capture=True)
    assert captured.averaging is not None and type(captured.optimizer) is torch.optim.AdamW
    _train_epochs(eager, config, 2)
    _train_epochs(captured, config, 2)
    assert captured._graph is not None
    for (name, want), got in zip(
        eager.model.state_dict().items(), captured.model.state_dict().values(), strict=True
    ):
        if want.is_floating_point():
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)


def test_eager_and_replayed_steps_never_sync_with_the_host(gpu_config, tiny_features):
    # The default eager step (plain Adam) and the replayed one (capturable Adam).
    for capture in (False, True):
        step = _train_step(gpu_config, tiny_features, capture=capture, capturable=capture)
        batch_size = gpu_config.train.batch_size
        order = step.data.train_indices
        steps = order.shape[0] // batch_size
        randomness = draw_epoch_randomness(
            seed=0,
            epoch=1,
            num_steps=steps,
            batch_size=batch_size,
            specaugment=step.specaugment,
            mixes=step.objective.mixes,
            alpha=1.0,
            cells=step.cells,
            device=CUDA,
        )
        totals = EpochTotals(CUDA)
        batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]
        # Warm-up and capture synchronise by design; the steps after them must not.
        first_checked = TrainStep.WARMUP_STEPS + 1 if capture else 1
        assert steps > first_checked + 1, "too few steps to check"
        for index, batch in enumerate(batches[:first_checked]):
            totals.add(step(batch, randomness[index], epoch=1, step=index + 1), batch_size)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for index in range(first_checked, steps):
                values = step(batches[index], randomness[index], epoch=1, step=index + 1)
                totals.add(values, batch_size)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        totals.raise_if_not_finite(epoch=1)


def test_a_captured_run_reports_capture_time_and_resumes_exactly(
    tmp_path, gpu_config, tiny_features, deterministic_cudnn
):
    config = dataclasses.replace(
        gpu_config, train=dataclasses.replace(gpu_config.train, capture_step=True, amp="bf16")
    )
    result = run_experiment(
        config, output_dir=tmp_path / "whole", feature_set=tiny_features, show_progress=False
    )
    assert result.info.capture_step
    first, second = (row[TRAIN_CAPTURE_SECONDS] for row in result.history)
    assert first > 0 and second == 0  # captured once, replayed in epoch 2
    assert result.capture_seconds == pytest.approx(first)
    written = json.loads((tmp_path / "whole" / "result.json").read_text())
    assert written["capture_seconds"] == pytest.approx(first)

    with pytest.raises(KeyboardInterrupt):
        run_experiment(
            config,
            output_dir=tmp_path / "resumed",
            feature_set=tiny_features,
            callbacks=[_StopAfterFirstEpoch()],
            show_progress=False,
        )
    # The second session trains epoch 2 from the epoch-1 checkpoint, warming up and capturing
    # its step again.
    resumed = run_experiment(
        config, output_dir=tmp_path / "resumed", feature_set=tiny_features, show_progress=False
    )
    assert resumed.info.start_epoch == 2
    assert resumed.history[1][TRAIN_CAPTURE_SECONDS] > 0
    # Training losses only: an evaluation score moves in steps of whole predictions.
    for want, got in zip(result.history, resumed.history, strict=True):
        for key in (TRAIN_LOSS, TRAIN_CE_LOSS, TRAIN_TIME_LOSS, TRAIN_FREQ_LOSS):
            assert got[key] == pytest.approx(want[key], rel=2e-2, abs=1e-3), key


class _StopAfterFirstEpoch(TrainingCallback):
    def on_epoch_end(self, epoch, metrics, checkpoint_dir) -> None:
        raise KeyboardInterrupt  # what a killed worker looks like to the run
