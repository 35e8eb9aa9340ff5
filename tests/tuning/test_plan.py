"""`tuning/sweep.py --plan [--probe]`: the trial count of search_spaces/paper_fig3.yaml (derived
here from the file) printed without Ray and without writing; after a smoke sweep on a real local
Ray with SQLite MLflow, the plan of the same space estimates from its cost ledger within a factor
of 2 of what the sweep's summary.md cost section says; a probe-based estimate; a bad space in one
line, exit 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sweep_helpers import REPO

from lungsrad.assets.registry import ASSETS_DIR_VARIABLE
from lungsrad.config import apply_overrides
from mlflow_tracking.server import free_port
from mlflow_tracking.uri import sqlite_uri
from tests.cli_errors import assert_one_line_error
from tuning.plan import asha_min_epochs
from tuning.plan_capacity import Capacity, read_capacity, read_cluster_nodes
from tuning.results import SUMMARY_FILE
from tuning.search_space import ResourceSpec, load_search_space
from tuning.sweep import main

FIG3 = REPO / "search_spaces" / "paper_fig3.yaml"
TEMPERATURE = "method.patch_mix.temperature"


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and modification time (ns)."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in [root, *root.rglob("*")]
    }


def figure(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"no {pattern!r} in:\n{text}"
    return float(match.group(1))


def fig3_trials_from_file() -> int:
    """(base point + each grid value that differs from the base config) x seeds, read from the
    YAML: the one_at_a_time rule of search_spaces/README.md."""
    document = yaml.safe_load(FIG3.read_text(encoding="utf-8"))
    base = load_search_space(FIG3, overrides={"model.checkpoint": "none"}).base_config
    points = 1
    for name, domain in document["parameters"].items():
        for value in domain["grid"]:
            if isinstance(value, dict):
                changes = {path: item for path, item in value.items() if path != "label"}
            else:
                changes = {name: value}
            points += apply_overrides(base, changes) != base
    return points * len(document["seeds"])


def test_asha_least_epochs_keeps_one_trial_at_full_length() -> None:
    assert asha_min_epochs(10, grace_period=5, full_epochs=50) == 9 * 5 + 50
    assert asha_min_epochs(1, grace_period=5, full_epochs=50) == 50
    assert asha_min_epochs(3, grace_period=8, full_epochs=4) == 3 * 4


def test_trials_at_once_fit_per_node_and_respect_max_concurrent() -> None:
    capacity = Capacity("on two nodes", ({"CPU": 8.0, "GPU": 1.0}, {"CPU": 16.0}))
    half_gpu = ResourceSpec(cpu=2, gpu=0.5)
    assert capacity.concurrent(half_gpu, None) == 2  # the GPU node holds 2, the other none
    assert capacity.concurrent(ResourceSpec(cpu=3), None) == 2 + 5
    assert capacity.concurrent(ResourceSpec(cpu=3), 4) == 4


def test_a_cluster_that_does_not_answer_is_named_and_this_machine_used() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    capacity = read_capacity(f"http://{address}", ResourceSpec(cpu=1))
    assert capacity.where == "on this machine"
    assert f"the Ray cluster at http://{address} was not read" in capacity.describe()


@pytest.mark.slow
def test_plan_of_fig3_counts_its_trials_without_ray_and_writes_nothing(tmp_path) -> None:
    root = tmp_path / "runs"
    (root / "ray_results").mkdir(parents=True)
    (root / "note.txt").write_text("kept\n")
    before = tree(root)
    # main() in a fresh interpreter: afterwards Ray must not even be imported.
    code = (
        "import sys\nfrom tuning.sweep import main\n"
        f"status = main(['--space', {str(FIG3)!r}, '--plan', '--output-root', {str(root)!r}])\n"
        "assert 'ray' not in sys.modules, 'the plan imported ray'\nsys.exit(status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        # The weights are not fetched (an empty assets folder): a plan does not need them.
        env={**os.environ, "PYTHONPATH": str(REPO), ASSETS_DIR_VARIABLE: str(tmp_path / "assets")},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert figure(r"trials: (\d+) =", result.stdout) == fig3_trials_from_file()
    assert "estimate: none" in result.stdout and "--probe" in result.stdout
    assert tree(root) == before
    assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_a_bad_space_is_one_line_exit_2(tmp_path, write_space, capsys) -> None:
    space = write_space(tmp_path, "typo", parameters={"method.patch_mix.temprature": {"grid": [1]}})
    status = main(["--space", str(space), "--plan", "--output-root", str(tmp_path / "runs")])
    assert_one_line_error((status, capsys.readouterr().err), "temprature")
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def swept(local_ray, write_space, tmp_path_factory):
    """A finished grid sweep (2 configurations x 1 seed, 2 epochs) of the tiny model."""
    from tuning.driver import run_sweep
    from tuning.settings import DriverSettings

    folder = tmp_path_factory.mktemp("plan")
    space_path = write_space(
        folder,
        "planned",
        parameters={TEMPERATURE: {"grid": [0.06, 0.2]}},
        search="grid",
        seeds=[0],
        resources={"cpu": 1},
        max_concurrent_trials=2,
    )
    root = folder / "runs"
    settings = DriverSettings(
        output_root=root,
        storage_path=root / "ray_results",
        tracking_uri=sqlite_uri(root / "mlflow.db"),
        experiment="test-plan",
        ray_address=None,
    )
    outcome = run_sweep(load_search_space(space_path), settings)
    assert all(o.status == "done" for o in outcome.outcomes)
    return space_path, root, outcome


def cost_section(summary: str) -> tuple[float, float]:
    """(device seconds, wall seconds) as the summary's cost section states them."""
    section = summary.split("## Cost", 1)[1]
    hours = figure(r"\| total \| ([0-9.]+) (?:CPU|GPU)-hours \|", section)
    minutes = figure(r"\| sweep wall time \| ([0-9.]+) min \|", section)
    return hours * 3600, minutes * 60


@pytest.mark.ray
@pytest.mark.mlflow
@pytest.mark.slow
def test_plan_after_a_sweep_estimates_within_a_factor_of_2(swept, capsys) -> None:
    space_path, root, outcome = swept
    before = tree(root)
    status = main(["--space", str(space_path), "--plan", "--output-root", str(root)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert tree(root) == before
    assert f"basis: earlier sweep {outcome.folder.name}" in out
    assert figure(r"trials: (\d+) =", out) == len(outcome.outcomes)
    device = figure(r"device time: at most ([0-9.]+) CPU-seconds", out)
    wall = figure(r"wall time: at most ([0-9.]+) s", out)
    measured_device, measured_wall = cost_section((outcome.folder / SUMMARY_FILE).read_text())
    assert measured_device / 2 <= device <= measured_device * 2, (device, measured_device, out)
    assert measured_wall / 2 <= wall <= measured_wall * 2, (wall, measured_wall, out)


@pytest.mark.ray
@pytest.mark.slow
def test_plan_with_probe_times_training_steps(swept, capsys) -> None:
    space_path, root, _ = swept
    before = tree(root)
    status = main(["--space", str(space_path), "--plan", "--probe", "--output-root", str(root)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert tree(root) == before
    step = figure(r"basis: probe: ([0-9.]+) s per training step on cpu", out)
    assert step > 0
    assert figure(r"device time: at most ([0-9.]+) CPU-seconds", out) > 0


@pytest.mark.ray
@pytest.mark.slow
def test_plan_reads_a_running_cluster_without_joining_it(
    ray_cluster, write_space, tmp_path, monkeypatch, capsys
) -> None:
    ray_cluster.start_head(num_cpus=3, resources={"trial_slot": 2})
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_cluster.env["RAY_AUTH_TOKEN"])
    deadline = time.monotonic() + 120
    while True:  # the dashboard answers before the head node has registered
        try:
            read_cluster_nodes(ray_cluster.dashboard_url)
            break
        except ValueError:
            assert time.monotonic() < deadline, "the head node never registered"
            time.sleep(0.2)
    space = write_space(
        tmp_path,
        "slots",
        parameters={TEMPERATURE: {"grid": [0.06, 0.2, 0.5]}},
        search="grid",
        resources={"cpu": 1, "custom": {"trial_slot": 1}},
    )
    arguments = ["--space", str(space), "--plan", "--output-root", str(tmp_path / "runs")]
    status = main([*arguments, "--ray-address", ray_cluster.dashboard_url])
    out = capsys.readouterr().out
    assert status == 0, out
    # 3 CPUs hold 3 trials, the 2 trial slots only 2.
    assert f"on the Ray cluster at {ray_cluster.dashboard_url} (1 node(s), 3 CPUs" in out
    assert figure(r"(\d+) at once", out) == 2
    assert not (tmp_path / "runs").exists()
