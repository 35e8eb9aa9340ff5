"""The reference's patch-mix CL step (ICBHI_HADES main.py with --target_type grad_block, its
frozen projector, method/patchmix_cl.py PatchMixConLoss) against our objective on one batch."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from lungsrad.config import PatchMixConfig
from lungsrad.method.patch_mix import PatchMixObjective, mix_batch

REFERENCE_SETTINGS = dict(
    mode="dual",
    temperature=0.2,
    gradient_block="target",
    project_target=False,
    train_projector=False,
)


def _patch_mix_con_loss(projection1, projection2, lam, index, temperature):
    """PatchMixConLoss.forward written out from its formula (negative_pair 'all')."""
    batch = projection1.shape[0]
    projection1, projection2 = F.normalize(projection1), F.normalize(projection2)
    anchor_dot_contrast = projection2 @ projection1.T / temperature
    mask_own = torch.eye(batch)
    mask_partner = torch.zeros(batch, batch)
    mask_partner[torch.arange(batch), index] = 1
    mask = lam * mask_own + (1 - lam) * mask_partner
    logits = anchor_dot_contrast - anchor_dot_contrast.max(dim=1, keepdim=True)[0].detach()
    log_prob = logits - torch.log(torch.exp(logits).sum(1, keepdim=True))
    return (-(mask * log_prob).sum(1) / mask.sum(1)).mean()


def _reference_total(model, projector, x, labels, *, seed, temperature):
    """main.py's patchmix_cl branch for cl_mode dual and target_type grad_block."""
    generator = torch.Generator().manual_seed(seed)
    embedding = model.embed(x)
    features = model.forward_from_embedding(embedding)
    loss = F.cross_entropy(model.forward_head(features), labels)
    proj1 = features.detach()  # grad_block: detached and not projected
    for kind in ("time", "freq"):
        batch = mix_batch(embedding, kind=kind, alpha=1.0, generator=generator)
        mixed = projector(model.forward_from_embedding(batch.mixed))
        loss = loss + _patch_mix_con_loss(proj1, mixed, batch.lam, batch.permutation, temperature)
    return loss


def test_reference_grad_block_loss_and_gradients(standin_model):
    torch.manual_seed(5)
    x, labels = torch.randn(6, 40, 32), torch.tensor([0, 1, 2, 3, 1, 0])
    torch.manual_seed(123)
    config = PatchMixConfig(projection_dim=standin_model.num_features, **REFERENCE_SETTINGS)
    objective = PatchMixObjective(num_features=standin_model.num_features, config=config)
    model_a, objective_a = copy.deepcopy(standin_model), copy.deepcopy(objective)
    model_b, projector_b = copy.deepcopy(standin_model), copy.deepcopy(objective.projection)
    objective_a.train()
    running_before = objective_a.projection.layers[1].running_mean.clone()
    total, _, _ = objective_a(model_a, x, labels, generator=torch.Generator().manual_seed(9))
    total.backward()
    reference = _reference_total(model_b, projector_b, x, labels, seed=9, temperature=0.2)
    reference.backward()
    torch.testing.assert_close(total, reference)
    # The projector never trains: no parameter of it asks for or receives a gradient ...
    assert all(not p.requires_grad and p.grad is None for p in objective_a.parameters())
    # ... but its BatchNorm, in train mode, still updates its statistics, as the reference's.
    assert not torch.equal(objective_a.projection.layers[1].running_mean, running_before)
    # The backbone's gradients are the reference's, the mixed branch included.
    for (name, got), want in zip(model_a.named_parameters(), model_b.parameters(), strict=True):
        assert got.grad is not None, name
        torch.testing.assert_close(got.grad, want.grad, msg=name)


def test_projecting_the_target_changes_the_loss(standin_model):
    torch.manual_seed(5)
    x, labels = torch.randn(6, 40, 32), torch.tensor([0, 1, 2, 3, 1, 0])
    losses = {}
    for project_target in (False, True):
        torch.manual_seed(123)
        settings = {**REFERENCE_SETTINGS, "project_target": project_target}
        config = PatchMixConfig(projection_dim=standin_model.num_features, **settings)
        objective = PatchMixObjective(num_features=standin_model.num_features, config=config)
        model = copy.deepcopy(standin_model)
        losses[project_target], _, _ = objective(
            model, x, labels, generator=torch.Generator().manual_seed(9)
        )
    assert losses[False].item() != pytest.approx(losses[True].item(), rel=1e-3)
