"""`lungsrad fetch NAME`: obtain each file of an asset (download with resume, or a file given with
--from), check it (verify.py), lay it out (weights: renamed into `<assets>/<name>/`; ICBHI:
unpack.py), and record first-download digests in the lock file. `lungsrad fetch --list`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lungsrad.assets import download as downloads
from lungsrad.assets.lock import read_lock, record_files
from lungsrad.assets.paths import asset_path, assets_dir, is_fetched
from lungsrad.assets.registry import (
    ICBHI_SPLIT_FILE,
    LISTED_HF_NAMES,
    Asset,
    AssetFile,
    Source,
    find_asset,
    known_assets,
)
from lungsrad.assets.verify import Digests, check_file, check_weights
from lungsrad.errors import UserError, disk_full_is_user_error
from lungsrad.files import atomic_destination, file_lock, fsync_directory

PARTS_FOLDER = ".downloads"


@dataclass(frozen=True)
class FetchOptions:
    """How `fetch_asset` gets the files."""

    directory: Path | None = None  # assets folder; None: assets_dir()
    from_files: tuple[Path, ...] = ()  # files downloaded by hand (--from)
    urls: tuple[str, ...] = ()  # other sources (--url), tried instead of the registry's
    force: bool = False  # replace an asset already fetched
    timeout_s: float = downloads.DEFAULT_TIMEOUT_S
    show_progress: bool = True


@dataclass
class _Obtained:
    spec: AssetFile
    path: Path  # the checked bytes: a .part, or a file given with --from
    file_name: str  # the name it lands under
    source: str  # URL or "file:<path>"
    is_part: bool
    digests: Digests | None = None  # set once checked


def fetch_asset(
    name_or_asset: str | Asset, options: FetchOptions, *, say: Callable[[str], None] = print
) -> Path:
    """Fetches an asset into the assets folder and returns the path configs use through
    `fetch:NAME` (the weights file, or the database folder).

    An asset fetched before is reported and kept unless `options.force`.

    Raises:
        UserError: every bad case, in one line (unreachable source, wrong size, digest mismatch,
            HTML page, not a checkpoint, wrong backbone, zip without the ICBHI layout, no space).
            No file takes a final name unless all checks pass.
        FileNotFoundError: a --from file does not exist.
    """
    asset = find_asset(name_or_asset) if isinstance(name_or_asset, str) else name_or_asset
    root = assets_dir(options.directory)
    if is_fetched(asset, root) and not options.force:
        path = asset_path(asset, root)
        say(f"{asset.name}: already fetched at {path} (pass --force to fetch it again)")
        return path
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / PARTS_FOLDER / f".{asset.folder.replace('/', '_')}.lock"):
        locked = read_lock(root)
        obtained = [
            _obtain(asset, spec, options, root=root, locked=locked, say=say)
            for spec in _files_to_get(asset, options)
        ]
        try:
            path = _land(asset, obtained, root, force=options.force, say=say)
        except UserError as error:
            if not str(error).startswith("no space"):  # checked bytes are kept for a retry
                for item in obtained:
                    if item.is_part:
                        downloads.discard_part(item.path)
            raise
        fresh = {
            _lock_key(asset, item.file_name): item
            for item in obtained
            if item.spec.sha256 is None and _lock_key(asset, item.file_name) not in locked
        }
        record_files(root, {key: _digest_entry(item) for key, item in fresh.items()})
        for key, item in fresh.items():
            say(f"{asset.name}: recorded {key} sha256 {_digest_entry(item)[0]} in the lock file")
        for item in obtained:
            if item.is_part:
                downloads.discard_part(item.path)
    return path


def _digest_entry(item: _Obtained) -> tuple[str, int, str]:
    assert item.digests is not None  # every obtained file was checked
    return item.digests.sha256, item.digests.size, item.source


def _lock_key(asset: Asset, file_name: str) -> str:
    return f"{asset.folder}/{file_name}"


def _files_to_get(asset: Asset, options: FetchOptions) -> list[AssetFile]:
    """The asset's files, each --url replacing the sources of the file it names by its last
    path component (else of the first file)."""
    specs = list(asset.files)
    given: dict[int, list[Source]] = {}
    for url in options.urls:
        name = url.split("?", 1)[0].rsplit("/", 1)[-1]
        index = _file_index(asset, name)
        names = asset.files[index].file_names
        given.setdefault(index, []).append(Source(url, name if name in names else names[0]))
    for index, sources in given.items():
        specs[index] = replace(specs[index], sources=tuple(sources))
    return specs


def _file_index(asset: Asset, file_name: str) -> int:
    for index, spec in enumerate(asset.files):
        if file_name in spec.file_names:
            return index
    return 0


def _given_file(asset: Asset, spec: AssetFile, options: FetchOptions) -> Path | None:
    """The --from file for this file of the asset: matched by name, else the first file takes
    the first unmatched one; ICBHI's split file may also lie beside a given zip."""
    by_name = {path.name: path for path in options.from_files}
    for name in spec.file_names:
        if name in by_name:
            return by_name[name]
    matched = {n for s in asset.files for n in s.file_names if n in by_name}
    unmatched = [path for path in options.from_files if path.name not in matched]
    if spec.key == asset.files[0].key and unmatched:
        return unmatched[0]
    if spec.key == "split":
        for given in options.from_files:
            if (given.parent / ICBHI_SPLIT_FILE).is_file():
                return given.parent / ICBHI_SPLIT_FILE
    return None


def _obtain(
    asset: Asset,
    spec: AssetFile,
    options: FetchOptions,
    *,
    root: Path,
    locked: dict,
    say: Callable[[str], None],
) -> _Obtained:
    label = f"{asset.name} {spec.key}"
    given = _given_file(asset, spec, options)
    if given is not None:
        if not given.is_file():
            raise FileNotFoundError(f"--from file not found: {given}")
        name = given.name if given.name in spec.file_names else spec.file_names[0]
        item = _Obtained(spec, given, name, f"file:{given.resolve()}", is_part=False)
        _check(asset, item, label, root=root, locked=locked)
        return item
    failures = []
    for source in spec.sources:
        part = root / PARTS_FOLDER / asset.folder / f"{source.file_name}.part"
        try:
            if spec.size is not None:
                have = part.stat().st_size if part.exists() else 0
                downloads.check_free_space(part.parent, spec.size - have, source.file_name)
            resumed = downloads.download(
                source.url,
                part,
                expected_size=spec.size,
                timeout_s=options.timeout_s,
                show_progress=options.show_progress,
            )
            if resumed:
                say(f"{label}: resumed {source.url} at byte {resumed}")
            item = _Obtained(spec, part, source.file_name, source.url, is_part=True)
            _check(asset, item, label, root=root, locked=locked, discard=True)
            return item
        except UserError as error:
            if str(error).startswith("no space"):
                raise
            failures.append(str(error))
    if len(failures) == 1:
        raise UserError(f"{label}: {failures[0]}")
    raise UserError(
        f"{label}: no source worked ({'; '.join(failures)}); download it by hand and run "
        f"`lungsrad fetch {asset.name} --from FILE`"
    )


def _check(
    asset: Asset,
    item: _Obtained,
    label: str,
    *,
    root: Path,
    locked: dict,
    discard: bool = False,
) -> None:
    """Checks one obtained file; a bad download is removed (its bytes would only resume)."""
    try:
        item.digests = check_file(
            item.spec,
            item.path,
            label=label,
            locked=locked.get(_lock_key(asset, item.file_name)),
            directory=root,
        )
        if asset.kind == "weights" and item.spec.key == asset.files[0].key:
            check_weights(asset, item.path, file_name=item.file_name)
    except UserError:
        if discard:
            downloads.discard_part(item.path)
        raise


def _land(
    asset: Asset, obtained: Sequence[_Obtained], root: Path, *, force: bool, say: Callable
) -> Path:
    """Puts the checked files under their final names; returns the path configs use."""
    folder = root / asset.folder
    if asset.kind == "icbhi":
        from lungsrad.assets.unpack import unpack_database

        by_key = {item.spec.key: item.path for item in obtained}
        verdict = unpack_database(
            by_key["zip"], by_key["split"], folder, label=asset.name, replace=force
        )
        say(verdict.format_text())
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for item in reversed(obtained):  # the weights last: their presence means "fetched"
        final = folder / item.file_name
        if final.exists() and not force:
            raise FileExistsError(f"{final} exists; pass --force to replace it")
        if item.is_part:
            os.replace(item.path, final)
            fsync_directory(folder)
        else:
            _copy_given_file(item.path, final)
    path = asset_path(asset, root)
    say(f"{asset.name}: fetched {path}")
    return path


def _copy_given_file(given: Path, final: Path) -> None:
    """Copies a --from file to its final name atomically; a full disk is one line."""
    with disk_full_is_user_error(
        lambda: f"copying {given} to {final}; free some space and run the same command again"
    ), atomic_destination(final) as temporary:
        shutil.copyfile(given, temporary)


def list_assets(directory: Path | None = None) -> list[dict[str, str]]:
    """One row per name for `lungsrad fetch --list`: name, sources, size, pin status, fetched."""
    root = assets_dir(directory)
    locked = read_lock(root) if root.is_dir() else {}
    assets: list[Asset] = [*known_assets().values(), *map(find_asset, LISTED_HF_NAMES)]
    rows = []
    for asset in assets:
        main = asset.files[0]
        keys = [_lock_key(asset, name) for name in main.file_names]
        record = next((locked[key] for key in keys if key in locked), None)
        if main.sha256 is not None:
            pin = f"pinned sha256 {main.sha256[:12]}"
        elif record is not None:
            pin = f"locked from first download: sha256 {record.sha256[:12]}"
        else:
            pin = "unpinned (recorded at first download)"
        if main.md5 is not None:
            pin += "; third-party md5 checked"
        size = main.size or (record.size if record is not None else None)
        rows.append(
            {
                "name": asset.name,
                "sources": asset.describe_sources(),
                "size": downloads.format_size(size) if size else "unknown",
                "pin": pin,
                "fetched": "yes" if is_fetched(asset, root) else "no",
            }
        )
    return rows
