"""The training step without host syncs: per-epoch random numbers drawn up front as tensors,
patch mixes and SpecAugment masks built from them, the device-side NaN/inf flag, and the optimizer
forms of the eager and captured steps."""

from __future__ import annotations

import pytest
import torch

from lungsrad.config import PatchMixConfig, config_from_dict
from lungsrad.method.patch_mix import (
    PatchMixObjective,
    mix_from_draw,
    sample_mix_draws,
    unpack_mix_draws,
)
from lungsrad.models import DASS
from lungsrad.training.loop import (
    NonFiniteLossError,
    _EpochTotals,
    conform_optimizer,
    draw_epoch_randomness,
)
from lungsrad.training.run import run_experiment
from lungsrad.training.specaugment import sample_mask_uniforms, spec_augment


def _distinct_map(batch=5, channels=3, height=6, width=10):
    """Every cell of sample b holds a value identifying b, so pasted cells reveal their source."""
    base = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1) * 1000
    return base + torch.rand(batch, channels, height, width)


def _draws(kinds, *, steps=40, batch=5, cells=0, alpha=1.0, seed=0):
    rows = sample_mix_draws(
        kinds,
        alpha=alpha,
        num_steps=steps,
        batch_size=batch,
        cells=cells,
        generator=torch.Generator().manual_seed(seed),
    )
    return [unpack_mix_draws(row, kinds, batch_size=batch, cells=cells) for row in rows]


def test_epoch_randomness_depends_only_on_seed_and_epoch():
    arguments = dict(num_steps=7, batch_size=4, mixes=("time", "freq"), alpha=1.0, cells=0)
    first = draw_epoch_randomness(seed=3, epoch=2, device=torch.device("cpu"), **arguments)
    again = draw_epoch_randomness(seed=3, epoch=2, device=torch.device("cpu"), **arguments)
    other = draw_epoch_randomness(seed=3, epoch=3, device=torch.device("cpu"), **arguments)
    # 4 SpecAugment uniforms per sample, then per mix lambda, position and 4 partner keys.
    assert first.shape == (7, 4 * 4 + 2 * (2 + 4)) and first.dtype == torch.float32
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert ((first >= 0) & (first <= 1)).all()


@pytest.mark.parametrize("kind", ["time", "freq"])
def test_segment_mix_from_draws_is_one_band_of_the_drawn_width(kind):
    h = _distinct_map()
    height, width = h.shape[2:]
    size = width if kind == "time" else height
    starts = set()
    for (draw,) in _draws((kind,)):
        result = mix_from_draw(h, kind=kind, draw=draw)
        expected_width = round((1 - float(draw.lam)) * size)
        band = result.replaced[0] if kind == "time" else result.replaced[:, 0]
        assert int(band.sum()) == expected_width
        if expected_width:
            inside = band.nonzero().flatten()
            assert torch.equal(inside, torch.arange(inside[0], inside[0] + expected_width))
            starts.add(int(inside[0]))
        assert isinstance(result.lam, torch.Tensor)
        assert float(result.lam) == pytest.approx(1 - expected_width / size)
        assert torch.equal(result.permutation, torch.argsort(draw.partner_keys, stable=True))
        replaced = result.replaced.expand_as(h[:, 0])
        for b in range(h.shape[0]):
            partner = int(result.permutation[b])
            assert torch.equal(result.mixed[b][:, replaced[b]], h[partner][:, replaced[b]])
            assert torch.equal(result.mixed[b][:, ~replaced[b]], h[b][:, ~replaced[b]])
    assert len(starts) > 1  # the position is drawn, not fixed


def test_a_smaller_last_batch_pairs_within_itself_and_ast_style_counts_cells():
    (draw,) = _draws(("time",), steps=1)[0]
    small = mix_from_draw(_distinct_map(batch=3), kind="time", draw=draw)
    assert sorted(small.permutation.tolist()) == [0, 1, 2]
    h = _distinct_map(height=5, width=7)
    for (draw,) in _draws(("ast_style",), cells=35, steps=10):
        result = mix_from_draw(h, kind="ast_style", draw=draw)
        count = round((1 - float(draw.lam)) * 35)
        assert int(result.replaced.sum()) == count
        assert float(result.lam) == pytest.approx(1 - count / 35)
    with pytest.raises(ValueError, match="cell keys"):
        mix_from_draw(_distinct_map(height=4, width=4), kind="ast_style", draw=draw)


def test_objective_with_draws_is_reproducible_and_uses_them():
    torch.manual_seed(0)
    tiny_dass = DASS(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1))
    objective = PatchMixObjective(
        num_features=tiny_dass.num_features,
        config=PatchMixConfig(mode="dual", projection_dim=8),
    )
    x = torch.randn(4, 64, 32)
    labels = torch.tensor([0, 1, 2, 3])
    tiny_dass.eval()  # no drop path: the draws are the only randomness
    objective.eval()
    first, second = _draws(("time", "freq"), steps=2, batch=4)
    loss_a = objective(tiny_dass, x, labels, draws=first)[0]
    loss_b = objective(tiny_dass, x, labels, draws=first)[0]
    loss_c = objective(tiny_dass, x, labels, draws=second)[0]
    assert torch.equal(loss_a, loss_b) and not torch.equal(loss_a, loss_c)
    with pytest.raises(ValueError, match="needs 2 draws"):
        objective(tiny_dass, x, labels, draws=first[:1])


def test_spec_augment_from_uniforms_equals_the_generator_path():
    features = torch.rand(6, 50, 20) + 1.0
    uniforms = sample_mask_uniforms(1, 6, generator=torch.Generator().manual_seed(5))[0]
    from_generator = spec_augment(
        features, time_mask=20, freq_mask=8, generator=torch.Generator().manual_seed(5)
    )
    from_uniforms = spec_augment(features, time_mask=20, freq_mask=8, uniforms=uniforms)
    assert torch.equal(from_generator, from_uniforms)
    assert not torch.equal(from_uniforms, features)
    # A smaller batch reads the first columns of a row drawn for the full batch.
    head = spec_augment(features[:2], time_mask=20, freq_mask=8, uniforms=uniforms)
    assert torch.equal(head, from_uniforms[:2])
    with pytest.raises(ValueError, match="exactly one"):
        spec_augment(features, time_mask=1, freq_mask=1)


def test_epoch_totals_name_the_first_non_finite_step_when_looked_at():
    totals = _EpochTotals(torch.device("cpu"))
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
    with pytest.raises(ValueError, match="train.finite_check_steps must be >= 0"):
        config_from_dict({"train": {"finite_check_steps": -1}})
