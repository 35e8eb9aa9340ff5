"""Checks a downloaded (or hand-downloaded) file before it counts as fetched: size, SHA-256
against the pin or the lock file, a third party's MD5, the payload's kind (not an HTML page,
a zip that tests clean, JSON), and weights loaded into their backbone by the models' own
loaders (which compare every key and shape with the backbone's)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lungsrad.assets.download import looks_like_html
from lungsrad.assets.lock import LockedFile, lock_path
from lungsrad.assets.registry import Asset, AssetFile
from lungsrad.errors import UserError

# A weights file smaller than this is an error body, whatever its name.
MIN_BINARY_BYTES = 1024


@dataclass(frozen=True)
class Digests:
    sha256: str
    md5: str
    size: int


def file_digests(path: Path) -> Digests:
    """SHA-256 and MD5 of a file, in one read."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            sha256.update(block)
            md5.update(block)
            size += len(block)
    return Digests(sha256.hexdigest(), md5.hexdigest(), size)


def check_file(
    spec: AssetFile, path: Path, *, label: str, locked: LockedFile | None, directory: Path
) -> Digests:
    """Size, digests and payload kind of `path` (one file of an asset).

    Args:
        spec: the file's registry entry (pins, content kind).
        path: the bytes to check (a `.part` or a file given with --from).
        label: how messages name the file (e.g. `dass-medium-v2 weights`).
        locked: the lock file's record of its first download, if any.
        directory: the assets folder (named in the lock-mismatch message).
    """
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        raise UserError(f"{label}: wrong size: {path} has {size} bytes, expected {spec.size}")
    with open(path, "rb") as stream:
        head = stream.read(64)
    if looks_like_html(head):
        raise UserError(f"{label}: {path} is an HTML page, not the file")
    if spec.content in ("binary", "zip") and size < MIN_BINARY_BYTES:
        raise UserError(f"{label}: {path} has only {size} bytes: an error body, not the file")
    digests = file_digests(path)
    if spec.sha256 is not None and digests.sha256 != spec.sha256:
        raise UserError(
            f"{label}: digest mismatch: {path} has sha256 {digests.sha256}, expected (pinned) "
            f"{spec.sha256}"
        )
    if spec.md5 is not None and digests.md5 != spec.md5:
        raise UserError(
            f"{label}: digest mismatch: {path} has md5 {digests.md5}, expected {spec.md5} "
            "(a third party's MD5 of the published file)"
        )
    if locked is not None and (digests.sha256, size) != (locked.sha256, locked.size):
        raise UserError(
            f"{label}: digest mismatch: this download has sha256 {digests.sha256} ({size} "
            f"bytes), the first download had sha256 {locked.sha256} ({locked.size} bytes, "
            f"recorded in {lock_path(directory)}); if the publisher changed the file, delete "
            "that entry and fetch again"
        )
    _check_payload(spec, path, label)
    return digests


def _check_payload(spec: AssetFile, path: Path, label: str) -> None:
    if spec.content == "json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(f"{label}: {path} is not JSON ({error})") from None
    elif spec.content == "text":
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{label}: {path} is not a text file") from None
    elif spec.content == "zip" and not zipfile.is_zipfile(path):
        raise UserError(f"{label}: {path} is not a zip archive")


def check_weights(asset: Asset, path: Path, *, file_name: str) -> None:
    """Loads `path` into the backbone the asset names, through the backbone's own loader, which
    refuses another backbone's file, a file that is no checkpoint, and missing, unexpected or
    mis-shaped keys (one line naming the file). The loader sees the bytes under `file_name`
    (a `.part` is linked there), since it tells formats apart by name (`.safetensors`)."""
    if asset.model is None:
        return
    with _named(path, file_name) as named:
        if asset.weights_format == "hf":
            check_hub_weights(asset, named)
        else:
            _load_into_backbone(asset, named)


@contextlib.contextmanager
def _named(path: Path, file_name: str) -> Iterator[Path]:
    """`path`, or a hard link to it named `file_name` in a temporary folder beside it."""
    if path.name == file_name:
        yield path
        return
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".check.") as folder:
        named = Path(folder) / file_name
        try:
            os.link(path, named)
        except OSError:
            shutil.copyfile(path, named)  # a file system without hard links
        yield named


def check_hub_weights(asset: Asset, path: Path) -> None:
    """The check of Hugging Face hub weights (transformers names): `load_dass_checkpoint` reads
    that format too, converting the names on load."""
    _load_into_backbone(asset, path, read_first=False)


def _load_into_backbone(asset: Asset, path: Path, *, read_first: bool = True) -> None:
    """Builds the asset's backbone (random init) and loads `path` into it strictly; with
    `read_first`, the file is first read as that backbone's state dict, so a foreign file or the
    other backbone's weights are refused before the (seconds-long) build of a large model."""
    from lungsrad.config import ModelConfig
    from lungsrad.models.ast import AST, load_ast_checkpoint
    from lungsrad.models.backbone_state import read_backbone_state
    from lungsrad.models.build import build_model
    from lungsrad.models.dass import load_dass_checkpoint

    assert asset.model is not None
    try:
        if read_first:
            read_backbone_state(path, backbone=str(asset.model["backbone"]))
        model = build_model(ModelConfig(**asset.model))  # type: ignore[arg-type]
        if isinstance(model, AST):
            load_ast_checkpoint(model, path)
        else:
            load_dass_checkpoint(model, path)
    except UserError as error:
        raise UserError(f"{asset.name}: {error}") from None
