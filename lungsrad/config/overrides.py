"""Dotted config paths (`method.patch_mix.alpha`): the settable ones, checking one, and
applying overrides to a config."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from typing import Any

from lungsrad.config.io import config_from_dict, config_to_dict
from lungsrad.config.sections import ExperimentConfig
from lungsrad.errors import UserError


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
    """Returns the annotation of a dotted path; UserError naming the path when unknown."""
    paths = config_paths()
    if path not in paths:
        close = difflib.get_close_matches(path, list(paths), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"unknown config path '{path}'{hint}")
    return paths[path]


def parse_override(item: str) -> tuple[str, Any]:
    """One `--set KEY=VALUE` of a command line: the dotted path and the value read as YAML
    (`3` an int, `[1, 2]` a list, `null` None)."""
    import yaml

    if "=" not in item:
        raise UserError(f"--set expects KEY=VALUE (a dotted config path), got {item!r}")
    key, text = item.split("=", 1)
    return key.strip(), yaml.safe_load(text)


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
