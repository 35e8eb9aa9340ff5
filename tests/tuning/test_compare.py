"""Table 2 comparison on known scores: steps paired by seed with the hand-computed intervals of
tests/lungsrad/test_statistics.py, "within noise" said plainly, and the CLI reading the variants
from a real MLflow SQLite store (a sweep parent with variant child runs; two final.py parents)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lungsrad.metrics import REPORT_SCORE
from mlflow_tracking.store import make_client
from mlflow_tracking.tags import PARENT_RUN_TAG, TAG_ROLE, TAG_SEED, TAG_VARIANT
from mlflow_tracking.uri import sqlite_uri
from tuning.compare import COMPARISON_FILE, comparison_markdown, main

pytestmark = [pytest.mark.mlflow]

# before -> middle: differences 1, 2, 0.5 (t interval [-0.73, +3.06]: within noise);
# middle -> after: differences 2.0, 2.2, 1.8 (t interval [+1.50, +2.50]: better).
SCORES = {
    "dass_finetune": {0: 60.0, 1: 61.0, 2: 62.0},
    "regularization": {0: 61.0, 1: 63.0, 2: 62.5},
    "lung_srad": {0: 63.0, 1: 65.2, 2: 64.3},
}
ORDER = ["dass_finetune", "regularization", "lung_srad"]


def test_steps_with_intervals_and_verdicts() -> None:
    text = comparison_markdown(SCORES, ORDER, metric=REPORT_SCORE, title="t")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if "->" in line}
    assert "| +1.17 | [-0.73, +3.06] |" in rows["dass_finetune -> regularization"]
    assert "**within noise**" in rows["dass_finetune -> regularization"]
    # 2.0, 2.2, 1.8: mean 2, s 0.2, half 4.302653 * 0.2 / sqrt(3) = 0.49683
    assert "| +2.00 | [+1.50, +2.50] |" in rows["regularization -> lung_srad"]
    assert rows["regularization -> lung_srad"].rstrip().endswith("| better |")
    assert "dass_finetune -> lung_srad" in rows  # last against first
    assert "| regularization | [0, 1, 2] | 62.17 ± 1.04 [59.58, 64.75] |" in text


def test_two_paired_seeds_say_they_have_no_interval() -> None:
    # Issue 25: a paired bootstrap over 2 seeds printed [-1.92, +0.00], as if it meant something.
    scores = {"a": {0: 60.0, 1: 61.0}, "b": {0: 58.08, 1: 61.0}}
    text = comparison_markdown(scores, ["a", "b"], metric=REPORT_SCORE, title="t")
    (row,) = [line for line in text.splitlines() if "a -> b" in line]
    assert "| -0.96 | n=2: no interval | n=2: no interval |" in row
    assert row.rstrip().endswith("| unknown (n=2: fewer than 3 paired seeds) |")
    assert "| a | [0, 1] | 60.50 ± 0.71 (n=2: no interval) |" in text


def _log_children(client, experiment_id: str, parent_id: str, variant: str, scores, name: str):
    for seed, value in scores.items():
        run = client.create_run(
            experiment_id,
            tags={PARENT_RUN_TAG: parent_id, TAG_VARIANT: variant, TAG_SEED: str(seed)},
        )
        client.log_param(run.info.run_id, "name", name)
        client.log_metric(run.info.run_id, REPORT_SCORE, value)
        client.set_terminated(run.info.run_id)


def test_cli_reads_a_table2_sweep_and_finals(tmp_path: Path, capsys) -> None:
    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = make_client(uri)
    sweep_id = client.create_experiment("lungsrad-table2")
    parent = client.create_run(sweep_id, tags={TAG_ROLE: "sweep"}).info.run_id
    for variant, scores in SCORES.items():
        _log_children(client, sweep_id, parent, variant, scores, name=variant)
    out = tmp_path / "out"
    assert main(["--experiment", "lungsrad-table2", "--tracking-uri", uri, "--out", str(out)]) == 0
    text = (out / COMPARISON_FILE).read_text()
    assert "dass_finetune -> regularization" in text and "**within noise**" in text
    logged = [a.path for a in client.list_artifacts(parent, "report")]
    assert logged == [f"report/{COMPARISON_FILE}"]

    # Two final.py runs (each its own experiment, seed runs of variant "base"): named by config.
    finals = []
    for name in ("regularization", "lung_srad"):
        experiment_id = client.create_experiment(f"lungsrad-final-{name}")
        final_parent = client.create_run(experiment_id, tags={TAG_ROLE: "final"}).info.run_id
        _log_children(client, experiment_id, final_parent, "base", SCORES[name], name=name)
        finals.append(final_parent)
    capsys.readouterr()
    assert main(["--parent-run-id", *finals, "--tracking-uri", uri, "--no-log"]) == 0
    printed = capsys.readouterr().out
    assert "| regularization -> lung_srad | [0, 1, 2] |" in printed and "| better |" in printed

    assert main(["--experiment", "nope", "--tracking-uri", uri]) == 2
    assert capsys.readouterr().err.strip() == "error: no MLflow experiment 'nope'"
    assert main(["--experiment", "lungsrad-table2", "--tracking-uri", uri, "--order", "x"]) == 2
    assert "--order names ['x']" in capsys.readouterr().err
