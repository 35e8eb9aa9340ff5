"""The training step without host syncs: per-epoch random numbers drawn up front as tensors,
SpecAugment masks built from them, the device-side NaN/inf flag, and the optimizer forms of the
eager and captured steps (patch mixes from drawn tensors: tests/lungsrad/method)."""

from __future__ import annotations

import pytest
import torch

from lungsrad.config import config_from_dict
from lungsrad.training.loop import EpochTotals, draw_epoch_randomness
from lungsrad.training.run import run_experiment
from lungsrad.training.specaugment import SpecAugmentPolicy, sample_mask_uniforms, spec_augment
from lungsrad.training.train_step import NonFiniteLossError, conform_optimizer


def test_epoch_randomness_depends_only_on_seed_and_epoch():
    policy = SpecAugmentPolicy(num_time_masks=2, num_freq_masks=2, probability=0.8)
    arguments = dict(
        num_steps=7, batch_size=4, specaugment=policy, mixes=("time", "freq"), alpha=1.0, cells=0
    )
    first = draw_epoch_randomness(seed=3, epoch=2, device=torch.device("cpu"), **arguments)
    again = draw_epoch_randomness(seed=3, epoch=2, device=torch.device("cpu"), **arguments)
    other = draw_epoch_randomness(seed=3, epoch=3, device=torch.device("cpu"), **arguments)
    # 2 * (2 + 2) mask uniforms + 1 probability draw per sample, then per mix lambda, position
    # and 4 partner keys.
    assert first.shape == (7, 9 * 4 + 2 * (2 + 4)) and first.dtype == torch.float32
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert ((first >= 0) & (first <= 1)).all()
    # The mask count changes no other stream: the mix columns stay the same.
    plain = draw_epoch_randomness(
        seed=3, epoch=2, device=torch.device("cpu"), **{**arguments, "specaugment": None}
    )
    assert plain.shape == (7, 2 * (2 + 4)) and torch.equal(plain, first[:, 9 * 4 :])


def test_spec_augment_from_uniforms_equals_the_generator_path():
    features = torch.rand(6, 50, 20) + 1.0
    policy = SpecAugmentPolicy(time_mask=20, freq_mask=8)
    uniforms = sample_mask_uniforms(
        1, 6, policy=policy, generator=torch.Generator().manual_seed(5)
    )[0]
    from_generator = spec_augment(
        features, policy=policy, generator=torch.Generator().manual_seed(5)
    )
    from_uniforms = spec_augment(features, policy=policy, uniforms=uniforms)
    assert torch.equal(from_generator, from_uniforms)
    assert not torch.equal(from_uniforms, features)
    # A smaller batch reads the first columns of a row drawn for the full batch.
    head = spec_augment(features[:2], policy=policy, uniforms=uniforms)
    assert torch.equal(head, from_uniforms[:2])
    with pytest.raises(ValueError, match="exactly one"):
        spec_augment(features, policy=policy)


def test_epoch_totals_name_the_first_non_finite_step_when_looked_at():
    totals = EpochTotals(torch.device("cpu"))
    totals.add(torch.tensor([1.0, 1.0, 0.0, 0.0]), 4)
    totals.add(torch.tensor([3.0, 2.0, 0.5, 0.5]), 2)
    totals.raise_if_not_finite(epoch=1)  # all finite so far: nothing happens
    assert totals.means() == pytest.approx([5 / 3, 4 / 3, 1 / 6, 1 / 6])
    totals.add(torch.tensor([float("nan"), 1.0, float("inf"), 0.0]), 4)
    totals.add(torch.tensor([float("nan")] * 4), 4)  # later bad steps do not move the blame
    with pytest.raises(
        NonFiniteLossError, match=r"epoch 7, step 3 \(loss nan, ce 1.0, time_mix inf"
    ):
        totals.raise_if_not_finite(epoch=7)


def test_conform_optimizer_switches_between_eager_and_captured_forms():
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([parameter], lr=0.01)
    parameter.grad = torch.ones(3)
    optimizer.step()
    cpu = torch.device("cpu")
    conform_optimizer(optimizer, capturable=True, device=cpu)
    group = optimizer.param_groups[0]
    assert group["capturable"] and isinstance(group["lr"], torch.Tensor)
    assert float(group["lr"]) == pytest.approx(0.01)
    conform_optimizer(optimizer, capturable=False, device=cpu)
    assert group["lr"] == pytest.approx(0.01) and not isinstance(group["lr"], torch.Tensor)
    assert not group["capturable"]
    assert optimizer.state[parameter]["step"].device == cpu
    # A learning-rate scheduler still drives the eager form after the round trip.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.5**epoch)
    optimizer.step()
    scheduler.step()
    assert group["lr"] == pytest.approx(0.005)


def test_capture_step_on_cpu_or_a_bad_check_interval_fails_naming_the_key(
    tmp_path, make_tiny_config, tiny_features
):
    config = make_tiny_config(train__capture_step=True)
    with pytest.raises(ValueError, match="train.capture_step needs a CUDA device.*cpu"):
        run_experiment(config, output_dir=tmp_path, feature_set=tiny_features, show_progress=False)
    assert not (tmp_path / "checkpoints").exists()
    with pytest.raises(ValueError, match="train.finite_check_steps' must be an integer >= 0"):
        config_from_dict({"train": {"finite_check_steps": -1}})
