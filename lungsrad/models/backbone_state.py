"""What the backbones' weight loaders share (`dass/weights.py`, `ast/weights.py`): reading a
weights file, unwrapping the state dict inside a release file, a wrapper or a lungsrad
checkpoint, refusing the other backbone's file, and listing the keys that do not match.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lungsrad.checkpoint_format import check_checkpoint_format, is_lungsrad_checkpoint
from lungsrad.errors import UserError, first_line

_LISTED_KEYS = 5
# Keys only one backbone family has, whatever prefix a wrapper put in front of them.
_BACKBONE_SIGNATURES = {
    "dass": re.compile(r"(^|\.)layers\.\d+\.blocks\.\d+\.op\.|(^|\.)classifier\.head\."),
    "ast": re.compile(r"(^|\.)(cls_token|dist_token|pos_embed)$|(^|\.)mlp_head\."),
}


def identify_backbone(state: Mapping[str, Any]) -> str | None:
    """'dass' or 'ast' when the state dict's keys are unmistakably that backbone's, else None."""
    found = {
        name
        for name, signature in _BACKBONE_SIGNATURES.items()
        if any(signature.search(key) for key in state)
    }
    return found.pop() if len(found) == 1 else None


def describe_source(source: str | os.PathLike[str] | Mapping[str, Any]) -> str:
    """How errors name a weights source: its path, or "the given state dict"."""
    return str(source) if isinstance(source, (str, os.PathLike)) else "the given state dict"


def load_weights_file(path: Path, *, backbone: str = "DASS") -> Any:
    """`torch.load(path, weights_only=True)` of a file meant to hold `backbone`'s weights (any
    layout: `unwrap_state_dict` finds the state dict); a foreign file is a UserError naming it.

    Not `lungsrad.checkpoint_format.read_checkpoint`, which reads lungsrad's own checkpoints."""
    if not path.is_file():
        raise FileNotFoundError(f"{backbone} checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as error:  # torch.load raises many types for foreign files
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
        reason = first_line(text, empty=type(error).__name__)[:120]
        raise UserError(
            f"{path}: not a PyTorch state dict that loads with weights_only=True "
            f"({type(error).__name__}: {reason}); pass a {backbone} release file, a model "
            "state dict or a lungsrad checkpoint"
        ) from None


def unwrap_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The model state dict inside a release file, a wrapper dict or a lungsrad checkpoint."""
    if isinstance(obj, Mapping):
        if is_lungsrad_checkpoint(obj):
            obj = check_checkpoint_format(obj, source)
            if not isinstance(obj.get("model"), Mapping):
                raise UserError(f"{source}: lungsrad checkpoint without a 'model' state dict")
            obj = obj["model"]
        else:
            for key in ("model", "state_dict"):
                if isinstance(obj.get(key), Mapping) and not isinstance(obj.get(key), torch.Tensor):
                    obj = obj[key]
                    break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        kind = type(obj).__name__ if not isinstance(obj, Mapping) else "a mapping without tensors"
        raise UserError(
            f"{source}: not a state dict (found {kind}); expected a mapping of parameter names "
            "to tensors, a {'model': state_dict} wrapper or a lungsrad checkpoint"
        )
    return dict(obj)


def list_keys(keys: list[str]) -> str:
    """The first few `keys`, comma-separated, with "..." when there are more."""
    shown = ", ".join(keys[:_LISTED_KEYS])
    return shown + (", ..." if len(keys) > _LISTED_KEYS else "")


def check_keys_match(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    *,
    not_loaded: set[str],
    source: str,
    model_name: str,
    hint: str,
) -> None:
    """UserError listing (a few of) the missing, unexpected and mis-shaped keys of `state`
    against the model's `expected` state dict, if any; `not_loaded` keys may be absent."""
    missing = [key for key in expected if key not in state and key not in not_loaded]
    unexpected = [key for key in state if key not in expected]
    mis_shaped = [
        f"{key} {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in state
        if key in expected and state[key].shape != expected[key].shape
    ]
    parts = [
        f"{len(keys)} {name} ({list_keys(keys)})"
        for name, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", mis_shaped),
        )
        if keys
    ]
    if parts:
        raise UserError(
            f"{source}: checkpoint does not match {model_name}: {'; '.join(parts)}; {hint}"
        )


# Per backbone: its name with an article, and its release files (for the wrong-file error).
_BACKBONE_FILES = {
    "dass": ("a DASS", "DASS", "a DASS file (DASS_small.pth / DASS_medium.pth)"),
    "ast": ("an AST", "AST", "an AST file (audioset_10_10_0.4593.pth)"),
}


def read_backbone_state(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    *,
    backbone: str,
    source: str | None = None,
) -> tuple[str, dict[str, torch.Tensor]]:
    """(source name, state dict) of a file or mapping meant for `backbone` ('dass' | 'ast'):
    read, unwrapped, and refused in one line when its keys are the other backbone's. `source`
    names a mapping read from a file in errors."""
    source = source or describe_source(path_or_state_dict)
    name = _BACKBONE_FILES[backbone][1]
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        obj = load_weights_file(Path(path_or_state_dict).expanduser(), backbone=name)
    else:
        obj = path_or_state_dict
    raw = unwrap_state_dict(obj, source)
    found = identify_backbone(raw)
    if found is not None and found != backbone:
        other_article, other_name, _ = _BACKBONE_FILES[found]
        article, _, files = _BACKBONE_FILES[backbone]
        raise UserError(
            f"{source}: this is {other_article} checkpoint, not {article} one; set "
            f"model.backbone: {found} to use it, or point model.checkpoint at {files}"
        )
    return source, raw
