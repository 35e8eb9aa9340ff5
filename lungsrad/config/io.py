"""Config in and out: nested mappings (YAML) to a validated `ExperimentConfig` and back, and
the YAML files (`load_config`, `save_config`)."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from typing import Any

import yaml

from lungsrad.config.sections import ExperimentConfig
from lungsrad.config.validation import validate_config
from lungsrad.config.versions import CONFIG_VERSION, LEGACY_DEFAULTS, upgrade
from lungsrad.errors import UserError
from lungsrad.files import write_text_atomic
from lungsrad.schema import parse_typed, read_yaml_file


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
        values = upgrade(values, version)
        warnings.warn(
            f"config_version {version}: read with its own meaning ("
            + ", ".join(f"{path} {value}" for path, value in LEGACY_DEFAULTS[version].items())
            + f"); set config_version: {CONFIG_VERSION} for the current defaults",
            stacklevel=2,
        )
    config = parse_typed(ExperimentConfig, values, noun="config key")
    validate_config(config)
    return config


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
