"""Where fetched assets live, and `fetch:NAME` references in configs resolved to their files
(model.checkpoint, data.root, data.split_file), with the `lungsrad fetch` command to run when an
asset is missing."""

from __future__ import annotations

import os
from pathlib import Path

from lungsrad.assets.registry import (
    ASSETS_DIR_VARIABLE,
    DEFAULT_ASSETS_DIR,
    ICBHI_SPLIT_FILE,
    Asset,
    find_asset,
)
from lungsrad.errors import UserError

FETCH_PREFIX = "fetch:"
# What a reference may stand for, per config key.
CHECKPOINT = "model.checkpoint"
DATA_ROOT = "data.root"
SPLIT_FILE = "data.split_file"


def assets_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The assets folder: `directory`, else $LUNGSRAD_ASSETS, else ~/.cache/lungsrad/assets."""
    if directory is not None:
        return Path(directory).expanduser()
    return Path(os.environ.get(ASSETS_DIR_VARIABLE) or DEFAULT_ASSETS_DIR).expanduser()


def is_fetch_reference(value: object) -> bool:
    """True for a config value of the form `fetch:NAME`."""
    return isinstance(value, str) and value.strip().startswith(FETCH_PREFIX)


def asset_path(asset: Asset, directory: Path) -> Path:
    """The path an asset is used through: the database folder, or the weights file (the first
    of its candidate names that exists; else the first name)."""
    folder = directory / asset.folder
    if asset.kind == "icbhi":
        return folder
    names = asset.files[0].file_names
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return folder / names[0]


def is_fetched(asset: Asset, directory: Path) -> bool:
    """True when the asset has landed under `directory` (every file, or the database folder)."""
    folder = directory / asset.folder
    if asset.kind == "icbhi":
        return (folder / ICBHI_SPLIT_FILE).is_file()
    return all(any((folder / name).is_file() for name in f.file_names) for f in asset.files)


def fetch_command(name: str, directory: Path | None = None) -> str:
    """The command that fetches `name` (into `directory` when it is not the default)."""
    where = f" --dir {directory}" if directory is not None else ""
    return f"lungsrad fetch {name}{where}"


def resolve_reference(value: str, *, key: str, directory: Path | None = None) -> str:
    """The file or folder a `fetch:NAME` value of config `key` stands for; other values as given.

    Args:
        value: a config value (`fetch:dass-medium-v2`, `fetch:icbhi`, or a plain path).
        key: model.checkpoint, data.root or data.split_file.
        directory: the assets folder; None: `assets_dir()`.

    Raises:
        UserError: unknown name, a name of the wrong kind for `key`, or an asset not fetched
            (one line with the `lungsrad fetch` command).
    """
    if not is_fetch_reference(value):
        return value
    name = value.strip()[len(FETCH_PREFIX) :].strip()
    asset = find_asset(name)
    wanted = "weights" if key == CHECKPOINT else "icbhi"
    if asset.kind != wanted:
        raise UserError(f"{key}: {value} names {asset.kind}, not what {key} takes")
    root = assets_dir(directory)
    if not is_fetched(asset, root):
        raise UserError(
            f"{key}: {value} is not fetched into {root}; run `{fetch_command(name, directory)}` "
            f"(or set {ASSETS_DIR_VARIABLE} to the folder holding it)"
        )
    path = asset_path(asset, root)
    return str(path / ICBHI_SPLIT_FILE) if key == SPLIT_FILE else str(path)
