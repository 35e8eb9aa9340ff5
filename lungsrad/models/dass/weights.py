"""Loading DASS weights: release files (`module.v.` keys), plain state dicts, lungsrad checkpoints.

Release format: Saurabhbhati/DASS saves `nn.DataParallel(DASS).state_dict()` flat, keys
`module.v.<VSSM path>` (manifests in shared/dass_reference/dass_{small,medium}_keys.json).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lungsrad.models.backbone_state import check_keys_match, read_backbone_state

logger = logging.getLogger(__name__)

HEAD_PREFIX = "classifier.head."
# Stripped when every key carries it: release files (DataParallel around DASS.v), DASS without
# DataParallel, DataParallel around the backbone, and torch.compile'd modules.
_KEY_PREFIXES = ("module.v.", "v.", "module.", "_orig_mod.")


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _KEY_PREFIXES:
        if all(key.startswith(prefix) for key in state):
            return {key[len(prefix) :]: value for key, value in state.items()}
    return state


def load_dass_checkpoint(
    model: nn.Module, path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any]
) -> None:
    """Loads DASS weights into `model` in place, strictly except for a differing class count.

    Accepts a release file (flat, `module.v.` keys; a `{"model": ...}` or `{"state_dict": ...}`
    wrapper is tolerated), a plain state dict of this `DASS`, or a lungsrad training checkpoint
    (`{"format": "lungsrad-checkpoint", "model": state_dict, ...}`). When the checkpoint's head
    has another number of classes than the model, `classifier.head.*` is skipped (logged) and
    the model keeps its own head; every other parameter must match by name and shape.

    Args:
        model: a `DASS` (or any module whose keys follow the release names without prefix).
        path_or_state_dict: a file path or an already loaded object.

    Raises:
        FileNotFoundError: the path does not exist.
        UserError: not a state dict, an AST file (named as such), or keys missing /
            unexpected / of another shape (listed).
    """
    source, raw = read_backbone_state(path_or_state_dict, backbone="dass")
    state = _strip_prefix(raw)
    expected = model.state_dict()

    skipped: list[str] = []
    head_weight = HEAD_PREFIX + "weight"
    if head_weight in state and head_weight in expected:
        theirs, ours = state[head_weight].shape[0], expected[head_weight].shape[0]
        if theirs != ours:
            skipped = [key for key in state if key.startswith(HEAD_PREFIX)]
            logger.info(
                "%s: checkpoint head has %d classes, the model %d; keeping the model's own "
                "head and loading everything else",
                source,
                theirs,
                ours,
            )
            state = {key: value for key, value in state.items() if key not in skipped}

    check_keys_match(
        state,
        expected,
        not_loaded=set(skipped),
        source=source,
        model_name="the model",
        hint="check the model preset/dims/depths against the checkpoint",
    )
    result = model.load_state_dict(state, strict=False)
    own_head = {key for key in expected if key.startswith(HEAD_PREFIX)} if skipped else set()
    assert not result.unexpected_keys and set(result.missing_keys) == own_head, result
