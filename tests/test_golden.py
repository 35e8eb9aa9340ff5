"""tests/golden.py: shared/<name> is found inside or beside the checkout, and its absence is
said loudly (a skip naming the paths, a failure under CI)."""

from __future__ import annotations

import pytest

from tests import golden


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A checkout at tmp_path/repo whose candidates are ./shared and ../shared."""
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.setattr(golden, "SHARED_CANDIDATES", (repo / "shared", tmp_path / "shared"))
    monkeypatch.delenv("CI", raising=False)
    return repo


def put(root, name, *files):
    folder = root / "shared" / name
    folder.mkdir(parents=True)
    for file in files:
        (folder / file).write_bytes(b"x")
    return folder


def test_beside_the_checkout_is_found(checkout):
    beside = put(checkout.parent, "dass_reference", "dass_tiny.pt")
    assert golden.shared_folder("dass_reference", "dass_tiny.pt") == beside


def test_inside_the_checkout_is_found_first(checkout):
    put(checkout.parent, "ast_reference", "ast_tiny.pt")
    inside = put(checkout, "ast_reference", "ast_tiny.pt")
    assert golden.shared_folder("ast_reference", "ast_tiny.pt") == inside


def test_a_folder_without_the_file_is_passed_over(checkout):
    put(checkout, "dass_reference")  # incomplete copy inside
    beside = put(checkout.parent, "dass_reference", "dass_tiny.pt")
    assert golden.shared_folder("dass_reference", "dass_tiny.pt") == beside


def test_missing_data_skips_naming_every_path_looked_at(checkout):
    with pytest.raises(pytest.skip.Exception) as skipped:
        golden.shared_folder("dass_reference", "dass_tiny.pt")
    reason = str(skipped.value)
    assert "\n" not in reason and "dass_tiny.pt" in reason
    assert str(checkout / "shared" / "dass_reference") in reason
    assert str(checkout.parent / "shared" / "dass_reference") in reason


@pytest.mark.parametrize(("value", "fails"), [("true", True), ("1", True), ("false", False)])
def test_missing_data_fails_under_ci(checkout, monkeypatch, value, fails):
    monkeypatch.setenv("CI", value)
    expected = pytest.fail.Exception if fails else pytest.skip.Exception
    with pytest.raises(expected, match="golden data shared/dass_reference with dass_tiny.pt"):
        golden.shared_folder("dass_reference", "dass_tiny.pt")
