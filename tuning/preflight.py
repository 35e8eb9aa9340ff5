"""Checks of a sweep's or final's inputs before Ray starts: a space meant to fine-tune pretrained
weights names them, every checkpoint it names loads into its model (the loaders of
lungsrad.models, through build_model), and every dataset folder reads with its split file.
Each failure is one line (UserError / FileNotFoundError), so the CLIs exit 2. Ray-free.
Each checkpoint file is read once; the weights read are returned, for the driver to ship to the
trials (tuning.sweep_assets).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lungsrad.config import (
    RANDOM_INIT_CHECKPOINT,
    ExperimentConfig,
    apply_overrides,
    checkpoint_file,
)
from lungsrad.errors import UserError
from lungsrad.models.build import InitialWeights
from tuning.search_space import Parameter, SearchSpace

CHECKPOINT_PATH = "model.checkpoint"


def check_space_inputs(
    space: SearchSpace, *, generated_data: Path | None = None
) -> dict[str, InitialWeights]:
    """All checks of this module for `space`; `generated_data` is the synthetic data folder the
    driver writes itself (not read here: it may not exist yet).

    Returns:
        The weights of each checkpoint the space names, by model.checkpoint (check_checkpoints).

    Raises:
        UserError / FileNotFoundError: one line naming the space (or config) file.
    """
    check_pretrained(space)
    weights = check_checkpoints(space)
    check_data(space, generated_data=generated_data)
    return weights


def check_pretrained(space: SearchSpace) -> None:
    """A space with `requires_pretrained: true` names a checkpoint in every base config (or
    sweeps model.checkpoint over values that are all set); "none" is an explicit random start."""
    if not space.requires_pretrained:
        return
    for name, config in space.variants.items():
        checkpoints = _swept_values(space.parameters, CHECKPOINT_PATH, config.model.checkpoint)
        if any(checkpoint is None for checkpoint in checkpoints):
            which = f"variant '{name}'" if space.has_variants else "its base config"
            raise UserError(
                f"{space.path}: requires_pretrained is true but {which} names no "
                f"model.checkpoint (it would train {config.model.backbone.upper()} from a random "
                "start); give the pretrained file with --set model.checkpoint=PATH or the "
                "space's base_overrides (model.checkpoint: PATH), or set model.checkpoint to "
                f"'{RANDOM_INIT_CHECKPOINT}' to train from a random initialisation on purpose"
            )


def check_checkpoints(space: SearchSpace) -> dict[str, InitialWeights]:
    """Reads each distinct checkpoint the space names once and builds each distinct model that
    names it from those weights (keys, shapes and backbone checked by lungsrad.models); one line
    naming the file on failure.

    Returns:
        The weights read, by model.checkpoint as the configs name it.
    """
    weights: dict[str, InitialWeights] = {}
    seen: set[Any] = set()
    for config in _model_variations(space):
        if checkpoint_file(config.model) is None:
            continue
        # AST adapts its positional embedding to the input the data section makes.
        key = (config.model, config.data if config.model.backbone == "ast" else None)
        if key in seen:
            continue
        seen.add(key)
        _load(config, space.path, weights)
    return weights


def check_data(space: SearchSpace, *, generated_data: Path | None = None) -> None:
    """Reads every dataset folder the base configs name with its split file (wav headers and
    annotations checked, samples not decoded)."""
    from lungsrad.data.icbhi import load_icbhi_index

    seen: set[tuple[str, str | None]] = set()
    for config in space.variants.values():
        data = config.data
        if data.root is None or (generated_data is not None and Path(data.root) == generated_data):
            continue
        if (data.root, data.split_file) in seen:
            continue
        seen.add((data.root, data.split_file))
        load_icbhi_index(data.root, data.split_file)


def _load(config: ExperimentConfig, source: Path, weights: dict[str, InitialWeights]) -> None:
    """Builds `config`'s model from its checkpoint, read into `weights` on first use."""
    from lungsrad.models.build import build_model, read_initial_weights

    checkpoint = config.model.checkpoint
    assert checkpoint is not None
    try:
        if checkpoint not in weights:
            read = read_initial_weights(config.model)
            assert read is not None
            weights[checkpoint] = read
        model = build_model(config, initial_weights=weights[checkpoint])
    except (UserError, FileNotFoundError) as error:
        raise type(error)(f"{source}: {error}") from None
    del model


def _model_variations(space: SearchSpace) -> Iterator[ExperimentConfig]:
    """Each base config, and each with every listed value of a parameter that sets model.*."""
    for config in space.variants.values():
        yield config
        for parameter in space.parameters:
            if not any(path.startswith("model.") for path in parameter.config_paths):
                continue
            if not (parameter.is_discrete or parameter.kind == "int"):
                continue  # a float range (drop path rate) changes no weight's shape
            for value in parameter.listed_values():
                yield apply_overrides(config, parameter.overrides(value))


def _swept_values(parameters: tuple[Parameter, ...], path: str, base: Any) -> list[Any]:
    """The values `path` takes over the parameters that set it (`base` where a value leaves it
    alone); [base] when no parameter sets it."""
    values: list[Any] = []
    for parameter in parameters:
        if path in parameter.config_paths:
            values += [parameter.overrides(v).get(path, base) for v in parameter.listed_values()]
    return values or [base]
