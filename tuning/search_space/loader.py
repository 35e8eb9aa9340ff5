"""Loading a search-space file: reading, shorthands, the search, scheduler and resources
sections, base configs and variants, then every parameter and point checked against
ExperimentConfig. Needs no Ray: a typo fails in about a second naming the file, line and key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lungsrad.assets.paths import is_fetch_reference
from lungsrad.config import (
    ExperimentConfig,
    apply_overrides,
    check_config_path,
    config_from_dict,
    load_config,
)
from lungsrad.errors import UserError
from lungsrad.schema import SchemaError, parse_typed, read_yaml_file
from tuning.search_space.checks import (
    Locator,
    check_points,
    check_values,
    checkpoint_value,
    parse_parameter,
    resolved_checkpoints,
)
from tuning.search_space.document import (
    BASE_POINT,
    NAME_PATTERN,
    ResourceSpec,
    SchedulerSpec,
    SpaceDocument,
    VariantSpec,
)
from tuning.search_space.objectives import space_objectives
from tuning.search_space.space import Parameter, SearchSpace


def load_search_space(
    path: str | Path,
    *,
    data_root: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SearchSpace:
    """Reads and validates a search-space YAML file.

    Args:
        path: the YAML file.
        data_root: dataset folder to set as data.root of every base config (the --data flag).
        overrides: config path -> value set on every base config, over the file's own (the
            --split-file and --set flags).

    Raises:
        FileNotFoundError: the file or a base config is missing.
        UserError: one line "FILE:LINE: what is wrong and what to do".
    """
    path = Path(path)
    text, raw, locate = _read_document(path)
    try:
        document: SpaceDocument = parse_typed(SpaceDocument, _expand_shorthands(raw))
    except SchemaError as error:
        raise locate.error(error.keys, str(error)) from None

    name = path.stem if document.name is None else document.name
    if not NAME_PATTERN.match(name):
        raise locate.error(["name"], f"name must be letters, digits, '_', '-' or '.', got {name!r}")
    variants = _load_variants(document, path, locate, data_root=data_root, overrides=overrides)
    protocol = _common_protocol(variants, locate)

    parameters = tuple(
        resolved_checkpoints(
            parse_parameter(str(name), domain, locate, search=document.search), locate
        )
        for name, domain in (document.parameters or {}).items()
    )
    for parameter in parameters:
        check_values(parameter, variants, locate)
    _check_search_kind(document, parameters, locate)
    _check_resources(document.resources, locate)
    if document.reseed is not None and set(document.reseed.seeds) & set(document.seeds):
        raise locate.error(
            ["reseed", "seeds"],
            f"reseed.seeds {list(document.reseed.seeds)} repeat the search's seeds "
            f"{list(document.seeds)}; list new seeds only",
        )
    objectives, constraints = space_objectives(document, protocol, locate)
    space = SearchSpace(
        name=name,
        path=path.resolve(),
        text=text,
        variants=variants,
        parameters=parameters,
        search=document.search,
        search_seed=document.search_seed,
        scheduler=_check_scheduler(document.scheduler, variants, locate),
        num_samples=document.num_samples,
        max_concurrent_trials=document.max_concurrent_trials,
        resources=document.resources,
        seeds=document.seeds,
        protocol=protocol,
        metric=objectives[0].name,
        mode=objectives[0].mode,
        max_failures=document.max_failures,
        description=document.description.strip(),
        reseed=document.reseed,
        requires_pretrained=document.requires_pretrained,
        objectives=objectives,
        constraints=constraints,
        sampler=document.sampler,
    )
    check_points(space, locate)
    return space


def _common_protocol(variants: Mapping[str, ExperimentConfig], locate: Locator) -> str:
    """The train.protocol every variant shares (several are refused)."""
    protocols = {config.train.protocol for config in variants.values()}
    if len(protocols) > 1:
        raise locate.error(
            ["variants"],
            f"the variants use different train.protocol {sorted(protocols)}; set "
            "`protocol:` in the search space",
        )
    return protocols.pop()


def _read_document(path: Path) -> tuple[str, Mapping[str, Any], Locator]:
    """The file's text, its YAML mapping and a locator of its keys' lines."""
    text, document = read_yaml_file(path, what="search space file")
    locate = Locator(path, text)
    if not isinstance(document, Mapping):
        raise locate.error(
            [], "a search space must be a YAML mapping (see search_spaces/README.md)"
        )
    return text, document, locate


def _expand_shorthands(document: Mapping[str, Any]) -> dict[str, Any]:
    """The short forms the README allows, written out: `seeds: 3` is `seeds: [3]`;
    `scheduler: asha` is `{kind: asha}`; a scheduler mapping without `kind` is ASHA."""
    expanded = dict(document)
    seeds = expanded.get("seeds")
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        expanded["seeds"] = [seeds]
    scheduler = expanded.get("scheduler")
    if scheduler is None or isinstance(scheduler, str):
        expanded["scheduler"] = {"kind": "none" if scheduler is None else scheduler}
    elif isinstance(scheduler, Mapping) and "kind" not in scheduler:
        expanded["scheduler"] = {"kind": "asha", **scheduler}
    return expanded


def _check_search_kind(
    document: SpaceDocument, parameters: tuple[Parameter, ...], locate: Locator
) -> None:
    """What each search kind needs of seeds, parameters and num_samples."""
    if document.search == "tpe":
        if len(document.seeds) > 1:
            raise locate.error(
                ["seeds"],
                "search 'tpe' samples one seed per configuration: give one seed and "
                "train the best config on more seeds with tuning/final.py --seeds ...",
            )
        if not parameters:
            raise locate.error(["parameters"], "search 'tpe' needs at least one parameter")
    if document.search == "one_at_a_time" and document.num_samples != 1:
        raise locate.error(
            ["num_samples"],
            "search 'one_at_a_time' visits each listed value once: set "
            "num_samples to 1 and use `seeds` for repeats",
        )


def _check_scheduler(
    scheduler: SchedulerSpec, variants: Mapping[str, ExperimentConfig], locate: Locator
) -> SchedulerSpec:
    """ASHA's bounds against the epochs (max_t defaults to the longest base config's)."""
    if scheduler.kind == "none":
        if scheduler != SchedulerSpec():
            raise locate.error(["scheduler"], "scheduler 'none' takes no settings")
        return scheduler
    max_epochs = max(config.train.num_epochs for config in variants.values())
    max_t = max_epochs if scheduler.max_t is None else scheduler.max_t
    if max_t < scheduler.grace_period:
        raise locate.error(
            ["scheduler", "max_t"],
            f"scheduler.max_t must be >= grace_period ({scheduler.grace_period}), got {max_t}",
        )
    if max_t > max_epochs:
        raise locate.error(
            ["scheduler", "max_t"],
            f"scheduler.max_t ({max_t}) exceeds train.num_epochs "
            f"({max_epochs}); trials never get that far",
        )
    return dataclasses.replace(scheduler, max_t=max_t)


def _check_resources(resources: ResourceSpec, locate: Locator) -> None:
    if resources.cpu == 0 and resources.gpu == 0:
        raise locate.error(["resources"], "resources: a trial needs some cpu or gpu")
    if resources.gpu > 1 and resources.gpu != int(resources.gpu):
        raise locate.error(
            ["resources", "gpu"],
            f"resources.gpu above 1 must be a whole number of GPUs, got {resources.gpu}",
        )
    for key in resources.custom:
        if key.lower() in ("cpu", "gpu", "memory"):
            raise locate.error(["resources", "custom"], f"'{key}' is not a custom resource")


def _flatten_overrides(
    values: Mapping[str, Any] | None, locate: Locator, where: list[str]
) -> dict[str, Any]:
    """Dotted-path overrides from a mapping that may nest ({train: {seed: 1}} == train.seed)."""
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(value, f"{path}.")
            else:
                flat[path] = value

    walk(values or {}, "")
    for path in flat:
        try:
            check_config_path(path)
        except ValueError as error:
            raise locate.error(
                [*where, path.split(".")[0]], f"{'.'.join(where)}: {error}"
            ) from None
    return flat


def _base_config(
    base: str | None,
    overrides: dict[str, Any],
    *,
    space_dir: Path,
    locate: Locator,
    where: list[str],
) -> ExperimentConfig:
    if base is None:
        config = config_from_dict({})
    else:
        base_path = (space_dir / base).resolve() if not Path(base).is_absolute() else Path(base)
        if not base_path.is_file():
            raise FileNotFoundError(f"{locate.where(where)}: base config not found: {base_path}")
        config = load_config(base_path)
    try:
        config = apply_overrides(config, overrides)
    except ValueError as error:
        raise locate.error(where, f"base overrides: {error}") from None
    return _absolute_paths(config, locate=locate, where=where)


def _absolute_paths(
    config: ExperimentConfig, *, locate: Locator, where: list[str]
) -> ExperimentConfig:
    """The config with a relative `data.root`, `data.split_file` and `model.checkpoint` resolved
    against the
    directory the sweep runs from (a trial runs in its own working directory), the checkpoint
    checked before any trial starts."""
    resolved: dict[str, Any] = {}
    for key in ("root", "split_file"):
        value = getattr(config.data, key)
        if (
            value is not None
            and not is_fetch_reference(value)
            and not Path(value).expanduser().is_absolute()
        ):
            resolved[f"data.{key}"] = str(Path(value).expanduser().resolve())
    if config.model.checkpoint is not None:  # "none" stays (checkpoint_value)
        resolved["model.checkpoint"] = checkpoint_value(
            config.model.checkpoint, where=f"{locate.where(where)}: {'.'.join(where)}"
        )
    return apply_overrides(config, resolved) if resolved else config


def _load_variants(
    document: SpaceDocument,
    path: Path,
    locate: Locator,
    *,
    data_root: str | Path | None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, ExperimentConfig]:
    top_overrides = _flatten_overrides(document.base_overrides, locate, ["base_overrides"])
    if "train.seed" in top_overrides:
        raise locate.error(
            ["base_overrides"], "set train.seed through `seeds:`, not base_overrides"
        )
    extra: dict[str, Any] = {}
    if document.protocol is not None:
        extra["train.protocol"] = document.protocol
    if data_root is not None:
        extra["data.root"] = str(Path(data_root).expanduser().resolve())
    for key, value in (overrides or {}).items():
        try:
            check_config_path(key)
        except ValueError as error:
            raise UserError(f"--set {key}: {error}") from None
        extra[key] = value

    if document.variants is None:
        where = ["base" if document.base is not None else "base_overrides"]
        config = _base_config(
            document.base,
            {**top_overrides, **extra},
            space_dir=path.parent,
            locate=locate,
            where=where,
        )
        return {BASE_POINT: config}
    if not document.variants:
        raise locate.error(["variants"], "variants must name at least one base config")
    variants: dict[str, ExperimentConfig] = {}
    for name, listed in document.variants.items():
        where = ["variants", name]
        if not NAME_PATTERN.match(name) or name == BASE_POINT:
            raise locate.error(where, f"variant name {name!r} must be a word other than 'base'")
        spec = listed if isinstance(listed, VariantSpec) else VariantSpec(base=listed)
        own = _flatten_overrides(spec.base_overrides, locate, [*where, "base_overrides"])
        if "train.seed" in own:
            raise locate.error(where, "set train.seed through `seeds:`, not base_overrides")
        variants[name] = _base_config(
            spec.base if spec.base is not None else document.base,
            {**top_overrides, **own, **extra},
            space_dir=path.parent,
            locate=locate,
            where=where,
        )
    return variants
