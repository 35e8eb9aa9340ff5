"""The one typed experiment configuration: frozen dataclasses, YAML load/save, dotted overrides.

Every run (CLI, Ray trial, final training) is `ExperimentConfig`; unknown keys and bad values
fail with a `UserError` (lungsrad.errors) naming the key, NaN and inf included, so a typo never
costs a training run.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import types
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from lungsrad.errors import UserError
from lungsrad.files import write_text_atomic

# Bumped whenever a key is renamed or its meaning changes. A config of an older version is read
# with that version's meaning (`LEGACY_DEFAULTS`); a newer one is refused.
CONFIG_VERSION = 2

# Version 2 made the library defaults follow the authors' shared pipeline (raymin0223/
# patch-mix_contrastive_learning `util/icbhi_util.py`, `util/augmentation.py`): fades, truncated
# cuts with torchaudio's Resample, centred zero padding, and its SpecAugment. A version-1 config
# means what it meant when it ran: these are the values version 1 used, for keys it did not have.
LEGACY_DEFAULTS: dict[int, dict[str, Any]] = {
    1: {
        "data.fade": "none",
        "data.cycle_slicing": "rounded",
        "data.zero_padding": "end",
        "train.num_time_masks": 1,
        "train.num_freq_masks": 1,
        "train.mask_fill": "zero",
        "train.specaugment_probability": 1.0,
        "train.mask_sampling": "torchaudio",
    },
}

# P(N(0, 1) <= 1): the reference applies its SpecAugment when `1.0 >= torch.randn(1)`.
REFERENCE_SPECAUGMENT_PROBABILITY = 0.8413447460685429

# Evaluation protocols (train.protocol). 'paper' selects the epoch on the test split (as the
# Lung-SRAD paper does); the others select it on a patient-disjoint validation carve-out of their
# training patients, so no test number picks an epoch.
PROTOCOLS: tuple[str, ...] = ("paper", "validated", "foldwise", "disjoint")
VALIDATION_PROTOCOLS: tuple[str, ...] = ("validated", "foldwise", "disjoint")
# Folds of RespireNet's patient split (train.protocol foldwise, data.fold).
NUM_FOLDS = 5

# The fewest classes a classifier may have (ICBHI has 4; a 2-class task is the smallest).
MIN_NUM_CLASSES = 2

# DASS presets as in the reference code (Saurabhbhati/DASS, src/models/ast_models.py).
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "small": {"dims": (96, 192, 384, 768), "depths": (2, 2, 8, 2), "drop_path_rate": 0.2},
    "medium": {"dims": (96, 192, 384, 768), "depths": (2, 2, 20, 2), "drop_path_rate": 0.3},
}
# AST sizes: base is the AudioSet model of YuanGongND/ast (DeiT-base distilled: width 768, 12
# blocks, 12 heads); tiny is the golden-test size, for CPU tests and smoke runs.
AST_SIZES: dict[str, dict[str, int]] = {
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "tiny": {"embed_dim": 64, "depth": 2, "num_heads": 4},
}
AST_PATCH_SIZE = 16  # AST's square patches (16 x 16 mel bins x frames)


@dataclass(frozen=True)
class DataConfig:
    """Where the ICBHI data lives and how cycles become features."""

    root: str | None = None  # ICBHI_final_database folder; the CLI's --data overrides it
    split_file: str | None = (
        None  # official split file; None: <root>/ICBHI_challenge_train_test.txt
    )
    sample_rate_hz: int = 16000  # every recording is resampled to this rate
    segment_seconds: float = 8.0  # each cycle is padded or cut to this length
    padding: Literal["repeat", "zero"] = "repeat"  # how short cycles are brought to length
    zero_padding: Literal["centre", "end"] = "centre"  # padding 'zero': cycle centred or at start
    # none, or reference: linear fades of sample_rate / 16 samples (1000 at 16 kHz) in and out
    # of the whole resampled recording, and out of every repeat-padded cycle
    fade: Literal["none", "reference"] = "reference"
    # truncated: int(t * rate) cuts, torchaudio.transforms.Resample (the reference code);
    # rounded: floor(t * rate + 1e-6) cuts, torchaudio.functional.resample (lungsrad 1)
    cycle_slicing: Literal["truncated", "rounded"] = "truncated"
    num_mel_bins: int = 128  # Kaldi fbank mel bins
    frame_length_ms: float = 25.0  # fbank window
    frame_shift_ms: float = 10.0  # fbank hop
    # audioset: (fbank - feature_mean) / (2 * feature_std); per_example: each cycle's own mean
    # and (unbiased) std instead, as the DASS reference code does
    normalization: Literal["audioset", "per_example"] = "audioset"
    feature_mean: float = -4.2677393  # AudioSet statistics used by AST (normalization audioset)
    feature_std: float = 4.5689974  # features are (fbank - mean) / (2 * std)
    # frames the model sees: null, the fbank's own (798 for 8 s); else the (frames, bins) map is
    # resized (bilinear) to this many frames on the training device, after augmentation
    model_frames: int | None = None
    cache_dir: str | None = None  # feature cache; None: ~/.cache/lungsrad/features
    validation_fraction: float = 0.2  # share of train patients held out for protocol 'validated'
    split_seed: int = 0  # seed of the patient-disjoint validation carve-out
    fold: int | None = None  # 'foldwise' only: test fold 0..4 of RespireNet's patient split


@dataclass(frozen=True)
class ModelConfig:
    """The backbone: DASS (preset ... scan_backend) or AST (the ast_* keys)."""

    backbone: Literal["dass", "ast"] = "dass"  # which backbone family the run trains
    preset: Literal["small", "medium", "custom"] = "small"  # DASS; custom: dims, depths required
    dims: tuple[int, ...] | None = None  # DASS stage widths; None: the preset's
    depths: tuple[int, ...] | None = None  # DASS blocks per stage; None: the preset's
    num_classes: int = 4  # 4 (normal/crackle/wheeze/both); 2-class scores derive from these
    drop_path_rate: float | None = None  # DASS stochastic depth; None: the preset's (custom: 0.0)
    checkpoint: str | None = None  # release file, lungsrad checkpoint, or "none": random init
    scan_backend: Literal["auto", "reference", "chunked", "mamba_ssm", "triton"] = "auto"  # DASS
    ast_size: Literal["base", "tiny", "custom"] = "base"  # AST; custom: the three keys below
    ast_embed_dim: int | None = None  # AST token width; None: the size's
    ast_depth: int | None = None  # AST blocks; None: the size's
    ast_num_heads: int | None = None  # AST attention heads (must divide the width); None: size's
    # How a checkpoint's positional embedding is adapted to this input: reference (YuanGongND/ast,
    # the correct layout) or patchmix_code (the patch-mix CL code's swapped layout, which made
    # Bae et al.'s published AST numbers).
    ast_pos_embed: Literal["reference", "patchmix_code"] = "reference"


# model.checkpoint value that asks for a random initialisation on purpose (a sweep whose search
# space says `requires_pretrained: true` refuses an unset checkpoint, never this).
RANDOM_INIT_CHECKPOINT = "none"


def checkpoint_file(model: ModelConfig) -> str | None:
    """model.checkpoint as a file to load; None when unset or "none" (random initialisation)."""
    checkpoint = model.checkpoint
    if checkpoint is None or checkpoint.strip().lower() == RANDOM_INIT_CHECKPOINT:
        return None
    return checkpoint


@dataclass(frozen=True)
class RegularizationConfig:
    """Spectral-aware layer regularization: Gaussian smoothing of chosen block outputs."""

    enabled: bool = False  # smooth the chosen blocks' output maps (training and evaluation)
    padding: Literal["reflect", "zero"] = "reflect"  # map edges (zero: the authors' helper)
    sigma: float = 1.0  # Gaussian width in feature-map cells
    kernel_size: int = 3  # odd 1-D kernel length, applied along frequency and time
    stage: int = 2  # stage index as the reference numbers layers.0..layers.3
    blocks: tuple[int, ...] | Literal["all"] = (2, 3)  # block indices inside the stage, or all


@dataclass(frozen=True)
class PatchMixConfig:
    """Dual-axis patch-mix supervised contrastive learning."""

    mode: Literal["none", "ast_style", "time", "freq", "dual"] = "none"  # which mixes are used
    alpha: float = 1.0  # lambda ~ Beta(alpha, alpha)
    temperature: float = 0.06  # tau of the patch-mix InfoNCE loss
    projection_dim: int = 768  # output width of the projection head
    gradient_block: Literal["mixed", "target", "none"] = "mixed"  # side kept out of backbone grads
    # the clean (target) features go through the projection head; false: compared unprojected
    # (the reference's grad_block; projection_dim must then equal the backbone's feature width)
    project_target: bool = True
    train_projector: bool = True  # false: the head keeps its initial weights (ICBHI_HADES)
    time_loss_weight: float = 1.0  # weight of the temporal-mix loss (and of ast_style's loss)
    freq_loss_weight: float = 1.0  # weight of the frequency-mix loss


@dataclass(frozen=True)
class MethodConfig:
    """The Lung-SRAD additions to plain DASS fine-tuning."""

    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    patch_mix: PatchMixConfig = field(default_factory=PatchMixConfig)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, augmentation, evaluation protocol."""

    num_epochs: int = 50  # training epochs
    batch_size: int = 16  # training mini-batch
    eval_batch_size: int = 64  # evaluation mini-batch
    learning_rate: float = 5e-5  # peak lr (paper's value illegible; patch-mix AST convention)
    weight_decay: float = 1e-6  # adam: L2 penalty in the gradient; adamw: decoupled decay
    optimizer: Literal["adam", "adamw"] = "adam"  # torch.optim.Adam or AdamW (the reference's)
    # per-epoch lr schedule; cosine_from_epoch_1: the reference's counting (epoch e of E, 1-based,
    # at the cosine's value at e / E: the first epoch already below the peak, the last at the floor)
    schedule: Literal["cosine", "cosine_from_epoch_1", "step", "constant"] = "cosine"
    min_learning_rate_factor: float = 0.0  # cosine floor as a share of learning_rate (ref: 1e-3)
    warmup_epochs: int = 0  # linear warm-up epochs before the schedule
    step_size_epochs: int = 10  # 'step' schedule: epochs between decays
    step_gamma: float = 0.5  # 'step' schedule: decay factor
    seed: int = 0  # seeds torch, numpy and python; logged with every run
    protocol: Literal["paper", "validated", "foldwise", "disjoint"] = (
        "paper"  # paper: best test epoch; others: val-selected (docs/protocols.md)
    )
    use_specaugment: bool = True  # time/frequency masking on training batches
    time_mask: int = 160  # SpecAugment max time-mask width (frames)
    freq_mask: int = 48  # SpecAugment max frequency-mask width (mel bins)
    num_time_masks: int = 2  # time masks per sample
    num_freq_masks: int = 2  # frequency masks per sample
    mask_fill: Literal["zero", "mean"] = "mean"  # masked cells: 0, or the sample's current mean
    # share of samples SpecAugment is applied to (the reference: P(N(0,1) <= 1) = 0.8413)
    specaugment_probability: float = REFERENCE_SPECAUGMENT_PROBABILITY
    # reference: width int(U[0, max)), start uniform over the integers [0, size - width];
    # torchaudio: mask_along_axis_iid's continuous width and start, truncated (lungsrad 1)
    mask_sampling: Literal["reference", "torchaudio"] = "reference"
    drop_last: bool = False  # drop each epoch's last partial batch (the reference does)
    # null, or beta: after every optimiser step the whole state becomes beta * (before the step)
    # + (1 - beta) * (after), the reference's --ma_update --ma_beta
    weight_averaging: float | None = None
    # the reported (best) epoch must have Se above this, in percent (the reference: 5); null: none
    min_sensitivity: float | None = None
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, off on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when a device is visible
    max_steps_per_epoch: int | None = None  # cap on optimiser steps per epoch (smoke runs)
    grad_clip_norm: float | None = None  # clip gradient norm; None: no clipping
    num_threads: int | None = None  # torch CPU threads; None: torch's default
    capture_step: bool = False  # replay full training batches as one CUDA graph (CUDA, bf16/off)
    finite_check_steps: int = 50  # steps between host looks at the NaN/inf flag (0: epoch end)


@dataclass(frozen=True)
class ExperimentConfig:
    """A complete, replayable run description."""

    config_version: int = CONFIG_VERSION  # refuses configs written by another code version
    name: str = "lung_srad"  # run name used in outputs and tracking
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------------------------
# Derived values


def resolved_architecture(model: ModelConfig) -> tuple[tuple[int, ...], tuple[int, ...], float]:
    """Returns (dims, depths, drop_path_rate) after applying the preset."""
    if model.preset == "custom":
        assert model.dims is not None and model.depths is not None  # checked by validate_config
        rate = 0.0 if model.drop_path_rate is None else model.drop_path_rate
        return tuple(model.dims), tuple(model.depths), rate
    preset = MODEL_PRESETS[model.preset]
    dims = tuple(model.dims) if model.dims is not None else preset["dims"]
    depths = tuple(model.depths) if model.depths is not None else preset["depths"]
    rate = preset["drop_path_rate"] if model.drop_path_rate is None else model.drop_path_rate
    return dims, depths, rate


def resolved_ast_size(model: ModelConfig) -> tuple[int, int, int]:
    """Returns the AST's (embed_dim, depth, num_heads) after applying `model.ast_size`."""
    size = AST_SIZES.get(model.ast_size, {})
    values = []
    for key in ("embed_dim", "depth", "num_heads"):
        value = getattr(model, f"ast_{key}")
        value = size.get(key) if value is None else value
        assert value is not None, key  # custom without it: refused by validate_config
        values.append(int(value))
    embed_dim, depth, num_heads = values
    return embed_dim, depth, num_heads


def backbone_depths(model: ModelConfig) -> tuple[int, ...]:
    """Blocks per stage of the configured backbone (AST: one stage)."""
    if model.backbone == "ast":
        return (resolved_ast_size(model)[1],)
    return resolved_architecture(model)[1]


def expected_num_frames(data: DataConfig) -> int:
    """Fbank frames per segment, as Kaldi computes them (snip_edges: only whole windows)."""
    rate = data.sample_rate_hz
    num_samples = int(round(data.segment_seconds * rate))
    window = int(rate * data.frame_length_ms * 0.001)
    shift = int(rate * data.frame_shift_ms * 0.001)
    if window < 1 or shift < 1 or num_samples < window:
        raise UserError(
            f"data.segment_seconds ({data.segment_seconds}) must hold at least one "
            f"{data.frame_length_ms} ms window at {rate} Hz"
        )
    return 1 + (num_samples - window) // shift


def model_input_frames(data: DataConfig) -> int:
    """Frames of the map the model sees: data.model_frames, or the fbank's own count."""
    return data.model_frames if data.model_frames is not None else expected_num_frames(data)


def backbone_feature_width(model: ModelConfig) -> int:
    """Width of the pooled features the backbone hands the classifier and the projection head."""
    if model.backbone == "ast":
        return resolved_ast_size(model)[0]
    return resolved_architecture(model)[0][-1]


def regularized_blocks(config: ExperimentConfig) -> list[int]:
    """Block indices (inside `method.regularization.stage`) that get smoothed."""
    regularization = config.method.regularization
    depths = backbone_depths(config.model)
    if regularization.blocks == "all":
        return list(range(depths[regularization.stage]))
    return list(regularization.blocks)


# ---------------------------------------------------------------------------------------------
# Parsing: one typed reader for every YAML document made of frozen dataclasses (run configs here,
# search spaces in tuning/search_space.py). Types, unknown keys, NaN/inf and the per-field rules
# of `field_rule` are checked here, once.


class SchemaError(UserError):
    """A value its field refuses; `keys` is the path to it (to find its line in a file)."""

    def __init__(self, message: str, keys: tuple[str, ...]):
        super().__init__(message)
        self.keys = keys


class _TypeMismatch(SchemaError):
    """The value is not of the annotated type (a Union then tries its next member)."""


def field_rule(
    *,
    minimum: float | None = None,
    above: float | None = None,
    non_empty: bool = False,
    distinct: bool = False,
    example: str = "",
    note: str = "",
) -> dict[str, Any]:
    """Dataclass field metadata read by `parse_typed`: numbers (also the items or values of a
    list or mapping field) >= minimum or > above; lists non-empty and/or without repeats;
    `example` shows the expected mapping; `note` ends the message (e.g. what -1 means)."""
    rule = {"minimum": minimum, "above": above, "non_empty": non_empty, "distinct": distinct}
    return {"rule": {**rule, "example": example, "note": note}}


_NO_RULE: dict[str, Any] = field_rule()["rule"]


def _dotted(keys: tuple[str, ...]) -> str:
    text = ""
    for key in keys:
        text += key if key.startswith("[") or not text else f".{key}"
    return text


@dataclass(frozen=True)
class _Reader:
    """Converts YAML values to annotated types; `noun` names keys in messages."""

    noun: str  # "config key": "config key 'train.seed' must be..."; "": "seeds must be..."

    def name(self, keys: tuple[str, ...]) -> str:
        return f"{self.noun} '{_dotted(keys)}'" if self.noun else _dotted(keys)

    def mismatch(self, keys: tuple[str, ...], what: str, value: Any) -> _TypeMismatch:
        return _TypeMismatch(f"{self.name(keys)} must be {what}, got {value!r}", keys)

    def build(self, cls: Any, values: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in values:
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
                hint = f"; did you mean '{_dotted((*keys, close[0]))}'?" if close else ""
                raise SchemaError(
                    f"unknown {self.noun or 'key'} '{_dotted((*keys, str(key)))}'{hint} "
                    f"(known keys: {', '.join(fields)})",
                    (*keys, str(key)),
                )
        for key, spec in fields.items():
            required = spec.default is dataclasses.MISSING
            if required and spec.default_factory is dataclasses.MISSING and key not in values:
                raise SchemaError(f"{self.name(keys) or 'the file'} needs the key '{key}'", keys)
        kwargs = {
            key: self.inner(
                value, hints[key], (*keys, key), fields[key].metadata.get("rule", _NO_RULE)
            )
            for key, value in values.items()
        }
        return cls(**kwargs)

    def inner(self, value: Any, annotation: Any, keys: tuple[str, ...], rule: dict) -> Any:
        """`convert` of a part of a value whose own type matched: a mismatch there is final
        (a Union around the whole value must not try its next member and hide the key)."""
        try:
            return self.convert(value, annotation, keys, rule)
        except _TypeMismatch as error:
            raise SchemaError(str(error), error.keys) from None

    def convert(self, value: Any, annotation: Any, keys: tuple[str, ...], rule: dict) -> Any:
        """`value` as `annotation`; SchemaError naming the key when it is not, or breaks `rule`."""
        origin = typing.get_origin(annotation)
        if annotation is Any:
            return value
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, Mapping):
                raise self.mismatch(keys, rule["example"] or "a mapping", value)
            return self.build(annotation, value, keys)
        if origin in (Union, types.UnionType):
            return self._union(value, annotation, keys, rule)
        if origin is Literal:
            if value not in typing.get_args(annotation):
                raise self.mismatch(keys, f"one of {_type_name(annotation)}", value)
            return value
        if origin is tuple:
            return self._list(value, annotation, keys, rule)
        if origin is dict:
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise self.mismatch(keys, "a mapping of names", value)
            (_, item_type) = typing.get_args(annotation)
            return {k: self.inner(v, item_type, (*keys, k), rule) for k, v in value.items()}
        if annotation is bool:
            if not isinstance(value, bool):
                raise self.mismatch(keys, "true or false", value)
            return value
        if annotation is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.mismatch(keys, "an integer", value)
            return self._bounded(value, "an integer", keys, rule)
        if annotation is float:
            number = _float_or_none(value)
            if number is None:
                raise self.mismatch(keys, "a number", value)
            if not math.isfinite(number):
                raise SchemaError(f"{self.name(keys)} must be a finite number, got {value!r}", keys)
            return self._bounded(number, "a number", keys, rule)
        if annotation is str:
            if not isinstance(value, str):
                raise self.mismatch(keys, "a string", value)
            return value
        raise TypeError(f"unsupported annotation {annotation!r} for '{_dotted(keys)}'")

    def _union(self, value: Any, annotation: Any, keys: tuple[str, ...], rule: dict) -> Any:
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        if float in args:  # NaN/inf is refused as such, not as "the wrong type"
            number = _float_or_none(value)
            if number is not None and not math.isfinite(number):
                raise SchemaError(f"{self.name(keys)} must be a finite number, got {value!r}", keys)
        for arg in args:
            if dataclasses.is_dataclass(arg) and isinstance(value, Mapping):
                return self.build(arg, value, keys)  # its own keys' errors, not the union's
        for arg in args:
            if arg is type(None):
                continue
            try:
                return self.convert(value, arg, keys, rule)
            except _TypeMismatch:
                continue
        members = [arg for arg in args if arg is not type(None)]
        if len(members) == 1 and dataclasses.is_dataclass(members[0]):
            return self.convert(value, members[0], keys, rule)  # "must be a mapping like ..."
        raise self.mismatch(keys, _type_name(annotation), value)

    def _list(self, value: Any, annotation: Any, keys: tuple[str, ...], rule: dict) -> Any:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise self.mismatch(keys, "a list", value)
        if args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise self.mismatch(keys, _type_name(annotation), value)
            items = zip(value, args, strict=True)
        else:
            items = zip(value, [args[0]] * len(value), strict=True)
        if (rule["non_empty"] and not value) or (rule["distinct"] and len(set(value)) < len(value)):
            what = " ".join(
                ["a non-empty" if rule["non_empty"] else "a", "list of"]
                + (["distinct"] if rule["distinct"] else [])
                + [{int: "integers", float: "numbers"}.get(args[0], _type_name(args[0]))]
            )
            raise SchemaError(
                f"{self.name(keys)} must be {what}{_bound_text(rule)}, got {value!r}", keys
            )
        return tuple(
            self.inner(item, item_type, (*keys, f"[{index}]"), rule)
            for index, (item, item_type) in enumerate(items)
        )

    def _bounded(self, number: Any, what: str, keys: tuple[str, ...], rule: dict) -> Any:
        low, above = rule["minimum"], rule["above"]
        if (low is not None and number < low) or (above is not None and number <= above):
            raise SchemaError(
                f"{self.name(keys)} must be {what}{_bound_text(rule)}, got {number!r}", keys
            )
        return number


def _bound_text(rule: dict[str, Any]) -> str:
    bound = ""
    if rule["minimum"] is not None:
        bound = f" >= {rule['minimum']}"
    elif rule["above"] is not None:
        bound = f" > {rule['above']}"
    return bound + (f" {rule['note']}" if rule["note"] else "")


def parse_typed(cls: Any, values: Any, *, noun: str = "", keys: tuple[str, ...] = ()) -> Any:
    """Builds the frozen dataclass `cls` from nested mappings (missing keys take defaults),
    checking every field's type and `field_rule`, unknown keys ("did you mean") and NaN/inf.

    Raises:
        SchemaError: one line naming the key (`noun` prefixes it, e.g. "config key"); its
            `keys` attribute is the path to the value.
    """
    return _Reader(noun).convert(values, cls, keys, _NO_RULE)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(value) for value in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is tuple:
        args = typing.get_args(annotation)
        if args[-1] is not Ellipsis and len(set(args)) == 1:
            plural = {int: "integers", float: "numbers"}.get(args[0], _type_name(args[0]))
            return f"a list of {len(args)} {plural}"
        if args[-1] is not Ellipsis:
            return f"[{', '.join(_type_name(arg) for arg in args)}]"
        return "list" if args[0] is Any else f"list of {_type_name(args[0])}"
    if annotation is type(None):
        return "null"
    if dataclasses.is_dataclass(annotation) or origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        # YAML 1.1 reads "1e-5" (no dot) as a string; accept numeric strings explicitly.
        try:
            return float(value)
        except ValueError:
            return None
    return None


def config_from_dict(values: Mapping[str, Any]) -> ExperimentConfig:
    """Builds and validates a config from nested mappings (missing keys take defaults)."""
    if not isinstance(values, Mapping):
        raise UserError(f"a config must be a mapping at the top level, got {type(values).__name__}")
    version = values.get("config_version", CONFIG_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version:
        raise UserError(f"config_version must be an integer >= 1, got {version!r}")
    if version > CONFIG_VERSION:
        raise UserError(
            f"config_version is {version} but this lungsrad reads versions 1..{CONFIG_VERSION}; "
            "update lungsrad, or regenerate the config with this version of the code"
        )
    if version < CONFIG_VERSION:
        values = _upgraded(values, version)
        warnings.warn(
            f"config_version {version}: read with its own meaning ("
            + ", ".join(f"{path} {value}" for path, value in LEGACY_DEFAULTS[version].items())
            + f"); set config_version: {CONFIG_VERSION} for the current defaults",
            stacklevel=2,
        )
    config = parse_typed(ExperimentConfig, values, noun="config key")
    validate_config(config)
    return config


def _upgraded(values: Mapping[str, Any], version: int) -> dict[str, Any]:
    """A version-`version` config as the current version, meaning what it meant when it ran."""
    legacy: dict[str, Any] = {}
    for old in range(version, CONFIG_VERSION):
        for path, value in LEGACY_DEFAULTS.get(old, {}).items():
            legacy.setdefault(path, value)
    upgraded = copy.deepcopy(dict(values))
    for path, value in legacy.items():
        *parents, leaf = path.split(".")
        node = upgraded
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                break  # not a mapping: parse_typed names the key and its type
            node = child
        else:
            node.setdefault(leaf, value)  # a key the file sets keeps its value
    upgraded["config_version"] = CONFIG_VERSION
    return upgraded


def config_to_dict(config: Any) -> dict[str, Any]:
    """Nested plain-Python dict (tuples become lists) suitable for YAML or JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [plain(item) for item in value]
        return value

    return plain(config)


def flatten_config(config: ExperimentConfig) -> dict[str, Any]:
    """Dotted-path -> scalar view (lists rendered as strings), e.g. for tracking params."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}{key}.")
            return
        flat[prefix[:-1]] = str(value) if isinstance(value, list) else value

    walk(config_to_dict(config), "")
    return flat


def config_paths() -> dict[str, Any]:
    """Every settable dotted path with its type annotation."""
    paths: dict[str, Any] = {}

    def walk(cls: Any, prefix: str) -> None:
        for name, annotation in typing.get_type_hints(cls).items():
            if dataclasses.is_dataclass(annotation):
                walk(annotation, f"{prefix}{name}.")
            else:
                paths[f"{prefix}{name}"] = annotation

    walk(ExperimentConfig, "")
    return paths


def check_config_path(path: str) -> Any:
    """Returns the annotation of a dotted path; ValueError naming the path when unknown."""
    paths = config_paths()
    if path not in paths:
        close = difflib.get_close_matches(path, list(paths), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"unknown config path '{path}'{hint}")
    return paths[path]


def apply_overrides(config: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """Returns a new validated config with dotted-path overrides applied."""
    values = config_to_dict(config)
    for path, value in overrides.items():
        check_config_path(path)
        node = values
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return config_from_dict(values)


def _validate_ast(config: ExperimentConfig) -> None:
    """The AST keys; DASS-only keys set on an AST are warned about (they are ignored)."""
    model = config.model
    if model.ast_size == "custom":
        unset = [
            f"model.ast_{k}"
            for k in ("embed_dim", "depth", "num_heads")
            if getattr(model, f"ast_{k}") is None
        ]
        if unset:
            raise UserError(f"model.ast_size is 'custom': set {', '.join(unset)}")
    for key in ("embed_dim", "depth", "num_heads"):
        value = getattr(model, f"ast_{key}")
        if value is not None and value < 1:
            raise UserError(f"model.ast_{key} must be >= 1, got {value}")
    embed_dim, _, num_heads = resolved_ast_size(model)
    if embed_dim % num_heads:
        raise UserError(
            f"model.ast_num_heads ({num_heads}) must divide model.ast_embed_dim ({embed_dim}); "
            "choose a head count that divides the width (base: 768 wide, 12 heads)"
        )
    if model.backbone != "ast":
        return
    frames = model_input_frames(config.data)
    if min(frames, config.data.num_mel_bins) < AST_PATCH_SIZE:
        source = (
            f"data.segment_seconds ({config.data.segment_seconds}) gives"
            if config.data.model_frames is None
            else "data.model_frames is"
        )
        raise UserError(
            f"{source} {frames} frames and "
            f"data.num_mel_bins is {config.data.num_mel_bins}: AST needs at least "
            f"{AST_PATCH_SIZE} of each for one {AST_PATCH_SIZE} x {AST_PATCH_SIZE} patch"
        )
    ignored = [
        f"model.{key}" for key in ("dims", "depths", "drop_path_rate") if getattr(model, key)
    ]
    if ignored:
        warnings.warn(
            f"{', '.join(ignored)}: DASS settings, ignored with model.backbone 'ast'",
            stacklevel=3,
        )


def validate_config(config: ExperimentConfig) -> None:
    """Semantic checks across keys; raises ValueError naming the offending key."""
    model = config.model
    _validate_ast(config)
    if model.preset == "custom" and (model.dims is None or model.depths is None):
        raise UserError("model.preset is 'custom': set both model.dims and model.depths")
    dims, depths, drop_path_rate = resolved_architecture(model)
    if len(dims) != len(depths) or not dims:
        raise UserError(
            f"model.dims ({list(dims)}) and model.depths ({list(depths)}) must have the same length"
        )
    if any(d <= 0 for d in dims) or any(d % 2 for d in dims):
        raise UserError(f"model.dims must be positive even widths, got {list(dims)}")
    if any(d <= 0 for d in depths):
        raise UserError(f"model.depths must be positive, got {list(depths)}")
    if model.num_classes < MIN_NUM_CLASSES:
        raise UserError(
            f"model.num_classes must be at least {MIN_NUM_CLASSES}, got {model.num_classes}"
        )
    if not 0.0 <= drop_path_rate < 1.0:
        raise UserError(f"model.drop_path_rate must be in [0, 1), got {drop_path_rate}")

    regularization = config.method.regularization
    _validate_regularization(regularization, backbone_depths(model))

    patch_mix = config.method.patch_mix
    if patch_mix.alpha <= 0:
        raise UserError(f"method.patch_mix.alpha must be > 0, got {patch_mix.alpha}")
    if patch_mix.temperature <= 0:
        raise UserError(f"method.patch_mix.temperature must be > 0, got {patch_mix.temperature}")
    if patch_mix.projection_dim < 1:
        raise UserError(
            f"method.patch_mix.projection_dim must be >= 1, got {patch_mix.projection_dim}"
        )
    if patch_mix.time_loss_weight < 0 or patch_mix.freq_loss_weight < 0:
        raise UserError("method.patch_mix loss weights must be >= 0")
    width = backbone_feature_width(model)
    if patch_mix.mode != "none" and not patch_mix.project_target:
        if patch_mix.projection_dim != width:
            raise UserError(
                "method.patch_mix.project_target is false, so unprojected features "
                f"({width} wide) are compared with projections: set "
                f"method.patch_mix.projection_dim to {width}"
            )

    data = config.data
    if data.sample_rate_hz <= 0:
        raise UserError(f"data.sample_rate_hz must be > 0, got {data.sample_rate_hz}")
    if data.segment_seconds <= 0:
        raise UserError(f"data.segment_seconds must be > 0, got {data.segment_seconds}")
    if data.num_mel_bins < 8:
        raise UserError(f"data.num_mel_bins must be >= 8, got {data.num_mel_bins}")
    if data.feature_std <= 0:
        raise UserError(f"data.feature_std must be > 0, got {data.feature_std}")
    if data.model_frames is not None and data.model_frames < 1:
        raise UserError(f"data.model_frames must be >= 1 or null, got {data.model_frames}")
    if not 0.0 < data.validation_fraction < 1.0:
        raise UserError(
            f"data.validation_fraction must be in (0, 1), got {data.validation_fraction}"
        )

    _validate_protocol(config)

    train = config.train
    for key in ("num_epochs", "batch_size", "eval_batch_size", "step_size_epochs"):
        if getattr(train, key) < 1:
            raise UserError(f"train.{key} must be >= 1, got {getattr(train, key)}")
    if train.learning_rate <= 0:
        raise UserError(f"train.learning_rate must be > 0, got {train.learning_rate}")
    if train.weight_decay < 0:
        raise UserError(f"train.weight_decay must be >= 0, got {train.weight_decay}")
    if train.warmup_epochs < 0 or train.warmup_epochs >= train.num_epochs + 1:
        raise UserError(f"train.warmup_epochs must be in 0..num_epochs, got {train.warmup_epochs}")
    if train.time_mask < 0 or train.freq_mask < 0:
        raise UserError("train.time_mask and train.freq_mask must be >= 0")
    for key in ("num_time_masks", "num_freq_masks"):
        if getattr(train, key) < 0:
            raise UserError(f"train.{key} must be >= 0, got {getattr(train, key)}")
    if not 0.0 <= train.specaugment_probability <= 1.0:
        raise UserError(
            f"train.specaugment_probability must be in [0, 1], got {train.specaugment_probability}"
        )
    if not 0.0 <= train.min_learning_rate_factor <= 1.0:
        raise UserError(
            "train.min_learning_rate_factor must be in [0, 1] (a share of train.learning_rate), "
            f"got {train.min_learning_rate_factor}"
        )
    if train.min_learning_rate_factor > 0 and not train.schedule.startswith("cosine"):
        warnings.warn(
            "train.min_learning_rate_factor is the floor of the cosine schedules; ignored with "
            f"train.schedule '{train.schedule}'",
            stacklevel=3,
        )
    if train.weight_averaging is not None and not 0.0 < train.weight_averaging < 1.0:
        raise UserError(
            "train.weight_averaging must be null or a beta in (0, 1) (the reference: 0.5), "
            f"got {train.weight_averaging}"
        )
    if train.min_sensitivity is not None and not 0.0 <= train.min_sensitivity < 100.0:
        raise UserError(
            "train.min_sensitivity must be null or a percentage in [0, 100) (the reference: 5), "
            f"got {train.min_sensitivity}"
        )
    if train.max_steps_per_epoch is not None and train.max_steps_per_epoch < 1:
        raise UserError(
            f"train.max_steps_per_epoch must be >= 1 or null, got {train.max_steps_per_epoch}"
        )
    if train.grad_clip_norm is not None and train.grad_clip_norm <= 0:
        raise UserError(f"train.grad_clip_norm must be > 0 or null, got {train.grad_clip_norm}")
    if train.num_threads is not None and train.num_threads < 1:
        raise UserError(f"train.num_threads must be >= 1 or null, got {train.num_threads}")
    if train.finite_check_steps < 0:
        raise UserError(f"train.finite_check_steps must be >= 0, got {train.finite_check_steps}")


def _validate_protocol(config: ExperimentConfig) -> None:
    """data.fold in 0..NUM_FOLDS-1, set exactly when train.protocol is 'foldwise'."""
    fold, protocol = config.data.fold, config.train.protocol
    if fold is not None and not 0 <= fold < NUM_FOLDS:
        raise UserError(
            f"data.fold must be in 0..{NUM_FOLDS - 1} (RespireNet's {NUM_FOLDS} folds), got {fold}"
        )
    if protocol == "foldwise" and fold is None:
        raise UserError(
            f"train.protocol 'foldwise' needs data.fold: the test fold, 0..{NUM_FOLDS - 1}"
        )
    if protocol != "foldwise" and fold is not None:
        raise UserError(
            f"data.fold is {fold} but train.protocol is '{protocol}'; data.fold only applies to "
            "train.protocol 'foldwise' (set it, or remove data.fold)"
        )


def _validate_regularization(regularization: RegularizationConfig, depths: tuple[int, ...]) -> None:
    """Kernel checks always; the placement only when the regularization is enabled, so a
    disabled default (stage 2, blocks [2, 3]) does not reject models with fewer blocks."""
    if regularization.kernel_size < 1 or regularization.kernel_size % 2 == 0:
        raise UserError(
            "method.regularization.kernel_size must be a positive odd integer, "
            f"got {regularization.kernel_size}"
        )
    if regularization.sigma <= 0:
        raise UserError(f"method.regularization.sigma must be > 0, got {regularization.sigma}")
    if not regularization.enabled:
        return
    if not 0 <= regularization.stage < len(depths):
        raise UserError(
            f"method.regularization.stage must be in 0..{len(depths) - 1} "
            f"(the model has {len(depths)} stage{'s' if len(depths) > 1 else ''}), "
            f"got {regularization.stage}"
        )
    if regularization.blocks != "all":
        depth = depths[regularization.stage]
        bad = [b for b in regularization.blocks if not 0 <= b < depth]
        if bad or not regularization.blocks:
            raise UserError(
                f"method.regularization.blocks {list(regularization.blocks)} not valid: stage "
                f"{regularization.stage} has blocks 0..{depth - 1}"
            )


# ---------------------------------------------------------------------------------------------
# Files


def read_yaml_file(path: str | os.PathLike[str], *, what: str) -> tuple[str, Any]:
    """(text, parsed YAML) of a file the user gave (run config, search space).

    Raises:
        FileNotFoundError: "<what> not found: PATH".
        UserError: "PATH: line N is not valid YAML (problem)".
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(
            f"{path}:{where} is not valid YAML ({getattr(error, 'problem', error)})"
        ) from None


def load_config(path: str | os.PathLike[str]) -> ExperimentConfig:
    """Reads a YAML run config; errors name the file and the key."""
    _, values = read_yaml_file(path, what="config file")
    if values is None:
        values = {}
    try:
        return config_from_dict(values)
    except ValueError as error:
        raise UserError(f"{path}: {error}") from None


def dump_config(config: ExperimentConfig) -> str:
    """The config as YAML text (every key, in declaration order)."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def save_config(config: ExperimentConfig, path: str | os.PathLike[str]) -> None:
    """Writes the resolved config as YAML, atomically."""
    write_text_atomic(path, dump_config(config))
