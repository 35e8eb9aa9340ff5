"""Where the golden reference data (`shared/<name>/`) lives for the tests: inside the checkout
(`./shared`) or beside it (`../shared`, CI's layout). One helper for every golden check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
# Inside first: a copy placed in this checkout is meant for it; beside is CI's layout.
SHARED_CANDIDATES = (CHECKOUT / "shared", CHECKOUT.parent / "shared")


def _is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_shared(name: str, *files: str) -> Path | None:
    """The first `shared/<name>` folder (inside, then beside the checkout) holding every one of
    `files`, else None."""
    for root in SHARED_CANDIDATES:
        folder = root / name
        if folder.is_dir() and all((folder / file).is_file() for file in files):
            return folder
    return None


def missing_reason(name: str, *files: str) -> str:
    """One line naming the paths looked at, for a skip or a failure."""
    wanted = " with " + ", ".join(files) if files else ""
    looked = " and ".join(str(root / name) for root in SHARED_CANDIDATES)
    return (
        f"golden data shared/{name}{wanted} not found: looked at {looked}; put the project's "
        "shared/ folder inside or beside the checkout"
    )


def shared_folder(name: str, *files: str) -> Path:
    """`shared/<name>` (holding `files`) for a golden test. When it cannot be found the test is
    skipped with the paths looked at, or fails when the environment variable CI is set (CI
    always has ../shared, so a missing folder there is a broken setup, not a reason to skip)."""
    folder = find_shared(name, *files)
    if folder is None:
        reason = missing_reason(name, *files)
        if _is_ci():
            pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
        pytest.skip(reason)
    return folder
