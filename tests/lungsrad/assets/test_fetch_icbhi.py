"""`fetch_asset` on the ICBHI zip and split file from a local HTTP server: tested, unpacked into
ICBHI_final_database/ with the split file beside the wavs, inspected, resolved as `fetch:icbhi`;
a zip without the layout is refused and leaves nothing; --from takes the zip and its split file."""

from __future__ import annotations

import pytest

from lungsrad.assets.fetch import FetchOptions, fetch_asset
from lungsrad.assets.unpack import fixed_split_text
from lungsrad.data.icbhi import scan_dataset
from lungsrad.errors import UserError
from tests.http_files import Route
from tests.lungsrad.assets.conftest import files_under, icbhi_asset


def _serve(server, icbhi_files, zip_key="zip"):
    server.routes["/ICBHI_final_database.zip"] = Route(body=icbhi_files[zip_key])
    server.routes["/ICBHI_challenge_train_test.txt"] = Route(
        body=icbhi_files["split"], content_type="text/plain"
    )
    return icbhi_asset(
        server.url("/ICBHI_final_database.zip"), server.url("/ICBHI_challenge_train_test.txt")
    )


def test_the_database_is_unpacked_inspected_and_resolved(
    server, tmp_path, icbhi_files, monkeypatch
):
    said: list[str] = []
    asset = _serve(server, icbhi_files)
    options = FetchOptions(directory=tmp_path, show_progress=False)
    folder = fetch_asset(asset, options, say=said.append)
    assert folder == tmp_path / "ICBHI_final_database"
    names = {path.name for path in folder.iterdir()}
    assert "ICBHI_challenge_train_test.txt" in names
    assert len([n for n in names if n.endswith(".wav")]) == 6
    assert any("6 recordings" in line and "usable: yes" in line for line in said)
    # No zip, no part, no staging folder left; the lock holds both files.
    assert [f for f in files_under(tmp_path) if not f.startswith("ICBHI_final_database/")] == [
        "assets.lock.json"
    ]
    monkeypatch.setenv("LUNGSRAD_ASSETS", str(tmp_path))
    scan = scan_dataset("fetch:icbhi", "fetch:icbhi")
    assert scan.root == folder and scan.split_file == folder / "ICBHI_challenge_train_test.txt"
    assert len(scan.recordings) == 6 and not scan.problems


def test_a_zip_without_the_layout_is_refused(server, tmp_path, icbhi_files):
    asset = _serve(server, icbhi_files, zip_key="wrong_zip")
    with pytest.raises(UserError, match="does not have the ICBHI layout.*found none"):
        fetch_asset(asset, FetchOptions(directory=tmp_path, show_progress=False))
    assert files_under(tmp_path) == []


def test_from_the_zip_with_the_split_file_beside_it(tmp_path, icbhi_files):
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    (downloads / "ICBHI_final_database.zip").write_bytes(icbhi_files["zip"])
    (downloads / "ICBHI_challenge_train_test.txt").write_bytes(icbhi_files["split"])
    asset = icbhi_asset("http://127.0.0.1:9/a.zip", "http://127.0.0.1:9/b.txt")  # never asked
    options = FetchOptions(
        directory=tmp_path / "assets",
        from_files=(downloads / "ICBHI_final_database.zip",),
        show_progress=False,
    )
    folder = fetch_asset(asset, options, say=lambda _line: None)
    assert (folder / "ICBHI_challenge_train_test.txt").read_bytes() == icbhi_files["split"]


def test_the_known_split_file_error_is_fixed(tmp_path):
    (tmp_path / "226_1b1_Pl_sc_LittC2SE.wav").write_bytes(b"")
    text = "101_1b1_Al_sc_Meditron\ttest\r\n226_1b1_Pl_sc_Meditron\ttrain\r\n"
    fixed = fixed_split_text(text, tmp_path)
    assert fixed == "101_1b1_Al_sc_Meditron\ttest\r\n226_1b1_Pl_sc_LittC2SE\ttrain\r\n"
    (tmp_path / "226_1b1_Pl_sc_Meditron.wav").write_bytes(b"")  # listed name has files: kept
    assert fixed_split_text(text, tmp_path) == text
