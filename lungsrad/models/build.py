"""`build_model(config)`: the backbone `model.backbone` names (DASS or AST), from its checkpoint
file or from `InitialWeights` read once elsewhere (a sweep driver ships them to its trials)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from lungsrad.config import (
    RANDOM_INIT_CHECKPOINT,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    checkpoint_file,
    model_input_frames,
    resolved_architecture,
    resolved_ast_size,
)
from lungsrad.errors import UserError
from lungsrad.models.ast import AST, load_ast_checkpoint
from lungsrad.models.backbone_state import read_backbone_state
from lungsrad.models.dass import DASS, load_dass_checkpoint
from lungsrad.models.dass.hf_format import hf_weights_file
from lungsrad.models.dass.weights import read_dass_state

# What build_model returns; code above `models/` uses only the surface both share (embed,
# forward_from_embedding, forward_head, num_features, depths, block).
Backbone = DASS | AST

_RELEASE_FILES = {
    "dass": "a DASS release file (DASS_small.pth / DASS_medium.pth), a Hugging Face DASS folder",
    "ast": "the AST AudioSet release file (audioset_10_10_0.4593.pth)",
}


@dataclass(frozen=True)
class InitialWeights:
    """The weights `model.checkpoint` names, read once: `build_model` takes them instead of
    opening the file (a plain object: a sweep driver sends it to its trials)."""

    checkpoint: str  # model.checkpoint as the config names it (a path or a fetch: name)
    file: str  # the file read (an HF model folder's weights file), on the machine that read it
    sha256: str  # of that file's bytes
    state: Mapping[str, torch.Tensor]  # its state dict, unwrapped (for DASS in DASS's names)

    @property
    def size_bytes(self) -> int:
        """Bytes of the state's tensors."""
        return sum(tensor.numel() * tensor.element_size() for tensor in self.state.values())


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_initial_weights(model_config: ModelConfig) -> InitialWeights | None:
    """The weights of `model.checkpoint` read from this machine's file, with the file's SHA-256;
    None when it names none (a random initialisation). Checked only as a state dict of the
    right backbone: `build_model(config, initial_weights=...)` checks keys and shapes.

    Raises:
        FileNotFoundError: the file does not exist.
        UserError: not a state dict of `model.backbone`.
    """
    checkpoint = checkpoint_file(model_config)
    if checkpoint is None:
        return None
    path = _existing_checkpoint(Path(checkpoint).expanduser(), model_config)
    file = hf_weights_file(path) if model_config.backbone == "dass" else path
    try:
        if model_config.backbone == "dass":
            _, state = read_dass_state(file)
        else:
            _, state = read_backbone_state(file, backbone="ast")
    except UserError as error:
        raise UserError(f"model.checkpoint {error}") from None
    assert model_config.checkpoint is not None
    return InitialWeights(
        checkpoint=model_config.checkpoint, file=str(file), sha256=file_sha256(file), state=state
    )


def _existing_checkpoint(path: Path, model_config: ModelConfig) -> Path:
    if not path.exists():  # before building: AST-base takes seconds
        raise FileNotFoundError(
            f"model.checkpoint not found: {path}; point it at "
            f"{_RELEASE_FILES[model_config.backbone]} or a lungsrad checkpoint, or set it to "
            f"'{RANDOM_INIT_CHECKPOINT}' to train from a random initialisation"
        )
    return path


def build_model(
    config: ExperimentConfig | ModelConfig, *, initial_weights: InitialWeights | None = None
) -> Backbone:
    """The backbone of `config.model`, loading `model.checkpoint` when it names a file or model
    folder (unset or "none": a random initialisation), or taking `initial_weights` instead:
    then the checkpoint's path is never opened.

    DASS: preset / dims / depths / drop path / scan backend. AST: `model.ast_size` (or the
    custom ast_* sizes) on the input the data section produces (frames from
    `data.segment_seconds`, `data.num_mel_bins`), its checkpoint adapted by
    `model.ast_pos_embed`. Given only a `ModelConfig`, the data section's defaults are used.

    Args:
        config: a run config (or just its `model` section).
        initial_weights: the weights `model.checkpoint` names, already read (its
            `checkpoint` must be the config's model.checkpoint).

    Raises:
        FileNotFoundError: `model.checkpoint` is set but the file does not exist (never a
            silent random initialisation).
        UserError: the checkpoint does not fit the architecture, or is the other backbone's.
    """
    if isinstance(config, ExperimentConfig):
        model_config, data_config = config.model, config.data
    else:
        model_config, data_config = config, DataConfig()
    weights: Path | Mapping[str, torch.Tensor] | None = None
    if initial_weights is not None:
        if initial_weights.checkpoint != model_config.checkpoint:
            raise ValueError(
                f"initial weights of {initial_weights.checkpoint!r} given for a config whose "
                f"model.checkpoint is {model_config.checkpoint!r}"
            )
        weights = initial_weights.state
    elif (checkpoint := checkpoint_file(model_config)) is not None:
        weights = _existing_checkpoint(Path(checkpoint).expanduser(), model_config)
    if model_config.backbone == "ast":
        model: Backbone = _build_ast(model_config, data_config)
    else:
        model = _build_dass(model_config)
    if weights is not None:
        source = initial_weights.file if initial_weights is not None else None
        try:
            if isinstance(model, AST):
                load_ast_checkpoint(model, weights, pos_embed_mode=model_config.ast_pos_embed)
            else:
                load_dass_checkpoint(model, weights)
        except UserError as error:
            message = str(error)
            if source is not None:
                message = message.replace("the given state dict", source, 1)
            raise UserError(f"model.checkpoint {message}") from None
    return model


def _build_dass(model_config: ModelConfig) -> DASS:
    dims, depths, drop_path_rate = resolved_architecture(model_config)
    return DASS(
        num_classes=model_config.num_classes,
        dims=dims,
        depths=depths,
        drop_path_rate=drop_path_rate,
        scan_backend=model_config.scan_backend,
    )


def _build_ast(model_config: ModelConfig, data_config: DataConfig) -> AST:
    embed_dim, depth, num_heads = resolved_ast_size(model_config)
    return AST(
        num_classes=model_config.num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        input_frames=model_input_frames(data_config),
        num_mel_bins=data_config.num_mel_bins,
    )
