"""Loading AST weights: the AudioSet release file, the reference's keys, this class's own state
dict or a lungsrad checkpoint, with the positional embedding adapted to the model's patch grid
(YuanGongND/ast `src/models/ast_models.py`, `ASTModel.__init__`, AudioSet branch).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lungsrad.errors import UserError
from lungsrad.models.ast.model import AST, NUM_PREFIX_TOKENS
from lungsrad.models.backbone_state import check_keys_match, read_backbone_state

logger = logging.getLogger(__name__)

# The AudioSet release's patch grid (128 mel bins, 1024 frames, strides 10 x 10). The reference
# adapts from this grid; its frequency row count is what a release file's pos_embed is laid on.
AUDIOSET_GRID = (12, 101)
POS_EMBED_MODES = ("reference", "patchmix_code")
PosEmbedMode = Literal["reference", "patchmix_code"]
# timm's ImageNet heads: in every AST checkpoint, never used by the AST forward.
_UNUSED_PREFIXES = ("head.", "head_dist.")
_HEAD_PREFIX = "mlp_head."
_HEAD_WEIGHT = "mlp_head.1.weight"


# ---------------------------------------------------------------------------------------------
# Positional-embedding adaptation (ASTModel.__init__, AudioSet branch)


def adapt_pos_embed_grid(
    patch_pos: torch.Tensor, source_grid: tuple[int, int], target_grid: tuple[int, int]
) -> torch.Tensor:
    """The reference's adaptation of the patch rows of a positional embedding to another grid.

    Time first: fewer time patches keep the centred columns (start source_T // 2 - T // 2),
    more are a bilinear resize (align_corners False) to (source_F, T). Then frequency: fewer
    rows keep the centred rows, more are a bilinear resize to (F, T). Crops are exact copies.

    Args:
        patch_pos: (1, source_F * source_T, D), frequency-major.
        source_grid: (source_F, source_T).
        target_grid: (F, T).

    Returns:
        (1, F * T, D), frequency-major.
    """
    (source_freq, source_time), (freq, time) = source_grid, target_grid
    width = patch_pos.shape[-1]
    assert patch_pos.shape == (1, source_freq * source_time, width), patch_pos.shape
    grid = patch_pos.transpose(1, 2).reshape(1, width, source_freq, source_time)
    if time < source_time:
        start = source_time // 2 - time // 2
        grid = grid[:, :, :, start : start + time]
    elif time > source_time:
        grid = F.interpolate(grid, size=(source_freq, time), mode="bilinear", align_corners=False)
    if freq < source_freq:
        start = source_freq // 2 - freq // 2
        grid = grid[:, :, start : start + freq, :]
    elif freq > source_freq:
        grid = F.interpolate(grid, size=(freq, time), mode="bilinear", align_corners=False)
    return grid.reshape(1, width, freq * time).transpose(1, 2).contiguous()


def _source_grid(num_patches: int, model: AST, source: str) -> tuple[int, int]:
    """The grid a checkpoint's patch rows lie on: AudioSet's 12 x 101 for that count (the
    release file), else the model's frequency rows, else AudioSet's 12 rows."""
    if num_patches == AUDIOSET_GRID[0] * AUDIOSET_GRID[1]:
        return AUDIOSET_GRID
    for rows in dict.fromkeys((model.grid_shape[0], AUDIOSET_GRID[0])):
        if num_patches % rows == 0:
            return rows, num_patches // rows
    raise UserError(
        f"{source}: its pos_embed has {num_patches} patch rows, which lie on no grid of "
        f"{model.grid_shape[0]} or {AUDIOSET_GRID[0]} frequency rows, so it cannot be adapted "
        f"to the model's {model.grid_shape[0]} x {model.grid_shape[1]} grid; use a checkpoint "
        "made for this input (data.num_mel_bins, data.segment_seconds)"
    )


def adapted_pos_embed(
    pos_embed: torch.Tensor, model: AST, *, mode: PosEmbedMode = "reference", source: str = ""
) -> torch.Tensor:
    """A checkpoint's pos_embed (1, 2 + P, D) brought to `model`'s token count (1, N, D).

    The two prefix rows are kept. `reference`: the patch rows are adapted from their grid to
    the model's grid (`adapt_pos_embed_grid`). `patchmix_code`: as the patch-mix CL code
    (raymin0223/patch-mix_contrastive_learning) does it, which builds AST with frames and mel
    bins swapped: the rows are adapted to the transposed grid (T, F), flattened row-major and
    handed to the model's frequency-major tokens in that order.
    """
    patch_rows = pos_embed[:, NUM_PREFIX_TOKENS:]
    source_grid = _source_grid(patch_rows.shape[1], model, source or "checkpoint")
    freq, time = model.grid_shape
    target_grid = (freq, time) if mode == "reference" else (time, freq)
    patches = adapt_pos_embed_grid(patch_rows, source_grid, target_grid)
    return torch.cat((pos_embed[:, :NUM_PREFIX_TOKENS], patches), dim=1)


# ---------------------------------------------------------------------------------------------
# Loading


def _checkpoint_pos_embed(
    pos_embed: torch.Tensor, model: AST, *, mode: PosEmbedMode, source: str
) -> torch.Tensor:
    """The checkpoint's pos_embed, adapted when its grid differs from the model's (and its
    width matches: another width is reported with the other mis-shaped keys)."""
    if pos_embed.shape == model.pos_embed.shape:
        return pos_embed
    if pos_embed.dim() != 3 or pos_embed.shape[1] <= NUM_PREFIX_TOKENS:
        raise UserError(
            f"{source}: pos_embed of shape {tuple(pos_embed.shape)} is not "
            "(1, 2 + patches, width); not an AST checkpoint"
        )
    if pos_embed.shape[0] != 1 or pos_embed.shape[2] != model.embed_dim:
        return pos_embed
    return adapted_pos_embed(pos_embed, model, mode=mode, source=source)


def _ast_keys(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Release (`module.v.*`, `module.mlp_head.*`), reference (`v.*`, `mlp_head.*`) or this
    class's own names, all mapped to this class's names."""
    for prefix in ("module.", "_orig_mod."):
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key[len("v.") :] if key.startswith("v.") else key
        if name in renamed:
            raise UserError(f"{source}: holds both '{name}' and 'v.{name}'; not one AST model")
        renamed[name] = value
    return renamed


def load_ast_checkpoint(
    model: AST,
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    *,
    pos_embed_mode: PosEmbedMode = "reference",
) -> None:
    """Loads AST weights into `model` in place, all or nothing.

    Accepts the AudioSet release file (`audioset_10_10_0.4593.pth`: `module.v.*`,
    `module.mlp_head.*`), the same keys without `module.`, this class's own state dict, or a
    lungsrad training checkpoint. timm's unused `head` / `head_dist` are dropped. A pos_embed
    of another grid is adapted (`adapted_pos_embed`, `pos_embed_mode`); one of the model's size
    is taken as it is. A head with another class count is replaced by a new, default-initialised
    `mlp_head` (logged), as the reference does when fine-tuning. Anything else missing,
    unexpected or mis-shaped is an error and nothing is loaded.

    Args:
        model: the `AST` to fill.
        path_or_state_dict: a file path or an already loaded object.
        pos_embed_mode: 'reference' (the correct layout) or 'patchmix_code' (the patch-mix CL
            code's swapped layout, which produced its published AST numbers).

    Raises:
        FileNotFoundError: the path does not exist.
        UserError: not a state dict, a DASS file, a pos_embed that cannot be adapted, or keys
            missing / unexpected / of another shape (listed).
    """
    if pos_embed_mode not in POS_EMBED_MODES:
        raise UserError(
            f"model.ast_pos_embed must be one of {', '.join(POS_EMBED_MODES)}, "
            f"got {pos_embed_mode!r}"
        )
    source, raw = read_backbone_state(path_or_state_dict, backbone="ast")
    state = _ast_keys(raw, source)
    state = {k: v for k, v in state.items() if not k.startswith(_UNUSED_PREFIXES)}
    expected = model.state_dict()

    new_head = False
    if _HEAD_WEIGHT in state and state[_HEAD_WEIGHT].shape[0] != model.num_classes:
        new_head = True
        logger.info(
            "%s: checkpoint head has %d classes, the model %d; starting a new mlp_head",
            source,
            state[_HEAD_WEIGHT].shape[0],
            model.num_classes,
        )
        state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIX)}

    if "pos_embed" in state:
        state["pos_embed"] = _checkpoint_pos_embed(
            state["pos_embed"], model, mode=pos_embed_mode, source=source
        )
    own_head = {k for k in expected if k.startswith(_HEAD_PREFIX)} if new_head else set()
    check_keys_match(
        state,
        expected,
        not_loaded=own_head,
        source=source,
        model_name="the AST model",
        hint="check model.ast_size (width, depth, heads) against the checkpoint",
    )
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) == own_head, result
    if new_head:
        for module in model.mlp_head:
            if isinstance(module, (nn.LayerNorm, nn.Linear)):
                module.reset_parameters()
