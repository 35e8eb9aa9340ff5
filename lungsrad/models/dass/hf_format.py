"""DASS weights in Hugging Face's transformers format, both ways: the layout of
`DASSForAudioClassification` in Saurabhbhati/transformers-DASS (`modeling_dass.py`, filled from a
release file by its `convert_dass_original_pytorch_checkpoint_to_pytorch.py`), saved as
`model.safetensors` or `pytorch_model.bin`, alone or in a model folder.

What differs from the release names (without `module.v.`), per key:
- the backbone sits under `dass.`, the head at the top (`head.*` <-> `classifier.head.*`) and the
  final norm is `dass.norm.*` (<-> `classifier.norm.*`);
- `patch_embeddings.projection.{0,1,3,4}` <-> `patch_embed.{0,2,5,7}` (GELU at 2 has no weights);
- `downsample.{down,norm}` <-> `downsample.{1,3}`;
- SS2D's grouped projections are Linear layers: `op.x_proj.weight` (4 (R + 2N), D) <->
  `op.x_proj_weight` (4, R + 2N, D) and `op.dt_projs.weight` (4 D, R) <-> `op.dt_projs_weight`
  (4, D, R); `dt_projs_bias` (4, D), `A_logs` (4 D, N) and `Ds` (4 D,) keep name and shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from lungsrad.errors import UserError, first_line
from lungsrad.files import atomic_destination

# The files a transformers model folder holds its weights in, in the order they are looked for.
HF_WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
HF_PREFIX = "dass."
# SS2D's four scan directions (k_group in modeling_dass.py).
_DIRECTIONS = 4

_HF_SIGNATURE = re.compile(
    r"(^|\.)patch_embeddings\.projection\.|\.op\.(x_proj|dt_projs)\.weight$|\.downsample\.down\."
)

# (where, our name fragment, HF name fragment): "start" and "end" anchor the fragment at the
# name's start or end, "inside" matches anywhere. Applied after the `dass.` prefix is handled.
_RENAMES = (
    ("start", "patch_embed.0.", "patch_embeddings.projection.0."),
    ("start", "patch_embed.2.", "patch_embeddings.projection.1."),
    ("start", "patch_embed.5.", "patch_embeddings.projection.3."),
    ("start", "patch_embed.7.", "patch_embeddings.projection.4."),
    ("inside", ".downsample.1.", ".downsample.down."),
    ("inside", ".downsample.3.", ".downsample.norm."),
    ("end", ".op.x_proj_weight", ".op.x_proj.weight"),
    ("end", ".op.dt_projs_weight", ".op.dt_projs.weight"),
    ("start", "classifier.norm.", "norm."),
)


def _patterns(
    renames: tuple[tuple[str, str, str], ...], *, to_hf: bool
) -> tuple[tuple[re.Pattern[str], str], ...]:
    """(compiled pattern, replacement) pairs of one direction of `renames`."""
    anchors = {"start": ("^", ""), "end": ("", "$"), "inside": ("", "")}
    pairs = []
    for where, ours, hf in renames:
        source, target = (ours, hf) if to_hf else (hf, ours)
        before, after = anchors[where]
        pairs.append((re.compile(before + re.escape(source) + after), target))
    return tuple(pairs)


_OURS_TO_HF = _patterns(_RENAMES, to_hf=True)
_HF_TO_OURS = _patterns(_RENAMES, to_hf=False)


def is_hf_dass_state(state: Mapping[str, Any]) -> bool:
    """Whether the state dict's keys are the transformers-DASS layout's."""
    return any(_HF_SIGNATURE.search(key) for key in state)


def _rename(key: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str:
    for pattern, replacement in rules:
        key = pattern.sub(replacement, key)
    return key


def _regroup(
    key: str, tensor: torch.Tensor, shape: Callable[[torch.Tensor], tuple[int, ...]]
) -> torch.Tensor:
    """`tensor` viewed as `shape(tensor)`; a UserError when its size does not allow it."""
    try:
        return tensor.reshape(shape(tensor))
    except RuntimeError:
        raise UserError(
            f"{key}: shape {tuple(tensor.shape)} cannot be a DASS grouped projection "
            f"({_DIRECTIONS} scan directions)"
        ) from None


def from_hf_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The transformers-DASS state dict in this `DASS`'s names and shapes (no prefix).

    Args:
        state: keys `dass.*` and `head.*` (a bare `DASSModel`'s keys, without `dass.`, work too).
    """
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("head."):
            name = "classifier." + key
        else:
            name = _rename(key.removeprefix(HF_PREFIX), _HF_TO_OURS)
        if name.endswith((".op.x_proj_weight", ".op.dt_projs_weight")):
            # (4 (R + 2N), D) -> (4, R + 2N, D); (4 D, R) -> (4, D, R)
            tensor = _regroup(key, tensor, lambda t: (_DIRECTIONS, -1, t.shape[-1]))
        converted[name] = tensor
    return converted


def to_hf_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This `DASS`'s state dict (no prefix) in the transformers-DASS names and shapes, as
    `DASSForAudioClassification.state_dict()` holds them (contiguous, for safetensors)."""
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("classifier.head."):
            name = key.removeprefix("classifier.")
        else:
            name = HF_PREFIX + _rename(key, _OURS_TO_HF)
        if key.endswith((".op.x_proj_weight", ".op.dt_projs_weight")):
            # (4, R + 2N, D) -> (4 (R + 2N), D); (4, D, R) -> (4 D, R)
            tensor = tensor.reshape(-1, tensor.shape[-1])
        converted[name] = tensor.contiguous()
    return converted


def hf_weights_file(path: Path) -> Path:
    """The weights file of a transformers model folder (`path` itself when it is a file).

    Raises:
        UserError: a folder holding none of HF_WEIGHTS_FILES.
    """
    if not path.is_dir():
        return path
    for name in HF_WEIGHTS_FILES:
        if (path / name).is_file():
            return path / name
    raise UserError(
        f"{path}: a folder without {' or '.join(HF_WEIGHTS_FILES)}; point model.checkpoint at "
        "a DASS weights file or a Hugging Face DASS model folder"
    )


def is_safetensors_file(path: Path) -> bool:
    """A `.safetensors` file (by name; any other file is read with torch.load)."""
    return path.suffix == ".safetensors"


def load_safetensors_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file on the CPU; a file it cannot parse is a UserError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, ValueError) as error:
        raise UserError(
            f"{path}: not a safetensors file ({first_line(error)[:120]}); pass a DASS release "
            "file, a lungsrad checkpoint or a Hugging Face DASS model.safetensors / "
            "pytorch_model.bin"
        ) from None


def save_hf_dass(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Writes this `DASS`'s state dict as a transformers-DASS `model.safetensors` (or, for any
    other suffix, a torch.save'd `pytorch_model.bin`) at `path`, atomically; never over a file.

    Raises:
        FileExistsError: `path` exists.
    """
    if path.exists():
        raise FileExistsError(f"{path} exists; not overwriting it")
    converted = to_hf_state(state)
    with atomic_destination(path) as temporary:
        if is_safetensors_file(path):
            from safetensors.torch import save_file

            save_file(converted, str(temporary), metadata={"format": "pt"})
        else:
            torch.save(converted, temporary)
