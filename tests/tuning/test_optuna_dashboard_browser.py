"""What a person sees in optuna-dashboard (issue 27): a finished smoke TPE sweep's study storage,
served by a real `optuna-dashboard` on 127.0.0.1, opened in headless Chromium: the study list
shows the sweep's study, and its trials page shows every trial with the value and parameter of
its MLflow child run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlflow_tracking.server import free_port
from mlflow_tracking.tags import PARENT_RUN_TAG, TAG_VALUES
from mlflow_tracking.uri import sqlite_uri
from tests.browser import Browser, find_chromium
from tuning.result_keys import best_metric_name
from tuning.study import TAG_STUDY_NAME

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow, pytest.mark.browser]

TEMPERATURE = "method.patch_mix.temperature"
# Limits for a server or page that never comes up, not guesses at how fast they are.
SERVER_LIMIT_S = 120.0
PAGE_LIMIT_S = 180.0
# One trial block of the dashboard's trials page, as its text reads.
_TRIAL_BLOCK = re.compile(
    r"Trial (\d+) \(trial_id=\d+\).*?\nValue\s+(\S+).*?\nParameter\s.*?"
    + re.escape(TEMPERATURE)
    + r" (\S+)",
    re.S,
)


@pytest.fixture(scope="module")
def chromium() -> str:
    executable = find_chromium()
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium; .ci/run does)")
    return executable


@pytest.fixture(scope="module")
def studied_sweep(local_ray, tpe_sweep, chromium):
    """The shared finished 3-trial TPE smoke sweep (conftest.tpe_sweep): its outcome, storage
    URL and study name."""
    if shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("optuna-dashboard is not installed (pip install -e '.[dev]')")
    _, outcome, _ = tpe_sweep
    state = json.loads((outcome.folder / "sweep.json").read_text())
    return outcome, sqlite_uri(outcome.folder.parents[1] / "optuna.db"), state[TAG_STUDY_NAME]


@pytest.fixture(scope="module")
def dashboard(studied_sweep, tmp_path_factory) -> Iterator[str]:
    """`optuna-dashboard STORAGE` on a free port of 127.0.0.1; its URL once it answers."""
    _, storage, _ = studied_sweep
    port = free_port()
    log = tmp_path_factory.mktemp("dashboard_log") / "dashboard.log"
    executable = str(Path(sys.executable).with_name("optuna-dashboard"))
    with open(log, "wb") as stream:
        process = subprocess.Popen(
            [
                executable,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--server",
                "wsgiref",
                storage,
            ],
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_answering(f"{url}/api/studies", process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_answering(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Polls `url` until it answers 200 (fails when the process exits or after the limit)."""
    deadline = time.monotonic() + SERVER_LIMIT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"optuna-dashboard exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"optuna-dashboard did not answer at {url}")
        time.sleep(0.25)


def _study_id(url: str, name: str) -> int:
    with urllib.request.urlopen(f"{url}/api/studies", timeout=30) as response:
        studies = json.load(response)["study_summaries"]
    return next(study["study_id"] for study in studies if study["study_name"] == name)


def test_the_dashboard_lists_the_sweeps_study(studied_sweep, dashboard, chromium) -> None:
    _, _, name = studied_sweep
    with Browser(chromium) as browser:
        browser.open(f"{dashboard}/dashboard/")
        text = browser.wait_for(
            f"document.body.innerText.includes({json.dumps(name)}) && document.body.innerText",
            timeout_s=PAGE_LIMIT_S,
        )
    assert re.search(rf"\d+\. {re.escape(name)}\s+Direction: MAXIMIZE", text), text[:2000]


def test_the_dashboard_shows_each_trial_with_its_mlflow_value(
    studied_sweep, dashboard, chromium
) -> None:
    outcome, _, name = studied_sweep
    client = outcome.tracking.client()
    runs = client.search_runs(
        [outcome.tracking.experiment_id],
        filter_string=f"tags.`{PARENT_RUN_TAG}` = '{outcome.parent_run_id}'",
    )
    best = best_metric_name("selection/icbhi_score")
    expected = sorted(
        (round(float(json.loads(run.data.tags[TAG_VALUES])[TEMPERATURE]), 9),
         round(run.data.metrics[best], 6))
        for run in runs
    )  # fmt: skip
    study_id = _study_id(dashboard, name)
    numbers = ",".join(str(number) for number in range(len(runs)))
    with Browser(chromium) as browser:
        browser.open(f"{dashboard}/dashboard/studies/{study_id}/trials?numbers={numbers}")
        last = f"Trial {len(runs) - 1} (trial_id="
        text = browser.wait_for(
            f"document.body.innerText.includes('{len(runs)} Trials') && "
            f"document.body.innerText.includes({json.dumps(last)}) && document.body.innerText",
            timeout_s=PAGE_LIMIT_S,
        )
    blocks = _TRIAL_BLOCK.findall(text)
    assert len(blocks) == len(runs) == 3, text[:3000]
    shown = sorted((round(float(value), 9), round(float(score), 6)) for _, score, value in blocks)
    assert shown == expected
