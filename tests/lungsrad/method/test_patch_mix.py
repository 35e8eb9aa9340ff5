"""Patch mixing, the patch-mix InfoNCE loss and the gradient blocking of PatchMixObjective."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from lungsrad.config import PatchMixConfig
from lungsrad.method.patch_mix import (
    PART_KEYS,
    PatchMixObjective,
    mix_batch,
    mix_from_draw,
    patch_mix_contrastive_loss,
    random_patch_mix,
    sample_mix_draws,
    sample_mix_lambda,
    segment_mix,
    unpack_mix_draws,
)


def _distinct_map(batch=5, channels=3, height=6, width=10):
    """Every cell of sample b holds a value identifying b, so pasted cells reveal their source."""
    base = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1) * 1000
    return base + torch.rand(batch, channels, height, width)


def _runs(mask_1d: torch.Tensor) -> int:
    """Number of maximal runs of True in a 1-D bool tensor."""
    padded = torch.cat([torch.tensor([False]), mask_1d])
    return int((padded[1:] & ~padded[:-1]).sum())


@pytest.mark.parametrize("axis", ["time", "freq"])
@pytest.mark.parametrize("lam", [0.0, 0.13, 0.5, 0.71, 0.95, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segment_mix_is_one_consecutive_band_of_the_right_width(axis, lam, seed):
    h = _distinct_map()
    generator = torch.Generator().manual_seed(seed)
    result = segment_mix(h, axis=axis, lam=lam, generator=generator)
    height, width = h.shape[2:]
    size = width if axis == "time" else height
    expected_width = round((1 - lam) * size)
    if axis == "time":
        band = result.replaced[0]
        # The other axis is untouched: every frequency row has the same time band.
        assert torch.equal(result.replaced, band.expand(height, width))
    else:
        band = result.replaced[:, 0]
        assert torch.equal(result.replaced, band.view(-1, 1).expand(height, width))
    assert int(band.sum()) == expected_width
    assert _runs(band) == (1 if expected_width else 0)
    assert result.lam == pytest.approx(1 - expected_width / size)

    permutation = result.permutation
    assert sorted(permutation.tolist()) == list(range(h.shape[0]))
    replaced = result.replaced.expand_as(h[:, 0])
    for b in range(h.shape[0]):
        partner = int(permutation[b])
        # Inside the band: the partner's values at the same positions, every channel.
        assert torch.equal(result.mixed[b][:, replaced[b]], h[partner][:, replaced[b]])
        # Outside: the sample's own values.
        assert torch.equal(result.mixed[b][:, ~replaced[b]], h[b][:, ~replaced[b]])
        if partner != b:
            kept = (result.mixed[b] == h[b]).float().mean().item()
            assert kept == pytest.approx(result.lam)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.77, 1.0])
def test_random_patch_mix_counts_and_lambda(lam):
    h = _distinct_map(height=5, width=7)
    result = random_patch_mix(h, lam=lam, generator=torch.Generator().manual_seed(3))
    count = round((1 - lam) * 35)
    assert int(result.replaced.sum()) == count
    assert result.lam == pytest.approx(1 - count / 35)
    for b in range(h.shape[0]):
        partner = int(result.permutation[b])
        assert torch.equal(result.mixed[b][:, result.replaced], h[partner][:, result.replaced])
        assert torch.equal(result.mixed[b][:, ~result.replaced], h[b][:, ~result.replaced])


def test_mixing_is_reproducible_from_the_generator_and_lambda_is_beta():
    h = _distinct_map()
    first = mix_batch(h, kind="time", alpha=1.0, generator=torch.Generator().manual_seed(7))
    again = mix_batch(h, kind="time", alpha=1.0, generator=torch.Generator().manual_seed(7))
    assert first.lam == again.lam and torch.equal(first.mixed, again.mixed)
    torch.manual_seed(11)
    global_one = mix_batch(h, kind="freq", alpha=1.0)
    torch.manual_seed(11)
    assert torch.equal(mix_batch(h, kind="freq", alpha=1.0).mixed, global_one.mixed)

    generator = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample_mix_lambda(1.0, generator) for _ in range(3000)])
    assert ((draws > 0) & (draws < 1)).all()
    assert draws.mean().item() == pytest.approx(0.5, abs=0.02)
    assert draws.var().item() == pytest.approx(1 / 12, abs=0.006)  # Beta(1, 1) = U(0, 1)
    with pytest.raises(ValueError, match="alpha"):
        sample_mix_lambda(0.0)


def test_invalid_mix_arguments_raise():
    h = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match="lambda"):
        segment_mix(h, axis="time", lam=1.5)
    with pytest.raises(ValueError, match="axis"):
        segment_mix(h, axis="channel", lam=0.5)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        random_patch_mix(torch.randn(2, 3, 4), lam=0.5)


# ---------------------------------------------------------------------------------------------
# Loss


def test_loss_hand_computed_two_samples():
    # Projections normalise to e1 and e2; tau = 0.5 gives logits [[2, 0], [0, 2]].
    mixed = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    target = torch.tensor([[5.0, 0.0], [0.0, 0.5]])
    permutation = torch.tensor([1, 0])
    loss = patch_mix_contrastive_loss(mixed, target, permutation, 0.75, 0.5)
    own = math.log(1 + math.exp(-2))  # -log(e^2 / (e^2 + e^0))
    partner = math.log(1 + math.exp(2))  # -log(e^0 / (e^2 + e^0))
    assert loss.item() == pytest.approx(0.75 * own + 0.25 * partner, rel=1e-6)


def test_loss_hand_computed_three_samples_matches_reference_masked_form():
    angles = [0.0, math.pi / 3, math.pi / 2]
    target = torch.tensor([[math.cos(a), math.sin(a)] for a in angles])
    mixed = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, -1.0]])
    permutation = torch.tensor([2, 0, 1])
    lam, tau = 0.6, 0.2
    expected = 0.0
    for i in range(3):
        norm = math.hypot(*mixed[i].tolist())
        logits = [
            (mixed[i][0].item() * math.cos(a) + mixed[i][1].item() * math.sin(a)) / norm / tau
            for a in angles
        ]
        log_total = math.log(sum(math.exp(value) for value in logits))
        own = log_total - logits[i]
        partner = log_total - logits[int(permutation[i])]
        expected += (lam * own + (1 - lam) * partner) / 3
    loss = patch_mix_contrastive_loss(mixed, target, permutation, lam, tau)
    assert loss.item() == pytest.approx(expected, rel=1e-6)

    # The Patch-Mix CL code's form: masked log-softmax with mask lam * I + (1 - lam) * P.
    logits = F.normalize(mixed) @ F.normalize(target).T / tau
    mask = lam * torch.eye(3) + (1 - lam) * F.one_hot(permutation, 3).float()
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    reference = (-(mask * log_prob).sum(1) / mask.sum(1)).mean()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Objective


def _objective(num_features, **patch_mix):
    torch.manual_seed(123)
    return PatchMixObjective(num_features=num_features, config=PatchMixConfig(**patch_mix))


def _batch(batch=4, frames=40, mels=32):
    torch.manual_seed(5)
    return torch.randn(batch, frames, mels), torch.tensor([0, 1, 2, 3, 1, 0, 2, 3][:batch])


def _grads(module):
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


def _manual_loss(model, objective, x, labels, *, seed, block):
    """The objective recomputed from the public pieces with the blocking written out."""
    config = objective.config
    generator = torch.Generator().manual_seed(seed)
    embedding = model.embed(x)
    pooled = model.forward_from_embedding(embedding)
    logits = model.forward_head(pooled)
    total = F.cross_entropy(logits, labels)
    target = objective.projection(pooled.detach() if block == "target" else pooled)
    kinds = {"time": ["time"], "freq": ["freq"], "dual": ["time", "freq"]}[config.mode]
    for kind in kinds:
        source = embedding.detach() if block == "mixed" else embedding
        batch = mix_batch(source, kind=kind, alpha=config.alpha, generator=generator)
        features = model.forward_from_embedding(batch.mixed)
        if block == "mixed":
            features = features.detach()
        loss = patch_mix_contrastive_loss(
            objective.projection(features), target, batch.permutation, batch.lam, config.temperature
        )
        weight = config.freq_loss_weight if kind == "freq" else config.time_loss_weight
        total = total + weight * loss
    return total


@pytest.mark.parametrize("block", ["mixed", "target", "none"])
def test_gradient_blocking_matches_the_written_out_computation(standin_model, block):
    x, labels = _batch()
    objective = _objective(standin_model.num_features, mode="dual", gradient_block=block)
    model_a, objective_a = copy.deepcopy(standin_model), copy.deepcopy(objective)
    total, _, _ = objective_a(model_a, x, labels, generator=torch.Generator().manual_seed(9))
    total.backward()
    model_b, objective_b = copy.deepcopy(standin_model), copy.deepcopy(objective)
    _manual_loss(model_b, objective_b, x, labels, seed=9, block=block).backward()
    for got, want in ((model_a, model_b), (objective_a, objective_b)):
        grads_got, grads_want = _grads(got), _grads(want)
        assert grads_got.keys() == grads_want.keys()
        for name in grads_got:
            torch.testing.assert_close(grads_got[name], grads_want[name], msg=name)


def test_blocked_mixed_side_gets_no_gradient_path_and_blocking_changes_grads(standin_model):
    x, labels = _batch()
    seen = []
    hook = standin_model.block(1, 2).register_forward_hook(
        lambda module, args, output: seen.append(output.requires_grad)
    )
    grads = {}
    for block in ("mixed", "none"):
        seen.clear()
        model = copy.deepcopy(standin_model)
        objective = _objective(model.num_features, mode="time", gradient_block=block)
        total, _, parts = objective(model, x, labels, generator=torch.Generator().manual_seed(1))
        total.backward()
        grads[block] = _grads(model)
        # Pass 1 is the clean batch, pass 2 the mixed one.
        assert seen == ([True, False] if block == "mixed" else [True, True])
        # The projection head learns from both sides in every mode.
        assert all(p.grad is not None for p in objective.parameters())
    hook.remove()
    assert any(
        not torch.allclose(grads["mixed"][name], grads["none"][name]) for name in grads["mixed"]
    )


def test_blocked_mixed_contrastive_loss_equals_target_branch_only_gradients(standin_model):
    """With gradient_block='mixed', backbone grads of the contrastive term come from the target
    branch alone: replacing the mixed features by constants changes nothing."""
    x, labels = _batch()
    model = copy.deepcopy(standin_model)
    objective = _objective(model.num_features, mode="time", gradient_block="mixed")
    total, logits, parts = objective(model, x, labels, generator=torch.Generator().manual_seed(4))
    (total - F.cross_entropy(logits, labels)).backward()  # the contrastive term alone
    contrastive = _grads(model)
    # The classifier head is not on the contrastive path (its gradient is exactly zero).
    assert all(contrastive.pop(name).abs().max() == 0 for name in ("head.weight", "head.bias"))

    reference_model = copy.deepcopy(standin_model)
    reference_objective = _objective(model.num_features, mode="time", gradient_block="mixed")
    generator = torch.Generator().manual_seed(4)
    pooled = reference_model.forward_features(x)
    with torch.no_grad():
        batch = mix_batch(reference_model.embed(x), kind="time", alpha=1.0, generator=generator)
        mixed_constant = reference_model.forward_from_embedding(batch.mixed)
    loss = patch_mix_contrastive_loss(
        reference_objective.projection(mixed_constant),
        reference_objective.projection(pooled),
        batch.permutation,
        batch.lam,
        0.06,
    )
    assert loss.item() == pytest.approx(parts["time_mix"].item(), rel=1e-5)
    loss.backward()
    target_only = _grads(reference_model)
    assert contrastive.keys() == target_only.keys()
    for name in contrastive:
        torch.testing.assert_close(contrastive[name], target_only[name], msg=name)


def test_dual_mode_parts_and_total(standin_model):
    x, labels = _batch()
    objective = _objective(
        standin_model.num_features, mode="dual", time_loss_weight=0.5, freq_loss_weight=2.0
    )
    total, logits, parts = objective(
        standin_model, x, labels, generator=torch.Generator().manual_seed(0)
    )
    assert set(parts) == set(PART_KEYS)
    assert all(not part.requires_grad and part.dim() == 0 for part in parts.values())
    assert parts["time_mix"] > 0 and parts["freq_mix"] > 0 and parts["ast_mix"] == 0
    torch.testing.assert_close(parts["ce"], F.cross_entropy(logits, labels).detach())
    expected = parts["ce"] + 0.5 * parts["time_mix"] + 2.0 * parts["freq_mix"]
    torch.testing.assert_close(total.detach(), expected)
    with torch.no_grad():
        torch.testing.assert_close(logits, standin_model(x))


@pytest.mark.parametrize(
    ("mode", "nonzero"),
    [("time", {"time_mix"}), ("freq", {"freq_mix"}), ("ast_style", {"time_mix", "ast_mix"})],
)
def test_single_modes_report_their_part(standin_model, mode, nonzero):
    x, labels = _batch()
    objective = _objective(standin_model.num_features, mode=mode, time_loss_weight=0.3)
    total, _, parts = objective(
        standin_model, x, labels, generator=torch.Generator().manual_seed(2)
    )
    for key in ("time_mix", "freq_mix", "ast_mix"):
        assert (parts[key] > 0) == (key in nonzero), key
    if mode == "ast_style":
        assert parts["ast_mix"] == parts["time_mix"]
    expected = parts["ce"] + 0.3 * parts["time_mix"] + parts["freq_mix"]
    torch.testing.assert_close(total.detach(), expected)


def test_mode_none_is_plain_cross_entropy(standin_model):
    x, labels = _batch()
    objective = _objective(standin_model.num_features, mode="none")
    assert list(objective.parameters()) == []
    total, logits, parts = objective(standin_model, x, labels)
    torch.testing.assert_close(total, F.cross_entropy(logits, labels))
    assert parts["time_mix"] == 0 and parts["freq_mix"] == 0 and parts["ast_mix"] == 0


def test_single_sample_batch_skips_the_contrastive_terms(standin_model):
    x, labels = _batch(batch=1)
    objective = _objective(standin_model.num_features, mode="dual")
    total, logits, parts = objective(standin_model, x, labels)
    torch.testing.assert_close(total, F.cross_entropy(logits, labels))


def test_objective_is_reproducible_with_a_seeded_generator(standin_model):
    x, labels = _batch()
    objective = _objective(standin_model.num_features, mode="dual")
    first = objective(standin_model, x, labels, generator=torch.Generator().manual_seed(3))[0]
    second = objective(standin_model, x, labels, generator=torch.Generator().manual_seed(3))[0]
    third = objective(standin_model, x, labels, generator=torch.Generator().manual_seed(4))[0]
    assert first.item() == second.item() != third.item()


def test_projection_head_shape_and_config_errors():
    objective = _objective(16, mode="time", projection_dim=768)
    assert objective.projection(torch.randn(3, 16)).shape == (3, 768)
    with pytest.raises(ValueError, match="mode"):
        PatchMixObjective(num_features=16, config=PatchMixConfig(mode="both"))
    with pytest.raises(ValueError, match="gradient_block"):
        PatchMixObjective(num_features=16, config=PatchMixConfig(gradient_block="all"))


def test_real_dass_patch_mix_objective(tiny_dass):
    model = tiny_dass()
    x, labels = _batch(batch=3, frames=48, mels=32)
    objective = PatchMixObjective(
        num_features=model.num_features, config=PatchMixConfig(mode="dual")
    )
    total, logits, parts = objective(model, x, labels, generator=torch.Generator().manual_seed(0))
    assert logits.shape == (3, 4) and parts["time_mix"] > 0 and parts["freq_mix"] > 0
    total.backward()
    assert all(p.grad is not None for p in objective.parameters())
    assert model.patch_embed[0].weight.grad is not None  # CE and targets reach the embedding


def test_loss_is_computed_in_float32_under_autocast():
    torch.manual_seed(0)
    mixed, target = torch.randn(6, 32), torch.randn(6, 32)
    permutation = torch.tensor([1, 2, 3, 4, 5, 0])
    expected = patch_mix_contrastive_loss(mixed, target, permutation, 0.4, 0.06)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = patch_mix_contrastive_loss(
            mixed.bfloat16(), target.bfloat16(), permutation, 0.4, 0.06
        )
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=2e-2)


def test_objective_runs_under_bf16_autocast(standin_model):
    x, labels = _batch()
    objective = _objective(standin_model.num_features, mode="dual")
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        total, logits, parts = objective(
            standin_model, x, labels, generator=torch.Generator().manual_seed(0)
        )
    total.backward()
    assert torch.isfinite(total) and parts["time_mix"] > 0 and parts["freq_mix"] > 0


# ---------------------------------------------------------------------------------------------
# Mixes from random numbers drawn up front (what the training step uses)


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


def test_objective_with_draws_is_reproducible_and_uses_them(tiny_dass):
    tiny_dass = tiny_dass()
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
