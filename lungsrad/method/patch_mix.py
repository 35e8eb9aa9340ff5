"""Dual-axis patch-mix contrastive learning on the DASS patch-embedding map.

Follows Patch-Mix Contrastive Learning (Bae et al., Interspeech 2023; raymin0223/
patch-mix_contrastive_learning `method/patchmix_cl.py`, `models/projector.py`, `models/ast.py`)
with Lung-SRAD's consecutive time-segment and frequency-band mixes on the (freq, time) grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lungsrad.config import PatchMixConfig

if TYPE_CHECKING:
    from lungsrad.models import DASS

MixKind = Literal["time", "freq", "ast_style"]

# Which mixes each mode runs, in the order they draw from the generator.
MODE_MIXES: dict[str, tuple[MixKind, ...]] = {
    "none": (),
    "ast_style": ("ast_style",),
    "time": ("time",),
    "freq": ("freq",),
    "dual": ("time", "freq"),
}

# Keys of the `parts` dict returned by PatchMixObjective; every key is present in every mode.
PART_KEYS: tuple[str, ...] = ("ce", "time_mix", "freq_mix", "ast_mix")


@dataclass(frozen=True)
class MixedBatch:
    """One patch-mixed batch.

    Attributes:
        mixed: (B, C, H, W) map; `replaced` cells come from sample `permutation[b]`.
        lam: fraction of the H x W cells each sample keeps (recomputed after rounding).
        permutation: (B,) int64, the partner of each sample.
        replaced: (H, W) bool, True where the partner's values were pasted (same for all b).
    """

    mixed: torch.Tensor
    lam: float
    permutation: torch.Tensor
    replaced: torch.Tensor


def _generator_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def sample_mix_lambda(alpha: float, generator: torch.Generator | None = None) -> float:
    """Draws lambda ~ Beta(alpha, alpha), reproducibly from a torch generator.

    torch's Beta sampler takes no generator, so a numpy Generator is seeded from one 62-bit draw
    of `generator` (or of torch's global RNG when None); seeding torch therefore fixes lambda.
    """
    if not alpha > 0:
        raise ValueError(f"method.patch_mix.alpha must be > 0, got {alpha}")
    device = _generator_device(generator)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def segment_mix(
    h: torch.Tensor,
    *,
    axis: Literal["time", "freq"],
    lam: float,
    generator: torch.Generator | None = None,
    permutation: torch.Tensor | None = None,
) -> MixedBatch:
    """Replaces one consecutive time segment (or frequency band) by a permuted sample's.

    The segment covers round((1 - lam) * n) cells of the axis (n = W for time, H for frequency)
    at a uniformly random start, over the whole other axis and every channel.

    Args:
        h: (B, C, H=freq, W=time) patch-embedding map.
        axis: "time" (a band of columns) or "freq" (a band of rows).
        lam: target fraction kept, in [0, 1].
        generator: source of the permutation and the start (torch's global RNG when None).
        permutation: (B,) partner indices; drawn with `generator` when None.

    Returns:
        The mixed batch, with lam recomputed as 1 - width / n.
    """
    if axis not in ("time", "freq"):
        raise ValueError(f"axis must be 'time' or 'freq', got {axis!r}")
    _check_map(h, lam)
    batch, _, height, width_cells = h.shape
    size = width_cells if axis == "time" else height
    device = _generator_device(generator)
    if permutation is None:
        permutation = torch.randperm(batch, generator=generator, device=device)
    width = int(round((1.0 - lam) * size))
    start = int(torch.randint(0, size - width + 1, (1,), generator=generator, device=device))
    inside = torch.zeros(size, dtype=torch.bool)
    inside[start : start + width] = True
    if axis == "time":
        replaced = inside.view(1, size).expand(height, size)
    else:
        replaced = inside.view(size, 1).expand(size, width_cells)
    return _paste(h, permutation, replaced, kept=1.0 - width / size)


def random_patch_mix(
    h: torch.Tensor,
    *,
    lam: float,
    generator: torch.Generator | None = None,
    permutation: torch.Tensor | None = None,
) -> MixedBatch:
    """The Patch-Mix CL (AST) baseline: round((1 - lam) * H * W) random cells of the grid.

    Args:
        h: (B, C, H, W) patch-embedding map.
        lam: target fraction kept, in [0, 1].
        generator: source of the permutation and the cell subset.
        permutation: (B,) partner indices; drawn with `generator` when None.

    Returns:
        The mixed batch, with lam recomputed as the fraction of cells kept.
    """
    _check_map(h, lam)
    batch, _, height, width_cells = h.shape
    cells = height * width_cells
    device = _generator_device(generator)
    if permutation is None:
        permutation = torch.randperm(batch, generator=generator, device=device)
    count = int(round((1.0 - lam) * cells))
    chosen = torch.randperm(cells, generator=generator, device=device)[:count].cpu()
    replaced = torch.zeros(cells, dtype=torch.bool)
    replaced[chosen] = True
    return _paste(h, permutation, replaced.view(height, width_cells), kept=1.0 - count / cells)


def _check_map(h: torch.Tensor, lam: float) -> None:
    if h.dim() != 4:
        raise ValueError(f"patch mixing expects a (B, C, H, W) map, got shape {tuple(h.shape)}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")


def _paste(
    h: torch.Tensor, permutation: torch.Tensor, replaced: torch.Tensor, *, kept: float
) -> MixedBatch:
    permutation = permutation.to(h.device)
    replaced = replaced.to(h.device)
    # torch.where keeps the autograd path to both the sample and its partner when h needs grad.
    mixed = torch.where(replaced, h[permutation], h)
    return MixedBatch(mixed=mixed, lam=kept, permutation=permutation, replaced=replaced)


def mix_batch(
    h: torch.Tensor, *, kind: MixKind, alpha: float, generator: torch.Generator | None = None
) -> MixedBatch:
    """Draws lambda ~ Beta(alpha, alpha) and a permutation, then applies one mix to h.

    Draw order (fixed, so a seeded generator replays a run): lambda, permutation, then the
    segment start or the cell subset.
    """
    lam = sample_mix_lambda(alpha, generator)
    permutation = torch.randperm(
        h.shape[0], generator=generator, device=_generator_device(generator)
    )
    if kind == "ast_style":
        return random_patch_mix(h, lam=lam, generator=generator, permutation=permutation)
    if kind in ("time", "freq"):
        return segment_mix(h, axis=kind, lam=lam, generator=generator, permutation=permutation)
    raise ValueError(f"unknown patch-mix kind {kind!r}; use 'time', 'freq' or 'ast_style'")


def patch_mix_contrastive_loss(
    projection_mixed: torch.Tensor,
    projection_target: torch.Tensor,
    permutation: torch.Tensor,
    lam: float,
    temperature: float,
) -> torch.Tensor:
    """Patch-mix InfoNCE loss (Bae et al. 2023).

    z = L2-normalised projections; logits = z_mixed @ z_target.T / temperature;
    loss = lam * CE(logits, arange(B)) + (1 - lam) * CE(logits, permutation), the same value as
    the reference's masked log-softmax with mask lam * I + (1 - lam) * P.

    Args:
        projection_mixed: (B, D) projections of the mixed samples.
        projection_target: (B, D) projections of the unmixed samples (the targets).
        permutation: (B,) partner of each mixed sample.
        lam: fraction of each mixed sample that is its own.
        temperature: tau > 0.

    Returns:
        Scalar loss (float32).
    """
    # Similarities over tau = 0.06 span about +-17: keep them out of bf16/fp16 autocast.
    with torch.autocast(device_type=projection_mixed.device.type, enabled=False):
        z_mixed = F.normalize(projection_mixed.float(), dim=1)
        z_target = F.normalize(projection_target.float(), dim=1)
        logits = z_mixed @ z_target.T / temperature
        own = torch.arange(logits.shape[0], device=logits.device)
        partner = permutation.to(logits.device)
        return lam * F.cross_entropy(logits, own) + (1.0 - lam) * F.cross_entropy(logits, partner)


class ProjectionHead(nn.Module):
    """Linear(d, d) -> BatchNorm1d(d) -> ReLU -> Linear(d, projection_dim).

    The Patch-Mix CL `Projector` with its default `apply_bn=True`; `use_batch_norm=False` gives
    its Linear -> ReLU -> Linear variant.
    """

    def __init__(self, num_features: int, projection_dim: int, *, use_batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(num_features, num_features)]
        if use_batch_norm:
            layers.append(nn.BatchNorm1d(num_features))
        layers += [nn.ReLU(), nn.Linear(num_features, projection_dim)]
        self.layers = nn.Sequential(*layers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled: (B, num_features) -> (B, projection_dim)."""
        return self.layers(pooled)


class PatchMixObjective(nn.Module):
    """Cross-entropy plus the patch-mix contrastive losses of the configured mode.

    Per mini-batch: one clean backbone pass (shared by the classifier CE and the contrastive
    targets) and one pass per mix on the mixed patch-embedding map (time and freq for "dual",
    each with its own lambda and permutation). Gradient blocking (`config.gradient_block`):
    - "mixed" (the paper: "blocking gradients from the mixed samples"): the mixed pass runs
      under `torch.no_grad()` on the detached embedding, so the backbone (patch embedding
      included) gets contrastive gradients only through the unmixed targets;
    - "target" (what the Patch-Mix CL code calls `grad_block`): the unmixed pooled features are
      detached before the projection head, so contrastive gradients reach the backbone only
      through the mixed pass;
    - "none": both sides carry gradients.
    Only backbone features are ever detached; the projection head learns from both sides.
    Batches of fewer than 2 samples skip the contrastive terms (no negatives exist).
    """

    def __init__(
        self, *, num_features: int, config: PatchMixConfig, use_batch_norm: bool = True
    ) -> None:
        super().__init__()
        if config.mode not in MODE_MIXES:
            raise ValueError(
                f"method.patch_mix.mode must be one of {', '.join(MODE_MIXES)}, got {config.mode!r}"
            )
        if config.gradient_block not in ("mixed", "target", "none"):
            raise ValueError(
                "method.patch_mix.gradient_block must be 'mixed', 'target' or 'none', "
                f"got {config.gradient_block!r}"
            )
        self.config = config
        self.mixes = MODE_MIXES[config.mode]
        self.projection: ProjectionHead | None = None
        if self.mixes:
            self.projection = ProjectionHead(
                num_features, config.projection_dim, use_batch_norm=use_batch_norm
            )

    def forward(
        self,
        model: DASS,
        x: torch.Tensor,
        labels: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Computes the training loss of one batch.

        Args:
            model: a DASS (`embed`, `forward_from_embedding`, `forward_head`).
            x: (B, T, F) fbank batch.
            labels: (B,) int64 class indices.
            generator: source of lambda, permutations and mix positions (global RNG when None).

        Returns:
            total: scalar, ce + time_loss_weight * time_mix + freq_loss_weight * freq_mix.
            logits: (B, num_classes) of the unmixed batch.
            parts: detached scalars "ce", "time_mix", "freq_mix", "ast_mix", all always present
                (0 when unused). In "ast_style" mode its loss is both "ast_mix" and "time_mix"
                (it is weighted by time_loss_weight), so the identity above holds in every
                mode; do not sum the parts.
        """
        config = self.config
        embedding = model.embed(x)
        pooled = model.forward_from_embedding(embedding)
        logits = model.forward_head(pooled)
        ce = F.cross_entropy(logits, labels)
        zero = torch.zeros((), device=logits.device)
        parts = {key: zero for key in PART_KEYS}
        parts["ce"] = ce.detach()
        total = ce
        if not self.mixes or x.shape[0] < 2:
            return total, logits, parts
        assert self.projection is not None
        block_mixed = config.gradient_block == "mixed"
        target_features = pooled.detach() if config.gradient_block == "target" else pooled
        projection_target = self.projection(target_features)
        for kind in self.mixes:
            if block_mixed:
                with torch.no_grad():
                    batch = mix_batch(
                        embedding.detach(), kind=kind, alpha=config.alpha, generator=generator
                    )
                    mixed_features = model.forward_from_embedding(batch.mixed)
            else:
                batch = mix_batch(embedding, kind=kind, alpha=config.alpha, generator=generator)
                mixed_features = model.forward_from_embedding(batch.mixed)
            loss = patch_mix_contrastive_loss(
                self.projection(mixed_features),
                projection_target,
                batch.permutation,
                batch.lam,
                config.temperature,
            )
            if kind == "freq":
                parts["freq_mix"] = loss.detach()
                total = total + config.freq_loss_weight * loss
            else:
                parts["time_mix"] = loss.detach()
                if kind == "ast_style":
                    parts["ast_mix"] = loss.detach()
                total = total + config.time_loss_weight * loss
        return total, logits, parts
