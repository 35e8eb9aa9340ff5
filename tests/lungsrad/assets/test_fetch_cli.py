"""`lungsrad fetch` on the command line: --list, and every bad case as one line with exit 2
(404, no server, wrong size of the pinned ICBHI zip, not a checkpoint, the other backbone)."""

from __future__ import annotations

import os

import pytest

from lungsrad.cli import main
from mlflow_tracking.server import free_port
from tests.cli_errors import assert_one_line_error
from tests.http_files import Route
from tests.lungsrad.assets.conftest import files_under


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["fetch", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_list_shows_every_name_with_source_size_and_pin(capsys, tmp_path):
    status, out, _ = _run(capsys, "--list", "--dir", str(tmp_path))
    assert status == 0
    for text in (
        "icbhi  size 1.8 GiB",
        "third-party md5",
        "dass-medium-v2  size unknown  unpinned",
        "https://github.com/Saurabhbhati/DASS/releases/download/v0.2/DASS_medium_v2.pth",
        "ast-audioset",
        "https://www.dropbox.com/s/cv4knew8mvbrnvq/audioset_0.4593.pth?dl=1",
        "hf:saurabhati/DASS_medium_AudioSet_50.2",
        "https://dataverse.harvard.edu/api/access/datafile/7127117",
    ):
        assert text in out


def test_list_shows_a_locked_digest(capsys, tmp_path, server, release_bytes):
    # The tiny DASS under the medium name fails the load check, so the lock stays empty; a
    # lock entry written as a first download would be is what --list reports.
    from lungsrad.assets.lock import record_files

    record_files(tmp_path, {"dass-medium-v2/DASS_medium_v2.pth": ("ab" * 32, 1234, "x")})
    _, out, _ = _run(capsys, "--list", "--dir", str(tmp_path))
    assert "dass-medium-v2  size 1.2 KiB  locked from first download: sha256 abababababab" in out


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("404", "HTTP 404"),
        ("no-server", "cannot reach"),
        ("not-a-checkpoint", "not a PyTorch state dict"),
        ("other-backbone", "this is an AST checkpoint"),
        ("icbhi-wrong-size", "wrong size"),
        ("no-name", "name an asset"),
        ("unknown", "unknown asset 'dass-huge'"),
        ("from-missing", "--from file not found"),
    ],
)
def test_bad_cases_exit_2_with_one_line(capsys, tmp_path, server, ast_bytes, case, fragment):
    server.routes["/junk.pth"] = Route(body=os.urandom(4096))
    server.routes["/ast.pth"] = Route(body=ast_bytes)
    server.routes["/ICBHI_final_database.zip"] = Route(body=b"PK" + b"\0" * 5000)
    argv = {
        "404": ["dass-medium-v2", "--url", server.url("/missing.pth")],
        "no-server": ["dass-medium-v2", "--url", f"http://127.0.0.1:{free_port()}/w.pth"],
        "not-a-checkpoint": ["dass-medium-v2", "--url", server.url("/junk.pth")],
        "other-backbone": ["dass-medium-v2", "--url", server.url("/ast.pth")],
        "icbhi-wrong-size": ["icbhi", "--url", server.url("/ICBHI_final_database.zip")],
        "no-name": [],
        "unknown": ["dass-huge"],
        "from-missing": ["dass-medium-v2", "--from", str(tmp_path / "nope.pth")],
    }[case]
    result = _run(capsys, *argv, "--dir", str(tmp_path / "assets"), "--timeout", "30")
    assert_one_line_error(result, fragment, prefix="lungsrad: error:")
    folder = tmp_path / "assets"
    assert (
        [f for f in files_under(folder) if not f.startswith(".downloads/")] == []
        if (folder.exists())
        else True
    )
