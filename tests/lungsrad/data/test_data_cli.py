"""`python -m lungsrad data synth|inspect` as a user runs it: exit codes, JSON, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cli_errors import assert_one_line_error


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lungsrad", "data", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_synth_then_inspect_json_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    synth = _run("synth", str(out), "--recordings", "4", "--seed", "3")
    assert synth.returncode == 0, synth.stderr
    assert "recordings: 4" in synth.stdout

    inspect = _run("inspect", str(out), "--json")
    assert inspect.returncode == 0, inspect.stderr
    report = json.loads(inspect.stdout)
    assert report["problems"] == [] and report["usable"] is True
    assert set(report["splits"]) == {"train", "test"}
    assert set(report["splits"]["train"]) == {"normal", "crackle", "wheeze", "both"}
    assert sum(sum(counts.values()) for counts in report["splits"].values()) == int(
        synth.stdout.split("cycles: ")[1].split()[0]
    )

    again = _run("synth", str(out), "--recordings", "4")
    assert_one_line_error(again, "is not empty", prefix="lungsrad: error: ")

    # A broken annotation line: the report still prints (as JSON), the exit status says unusable.
    annotation = sorted(out.glob("*_*_*_*_*.txt"))[0]
    annotation.write_text(annotation.read_text() + "1.0\t0.5\t0\t0\n")
    broken = _run("inspect", str(out), "--json")
    assert broken.returncode == 2
    assert_one_line_error(broken, "is not usable", prefix="lungsrad: error: ")
    (problem,) = json.loads(broken.stdout)["problems"]
    assert problem["file"] == str(annotation) and "reversed cycle" in problem["message"]


def test_inspect_of_missing_or_empty_folder_exits_2_in_one_line(tmp_path: Path) -> None:
    assert_one_line_error(
        _run("inspect", str(tmp_path / "nowhere")),
        "dataset folder not found",
        prefix="lungsrad: error: ",
    )
    (tmp_path / "empty").mkdir()
    assert_one_line_error(
        _run("inspect", str(tmp_path / "empty"), "--json"),
        "no recordings",
        prefix="lungsrad: error: ",
    )
