"""`fetch_asset` on weights served by a real local HTTP server: landing, the lock file, resume
after a dropped connection and after a timeout, redirects, and every refusal (404, HTML, error
body, digest mismatch, not a checkpoint, wrong backbone, no space), none leaving a final file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lungsrad.assets.fetch import FetchOptions, fetch_asset
from lungsrad.assets.lock import read_lock
from lungsrad.errors import UserError
from tests.http_files import Route
from tests.lungsrad.assets.conftest import files_under, weights_asset


def _fetch(asset, directory: Path, **options):
    said: list[str] = []
    path = fetch_asset(
        asset, FetchOptions(directory=directory, show_progress=False, **options), say=said.append
    )
    return path, said


def test_weights_land_checked_and_their_digest_is_locked(server, tmp_path, release_bytes):
    server.routes["/DASS_tiny.pth"] = Route(body=release_bytes)
    path, said = _fetch(weights_asset(server.url("/DASS_tiny.pth")), tmp_path)
    assert path == tmp_path / "dass-tiny" / "DASS_tiny.pth"
    assert path.read_bytes() == release_bytes
    digest = hashlib.sha256(release_bytes).hexdigest()
    locked = read_lock(tmp_path)["dass-tiny/DASS_tiny.pth"]
    assert (locked.sha256, locked.size) == (digest, len(release_bytes))
    assert any(digest in line for line in said)
    assert files_under(tmp_path) == ["assets.lock.json", "dass-tiny/DASS_tiny.pth"]
    # Fetched: a second fetch asks nothing; --force fetches again.
    asked = len(server.requests)
    _, said = _fetch(weights_asset(server.url("/DASS_tiny.pth")), tmp_path)
    assert len(server.requests) == asked and "already fetched" in said[0]
    _fetch(weights_asset(server.url("/DASS_tiny.pth")), tmp_path, force=True)
    assert len(server.requests) == asked + 1


def test_a_dropped_connection_resumes_with_a_range_request(server, tmp_path, release_bytes):
    server.routes["/w.pth"] = Route(body=release_bytes, drop_after=100_000, drops=1)
    path, said = _fetch(weights_asset(server.url("/w.pth")), tmp_path)
    assert path.read_bytes() == release_bytes
    assert [r.range for r in server.requests] == [None, "bytes=100000-"]


def test_a_silent_server_times_out_and_the_next_run_resumes(server, tmp_path, release_bytes):
    server.routes["/w.pth"] = Route(body=release_bytes, stall_after=200_000)
    asset = weights_asset(server.url("/w.pth"))
    with pytest.raises(UserError, match=r"no data for 1 s \(timed out\).*resume"):
        _fetch(asset, tmp_path, timeout_s=1.0)
    assert not (tmp_path / "dass-tiny" / "w.pth").exists()
    # What arrived before the server went silent is kept (all of it, unless the machine is so
    # loaded that a gap inside those bytes already outlasted the timeout).
    kept = (tmp_path / ".downloads" / "dass-tiny" / "w.pth.part").stat().st_size
    assert 0 < kept <= 200_000
    server.routes["/w.pth"] = Route(body=release_bytes)
    path, said = _fetch(asset, tmp_path)
    assert path.read_bytes() == release_bytes
    assert server.requests[-1].range == f"bytes={kept}-"
    assert any("resumed" in line and str(kept) in line for line in said)
    assert not (tmp_path / ".downloads" / "dass-tiny" / "w.pth.part").exists()


def test_a_redirect_is_followed(server, tmp_path, release_bytes):
    server.routes["/w.pth"] = Route(body=release_bytes)
    server.routes["/old/w.pth"] = Route(redirect_to="/w.pth")
    path, _ = _fetch(weights_asset(server.url("/old/w.pth")), tmp_path)
    assert path.read_bytes() == release_bytes
    assert [r.path for r in server.requests] == ["/old/w.pth", "/w.pth"]


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (None, "HTTP 404"),
        (Route(body=b"<html><body>Sign in</body></html>" * 100, content_type="text/html"), "HTML"),
        (Route(body=b"\n  <!DOCTYPE html><title>Quota</title>" + b" " * 5000), "HTML page"),
        (Route(body=b'{"error": "rate limited"}'), "error body"),
    ],
    ids=["404", "html-content-type", "html-body", "small-error-body"],
)
def test_a_bad_response_is_refused_and_leaves_no_file(server, tmp_path, route, message):
    if route is not None:
        server.routes["/w.pth"] = route
    with pytest.raises(UserError, match=message):
        _fetch(weights_asset(server.url("/w.pth")), tmp_path)
    assert files_under(tmp_path) == []


def test_a_changed_file_is_refused_naming_both_digests(server, tmp_path, release_bytes):
    server.routes["/w.pth"] = Route(body=release_bytes)
    asset = weights_asset(server.url("/w.pth"))
    first, _ = _fetch(asset, tmp_path)
    corrupted = bytearray(release_bytes)
    corrupted[len(corrupted) // 2] ^= 0xFF
    server.routes["/w.pth"] = Route(body=bytes(corrupted))
    new = hashlib.sha256(corrupted).hexdigest()
    old = hashlib.sha256(release_bytes).hexdigest()
    with pytest.raises(UserError, match=f"digest mismatch.*{new}.*{old}.*assets.lock.json"):
        _fetch(asset, tmp_path, force=True)
    assert first.read_bytes() == release_bytes  # the fetched file stays as it was
    assert not list((tmp_path / ".downloads").rglob("*.part"))


def test_a_pinned_digest_or_size_refuses_other_bytes(server, tmp_path, release_bytes):
    server.routes["/w.pth"] = Route(body=release_bytes)
    url = server.url("/w.pth")
    with pytest.raises(UserError, match="digest mismatch.*expected \\(pinned\\) 00000"):
        _fetch(weights_asset(url, sha256="0" * 64), tmp_path)
    with pytest.raises(UserError, match="wrong size"):
        _fetch(weights_asset(url, size=len(release_bytes) + 1), tmp_path)
    assert files_under(tmp_path / "dass-tiny") == [] if (tmp_path / "dass-tiny").exists() else True


@pytest.mark.parametrize("payload", ["not-a-checkpoint", "ast"])
def test_weights_must_load_into_their_backbone(server, tmp_path, ast_bytes, payload):
    body = os.urandom(4096) if payload == "not-a-checkpoint" else ast_bytes
    server.routes["/w.pth"] = Route(body=body)
    message = "not a PyTorch state dict" if payload == "not-a-checkpoint" else "AST"
    with pytest.raises(UserError, match=message) as error:
        _fetch(weights_asset(server.url("/w.pth")), tmp_path)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "dass-tiny" / "w.pth").exists()
    assert read_lock(tmp_path) == {}


def test_from_a_hand_downloaded_file(tmp_path, release_bytes, ast_bytes):
    given = tmp_path / "Downloads" / "DASS_tiny.pth"
    given.parent.mkdir()
    given.write_bytes(release_bytes)
    asset = weights_asset("http://127.0.0.1:9/DASS_tiny.pth")  # never asked
    path, _ = _fetch(asset, tmp_path / "assets", from_files=(given,))
    assert path.read_bytes() == release_bytes and given.exists()
    given.write_bytes(ast_bytes)
    with pytest.raises(UserError, match="AST"):
        _fetch(asset, tmp_path / "other", from_files=(given,))
    assert files_under(tmp_path / "other") == []


def test_no_space_is_found_before_the_download(server, tmp_path, release_bytes):
    server.routes["/w.pth"] = Route(body=release_bytes)
    with pytest.raises(UserError, match="no space for w.pth"):
        _fetch(weights_asset(server.url("/w.pth"), size=1 << 60), tmp_path)
    assert server.requests == []


def test_a_full_disk_during_the_download_is_one_line(server, tmp_path, release_bytes):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    server.routes["/w.pth"] = Route(body=release_bytes)
    url = server.url("/w.pth")
    part = tmp_path / ".downloads" / "dass-tiny" / "w.pth.part"
    part.parent.mkdir(parents=True)
    part.symlink_to("/dev/full")  # every write to the part fails with ENOSPC
    part.with_name("w.pth.part.source").write_text(url)
    with pytest.raises(UserError, match="no space left on device"):
        _fetch(weights_asset(url), tmp_path)
    assert not (tmp_path / "dass-tiny" / "w.pth").exists()
