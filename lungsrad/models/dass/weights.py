"""Loading DASS weights: release files (`module.v.` keys), plain state dicts, lungsrad checkpoints,
and Hugging Face transformers-DASS files or folders (converted by `hf_format`).

Release format: Saurabhbhati/DASS saves `nn.DataParallel(DASS).state_dict()` flat, keys
`module.v.<VSSM path>` (manifests in shared/dass_reference/dass_{small,medium}_keys.json).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lungsrad.errors import UserError
from lungsrad.models.backbone_state import check_keys_match, read_backbone_state
from lungsrad.models.dass.hf_format import (
    from_hf_state,
    hf_weights_file,
    is_hf_dass_state,
    is_safetensors_file,
    load_safetensors_file,
)

logger = logging.getLogger(__name__)

HEAD_PREFIX = "classifier.head."
ACCEPTED_FORMATS = (
    "a DASS release file (module.v.* keys), a DASS state dict, a lungsrad checkpoint, or a "
    "Hugging Face DASS model.safetensors / pytorch_model.bin (or the folder holding it)"
)
# Stripped when every key carries it: release files (DataParallel around DASS.v), DASS without
# DataParallel, DataParallel around the backbone, and torch.compile'd modules.
_KEY_PREFIXES = ("module.v.", "v.", "module.", "_orig_mod.")


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _KEY_PREFIXES:
        if all(key.startswith(prefix) for key in state):
            return {key[len(prefix) :]: value for key, value in state.items()}
    return state


def read_dass_state(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
) -> tuple[str, dict[str, torch.Tensor]]:
    """(source name, state dict in this `DASS`'s names) of DASS weights in any accepted format:
    wrapper prefixes stripped, the Hugging Face layout converted (`hf_format.from_hf_state`).

    Raises:
        FileNotFoundError: the path does not exist.
        UserError: not a state dict, or an AST file.
    """
    source = None
    weights: str | os.PathLike[str] | Mapping[str, Any] = path_or_state_dict
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        path = hf_weights_file(Path(path_or_state_dict).expanduser())
        source = str(path)
        weights = path
        if is_safetensors_file(path):
            if not path.is_file():
                raise FileNotFoundError(f"DASS checkpoint not found: {path}")
            weights = load_safetensors_file(path)
    source, raw = read_backbone_state(weights, backbone="dass", source=source)
    if is_hf_dass_state(raw):
        return source, from_hf_state(raw)
    return source, _strip_prefix(raw)


def load_dass_checkpoint(
    model: nn.Module, path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any]
) -> None:
    """Loads DASS weights into `model` in place, strictly except for a differing class count.

    Accepts a release file (flat, `module.v.` keys; a `{"model": ...}` or `{"state_dict": ...}`
    wrapper is tolerated), a plain state dict of this `DASS`, a lungsrad training checkpoint
    (`{"format": "lungsrad-checkpoint", "model": state_dict, ...}`), or a Hugging Face
    transformers-DASS `model.safetensors` / `pytorch_model.bin` or its folder (converted).
    When the checkpoint's head has another number of classes than the model,
    `classifier.head.*` is skipped (logged) and the model keeps its own head; every other
    parameter must match by name and shape.

    Args:
        model: a `DASS` (or any module whose keys follow the release names without prefix).
        path_or_state_dict: a file or folder path, or an already loaded object.

    Raises:
        FileNotFoundError: the path does not exist.
        UserError: not a state dict, an AST file (named as such), no DASS key at all (the
            accepted formats named), or keys missing / unexpected / of another shape (listed).
    """
    source, state = read_dass_state(path_or_state_dict)
    expected = model.state_dict()
    if not any(key in expected for key in state):
        raise UserError(
            f"{source}: not a DASS checkpoint (none of its {len(state)} keys is a DASS "
            f"parameter); accepted: {ACCEPTED_FORMATS}"
        )

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
