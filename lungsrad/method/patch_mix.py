"""Dual-axis patch-mix contrastive learning on the DASS patch-embedding map.

Follows Patch-Mix Contrastive Learning (Bae et al., Interspeech 2023; raymin0223/
patch-mix_contrastive_learning `method/patchmix_cl.py`, `models/projector.py`, `models/ast.py`)
with Lung-SRAD's consecutive time-segment and frequency-band mixes on the (freq, time) grid.
"""

from __future__ import annotations

import contextlib
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
        lam: fraction of the H x W cells each sample keeps (recomputed after rounding); a 0-d
            tensor when the mix came from `MixDraw` tensors, else a float.
        permutation: (B,) int64, the partner of each sample.
        replaced: (H, W) bool, True where the partner's values were pasted (same for all b).
    """

    mixed: torch.Tensor
    lam: float | torch.Tensor
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
    replaced = _segment_cells(axis, (height, width_cells), start, width, h.device)
    return _paste(h, permutation, replaced, kept=1.0 - width / size)


def _segment_cells(
    axis: str,
    grid: tuple[int, int],
    start: int | torch.Tensor,
    width: int | torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """(H, W) bool: the band [start, start + width) of the time (columns) or freq (rows) axis."""
    height, width_cells = grid
    size = width_cells if axis == "time" else height
    positions = torch.arange(size, device=device)
    inside = (positions >= start) & (positions < start + width)
    if axis == "time":
        return inside.view(1, size).expand(height, size)
    return inside.view(size, 1).expand(size, width_cells)


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


def _check_map(h: torch.Tensor, lam: float | None = None) -> None:
    if h.dim() != 4:
        raise ValueError(f"patch mixing expects a (B, C, H, W) map, got shape {tuple(h.shape)}")
    if lam is not None and not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")


def _paste(
    h: torch.Tensor,
    permutation: torch.Tensor,
    replaced: torch.Tensor,
    *,
    kept: float | torch.Tensor,
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


@dataclass(frozen=True)
class MixDraw:
    """The random numbers of one mix of one training step, as tensors on the step's device.

    A captured (CUDA-graph) step reads them as inputs, and no host decision depends on their
    values, so the step never waits for the device. Rows of a whole epoch are drawn up front by
    `sample_mix_draws` and viewed with `unpack_mix_draws`.

    Attributes:
        lam: () float32 draw of Beta(alpha, alpha).
        position: () uniform in [0, 1): where the segment starts (time and freq mixes).
        partner_keys: (drawn batch,) uniforms; a batch of b samples pairs sample i with the
            stable argsort of the first b keys.
        cell_keys: (H * W,) uniforms for ast_style (empty otherwise); the round((1 - lam) H W)
            cells of lowest key are replaced.
    """

    lam: torch.Tensor
    position: torch.Tensor
    partner_keys: torch.Tensor
    cell_keys: torch.Tensor


def _draw_width(kind: MixKind, batch_size: int, cells: int) -> int:
    return 2 + batch_size + (cells if kind == "ast_style" else 0)


def sample_mix_draws(
    kinds: tuple[MixKind, ...],
    *,
    alpha: float,
    num_steps: int,
    batch_size: int,
    cells: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Every random number the mixes `kinds` need for `num_steps` batches, packed in rows.

    Args:
        kinds: the mixes of one step, in order (PatchMixObjective.mixes).
        alpha: Beta(alpha, alpha) parameter of lambda.
        num_steps: rows to draw.
        batch_size: the full batch size (a smaller last batch uses the first keys).
        cells: H * W of the patch-embedding map (used by ast_style only).
        generator: CPU generator; the Beta draws come from numpy seeded by one of its draws.

    Returns:
        (num_steps, width) float32 on the CPU; `unpack_mix_draws` views one row.
    """
    if not alpha > 0:
        raise ValueError(f"method.patch_mix.alpha must be > 0, got {alpha}")
    columns = []
    for kind in kinds:
        # torch's Beta sampler takes no generator: numpy's, seeded from `generator`.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        lam = np.random.default_rng(seed).beta(alpha, alpha, size=(num_steps, 1))
        columns.append(torch.from_numpy(lam).float())
        width = _draw_width(kind, batch_size, cells) - 1
        columns.append(torch.rand(num_steps, width, generator=generator))
    if not columns:
        return torch.zeros(num_steps, 0)
    return torch.cat(columns, dim=1)


def unpack_mix_draws(
    row: torch.Tensor, kinds: tuple[MixKind, ...], *, batch_size: int, cells: int
) -> tuple[MixDraw, ...]:
    """Views of one row of `sample_mix_draws` (same kinds, batch_size and cells) as MixDraws."""
    draws = []
    offset = 0
    for kind in kinds:
        width = _draw_width(kind, batch_size, cells)
        part = row[offset : offset + width]
        draws.append(
            MixDraw(
                lam=part[0],
                position=part[1],
                partner_keys=part[2 : 2 + batch_size],
                cell_keys=part[2 + batch_size :],
            )
        )
        offset += width
    assert offset == row.shape[0], "row drawn for other kinds, batch size or grid"
    return tuple(draws)


def mix_from_draw(h: torch.Tensor, *, kind: MixKind, draw: MixDraw) -> MixedBatch:
    """Applies one mix with lambda, partners and positions taken from `draw` (no host sync).

    Same maths as `segment_mix` / `random_patch_mix`; lam of the result is a 0-d tensor.

    Args:
        h: (B, C, H, W) patch-embedding map, B <= len(draw.partner_keys).
        kind: "time", "freq" or "ast_style".
        draw: the step's random numbers for this mix, on h's device.
    """
    _check_map(h)
    batch, _, height, width_cells = h.shape
    permutation = torch.argsort(draw.partner_keys[:batch], stable=True)
    if kind == "ast_style":
        cells = height * width_cells
        if draw.cell_keys.shape[0] != cells:
            raise ValueError(
                f"ast_style draw holds {draw.cell_keys.shape[0]} cell keys for a {height} x "
                f"{width_cells} map; draw it for {cells} cells"
            )
        count = torch.round((1.0 - draw.lam) * cells)
        rank = torch.argsort(torch.argsort(draw.cell_keys, stable=True), stable=True)
        replaced = (rank < count).view(height, width_cells)
        return _paste(h, permutation, replaced, kept=1.0 - count / cells)
    if kind not in ("time", "freq"):
        raise ValueError(f"unknown patch-mix kind {kind!r}; use 'time', 'freq' or 'ast_style'")
    size = width_cells if kind == "time" else height
    width = torch.round((1.0 - draw.lam) * size)
    # floor(u * (size - width + 1)) is uniform over the size - width + 1 starts; the minimum
    # guards a float32 u * n that rounds up to n.
    start = torch.minimum(torch.floor(draw.position * (size - width + 1)), size - width)
    replaced = _segment_cells(kind, (height, width_cells), start, width, h.device)
    return _paste(h, permutation, replaced, kept=1.0 - width / size)


def patch_mix_contrastive_loss(
    projection_mixed: torch.Tensor,
    projection_target: torch.Tensor,
    permutation: torch.Tensor,
    lam: float | torch.Tensor,
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
        lam: fraction of each mixed sample that is its own (float or 0-d tensor).
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
    With `config.project_target` false the targets are the (possibly detached) pooled features
    themselves, unprojected, as the reference's `--target_type grad_block` compares them; with
    `config.train_projector` false the head's parameters never train (requires_grad False, so
    the run's optimiser leaves them out) while its BatchNorm, in train mode, still updates its
    running statistics, as ICBHI_HADES main.py (which optimises `model.parameters()` only) does.
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
            if not config.train_projector:
                self.projection.requires_grad_(False)

    def forward(
        self,
        model: DASS,
        x: torch.Tensor,
        labels: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        draws: tuple[MixDraw, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Computes the training loss of one batch.

        Args:
            model: a DASS (`embed`, `forward_from_embedding`, `forward_head`).
            x: (B, T, F) fbank batch.
            labels: (B,) int64 class indices.
            generator: source of lambda, permutations and mix positions (global RNG when None).
            draws: the step's random numbers, one MixDraw per mix of the mode (see
                `sample_mix_draws`); used instead of `generator` when given.

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
        projection_target = (
            self.projection(target_features) if config.project_target else target_features
        )
        if draws is not None and len(draws) != len(self.mixes):
            raise ValueError(
                f"mode {config.mode!r} needs {len(self.mixes)} draws, got {len(draws)}"
            )
        for index, kind in enumerate(self.mixes):
            with torch.no_grad() if block_mixed else contextlib.nullcontext():
                source = embedding.detach() if block_mixed else embedding
                if draws is not None:
                    batch = mix_from_draw(source, kind=kind, draw=draws[index])
                else:
                    batch = mix_batch(source, kind=kind, alpha=config.alpha, generator=generator)
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
