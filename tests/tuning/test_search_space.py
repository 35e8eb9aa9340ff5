"""Search-space YAML: parsing, every validation error by message, points and trial resolution,
the shipped spaces, and the CLI's one-line refusal (exit 2, no traceback) before Ray starts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lungsrad.config import load_config
from lungsrad.metrics import REPORT_SCORE, SELECTION_SCORE
from tests.cli_errors import assert_one_line_error
from tuning.search_space import (
    POINT_KEY,
    SEED_KEY,
    VARIANT_KEY,
    known_metrics,
    load_search_space,
)
from tuning.search_space.tune_space import tune_param_space

REPO = Path(__file__).resolve().parents[2]
SPACES = REPO / "search_spaces"


def write_space(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


GOOD = """\
name: good
base_overrides:
  model: {preset: custom, dims: [8, 16], depths: [1, 2]}
  method.regularization: {enabled: true, stage: 1, blocks: [0, 1]}
  train.num_epochs: 3
parameters:
  method.patch_mix.temperature: {loguniform: [0.03, 0.3]}
  method.regularization.sigma: {uniform: [0.5, 2.0]}
  method.regularization.kernel_size: {choice: [3, 5]}
search: tpe
num_samples: 5
resources: {cpu: 1, gpu: 0.5}
"""


# The release files the shipped spaces name: relative to the directory a sweep runs in, and by
# fetch name (resolved in the assets folder).
RELEASE_FILES = ("pretrained_models/DASS_small.pth",)
FETCHED_WEIGHTS = ("dass-medium-v2",)


@pytest.fixture
def release_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory and an assets folder holding (empty) release files under the names
    the spaces use (loading a space checks they are there, not what they hold)."""
    from lungsrad.assets.paths import asset_path
    from lungsrad.assets.registry import ASSETS_DIR_VARIABLE, find_asset

    monkeypatch.chdir(tmp_path)
    for name in RELEASE_FILES:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setenv(ASSETS_DIR_VARIABLE, str(tmp_path / "assets"))
    for name in FETCHED_WEIGHTS:
        path = asset_path(find_asset(name), tmp_path / "assets")
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize(
    "name",
    ["smoke", "paper_fig3", "lung_srad_tpe", "table2", "foldwise_cv", "reproduction_choices"],
)
def test_shipped_spaces_load(name: str, release_files: Path) -> None:
    space = load_search_space(SPACES / f"{name}.yaml")
    assert space.name == name
    assert space.num_trials() is not None and space.num_trials() >= 4


def test_paper_spaces_need_the_authors_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from lungsrad.assets.registry import ASSETS_DIR_VARIABLE
    from lungsrad.errors import UserError
    from tuning.search_space import checkpoints_unchecked

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ASSETS_DIR_VARIABLE, str(tmp_path / "assets"))  # nothing fetched
    for name in ("table2", "paper_fig3", "reproduction_choices"):
        with pytest.raises(UserError, match=r"fetch:dass-medium-v2 is not fetched .*lungsrad fe"):
            load_search_space(SPACES / f"{name}.yaml")
        with checkpoints_unchecked():  # as `sweep.py --plan` reads them: the names stay
            space = load_search_space(SPACES / f"{name}.yaml")
        assert space.base_config.model.checkpoint == "fetch:dass-medium-v2"
    with pytest.raises(FileNotFoundError, match=r"model\.checkpoint not found: .*DASS_small"):
        load_search_space(
            SPACES / "reproduction_choices.yaml", overrides={"model.checkpoint": "none"}
        )


def test_shipped_space_shapes(release_files: Path) -> None:
    fig3 = load_search_space(SPACES / "paper_fig3.yaml")
    assert fig3.search == "one_at_a_time" and fig3.protocol == "paper"
    assert fig3.base_config.model.preset == "medium" and fig3.resources.gpu == 0.5
    authors = load_config(REPO / "configs" / "lung_srad_authors.yaml")
    base = fig3.base_config
    assert (base.data, base.method, base.train) == (authors.data, authors.method, authors.train)
    # Fig. 3's grids hold the authors' values (tau 0.2, sigma 3.0, kernel 5): the base point.
    labels = fig3.base_labels()
    assert labels["method.patch_mix.temperature"] == "0.2"
    assert labels["method.regularization.sigma"] == "3"
    assert labels["method.regularization.kernel_size"] == "5"
    for name, value in labels.items():
        assert value in {fig3.parameter(name).label(v) for v in fig3.parameter(name).tune_values}
    swept = {p.name for p in fig3.parameters}
    assert {"method.patch_mix.temperature", "method.regularization.sigma", "placement"} <= swept
    assert {"method.regularization.kernel_size", "method.patch_mix.alpha"} <= swept
    tpe = load_search_space(SPACES / "lung_srad_tpe.yaml")
    assert (tpe.search, tpe.scheduler.kind, tpe.protocol) == ("tpe", "asha", "validated")
    table2 = load_search_space(SPACES / "table2.yaml")
    assert len(table2.variants) == 6 and table2.seeds == (1, 2, 3, 4, 5)
    assert table2.num_trials() == 30
    assert {config.model.preset for config in table2.variants.values()} == {"medium"}
    assert {c.model.checkpoint for c in table2.variants.values()} == {"fetch:dass-medium-v2"}
    smoke = load_search_space(SPACES / "smoke.yaml")
    assert smoke.resources.gpu == 0 and smoke.base_config.train.num_epochs <= 3
    folds = load_search_space(SPACES / "foldwise_cv.yaml")
    assert (folds.protocol, folds.num_trials()) == ("foldwise", 15)
    assert [folds.resolve({"data.fold": f, "seed": 0}).config.data.fold for f in range(5)] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert "val/icbhi_score" in known_metrics("foldwise") and "val/icbhi_score" in known_metrics(
        "disjoint"
    )


def test_good_space_parses_and_resolves(tmp_path: Path) -> None:
    space = load_search_space(write_space(tmp_path, GOOD))
    assert space.metric == SELECTION_SCORE and space.mode == "max"
    assert space.seeds == (0,) and space.max_failures == 2
    trial = space.resolve(
        {
            "method.patch_mix.temperature": 0.1,
            "method.regularization.sigma": 1.5,
            "method.regularization.kernel_size": 5,
            SEED_KEY: 0,
        }
    )
    assert trial.config.method.patch_mix.temperature == 0.1
    assert trial.config.method.regularization.kernel_size == 5
    assert trial.config.train.num_epochs == 3
    assert "method.regularization.sigma=1.5" in trial.describe()
    param_space = tune_param_space(space)
    assert set(param_space) == {
        "method.patch_mix.temperature",
        "method.regularization.sigma",
        "method.regularization.kernel_size",
        SEED_KEY,
    }


def test_one_at_a_time_points_skip_the_base_value(tmp_path: Path) -> None:
    path = write_space(
        tmp_path,
        """\
        name: oat
        base_overrides: {method.patch_mix.temperature: 0.06}
        parameters:
          method.patch_mix.temperature: {grid: [0.03, 0.06, 0.1]}
          method.patch_mix.mode: {choice: [time, dual]}
        search: one_at_a_time
        seeds: [0, 1]
        """,
    )
    space = load_search_space(path)
    points = space.points()
    # base + 2 temperatures (0.06 is the base) + 2 modes (default mode 'none' is not listed)
    assert len(points) == 5 and points[0]["parameter"] == "base"
    assert space.num_trials() == 10
    resolved = space.resolve({POINT_KEY: points[1], SEED_KEY: 1})
    assert resolved.config.method.patch_mix.temperature == 0.03
    assert resolved.config.train.seed == 1 and resolved.values == {
        "method.patch_mix.temperature": "0.03"
    }


def test_group_parameter_sets_several_paths(tmp_path: Path) -> None:
    path = write_space(
        tmp_path,
        """\
        name: placement
        parameters:
          placement:
            grid:
              - {label: "s0", method.regularization.stage: 0, method.regularization.blocks: all}
              - {method.regularization.stage: 2, method.regularization.blocks: [2, 3]}
          method.regularization.blocks: {choice: [[0, 1], all]}
        search: grid
        """,
    )
    space = load_search_space(path)
    group = space.parameter("placement")
    assert group.labels == ("s0", "stage=2,blocks=[2, 3]")
    trial = space.resolve({"placement": "s0", "method.regularization.blocks": "[0, 1]"})
    # the later parameter wins for the shared path
    assert trial.config.method.regularization.stage == 0
    assert trial.config.method.regularization.blocks == (0, 1)
    assert space.num_trials() == 4
    assert space.base_labels()["placement"] == "stage=2,blocks=[2, 3]"


def test_variants_and_seeds(tmp_path: Path) -> None:
    configs = REPO / "configs"
    path = write_space(
        tmp_path,
        f"""\
        name: variants
        variants:
          plain: {configs / "earlier_reading" / "table2_dass_finetune.yaml"}
          full:
            base: {configs / "earlier_reading" / "table2_lung_srad.yaml"}
            base_overrides: {{train.num_epochs: 7}}
        base_overrides: {{train.num_epochs: 3}}
        search: grid
        seeds: [0, 1, 2]
        """,
    )
    space = load_search_space(path)
    assert list(space.variants) == ["plain", "full"]
    assert space.variants["plain"].train.num_epochs == 3
    assert space.variants["full"].train.num_epochs == 7
    assert space.num_trials() == 6
    trial = space.resolve({VARIANT_KEY: "full", SEED_KEY: 2})
    assert trial.config.method.patch_mix.mode == "dual" and trial.seed == 2


def test_data_root_is_applied_to_every_base(tmp_path: Path) -> None:
    space = load_search_space(write_space(tmp_path, GOOD), data_root=tmp_path)
    assert space.base_config.data.root == str(tmp_path.resolve())


BAD_CASES = [
    ("unknown top-level key", "nmae: x\n", r":1: unknown key 'nmae'; did you mean 'name'\?"),
    (
        "typo in a parameter path",
        "parameters:\n  method.patch_mix.temprature: {choice: [0.1]}\n",
        r":2: parameter 'method.patch_mix.temprature': unknown config path "
        r"'method.patch_mix.temprature'; did you mean 'method.patch_mix.temperature'\?",
    ),
    (
        "reversed bounds",
        "parameters:\n  method.regularization.sigma: {uniform: [2.0, 0.5]}\n",
        r"uniform bounds must satisfy low < high, got \[2.0, 0.5\]",
    ),
    (
        "loguniform through zero",
        "parameters:\n  method.patch_mix.temperature: {loguniform: [0, 0.5]}\n",
        r"loguniform needs low > 0",
    ),
    (
        "empty choice",
        "parameters:\n  method.patch_mix.alpha: {choice: []}\n",
        r"choice needs a non-empty list of values",
    ),
    (
        "value the config refuses",
        "parameters:\n  method.regularization.kernel_size: {choice: [3, 4]}\n",
        r"value 4 is not a valid config: method.regularization.kernel_size must be a positive odd",
    ),
    (
        "wrong value type",
        "parameters:\n  train.batch_size: {choice: [8, big]}\n",
        r"value big is not a valid config: config key 'train.batch_size' must be an integer",
    ),
    (
        "uniform on an integer setting",
        "parameters:\n  train.batch_size: {uniform: [8, 32]}\n",
        r"'train.batch_size' is not a number setting; use int",
    ),
    (
        "two domains",
        "parameters:\n  method.patch_mix.alpha: {choice: [1.0], grid: [2.0]}\n",
        r"needs exactly one domain",
    ),
    (
        "unknown search kind",
        "search: random\n",
        r"search must be one of 'tpe' \| 'grid' \| 'one_at_a_time', got 'random'",
    ),
    (
        "grid domain under tpe",
        "parameters:\n  method.patch_mix.alpha: {grid: [1.0, 2.0]}\nsearch: tpe\n",
        r"'grid' domains need search 'grid' or 'one_at_a_time'",
    ),
    (
        "swept seed",
        "parameters:\n  train.seed: {choice: [0, 1]}\n",
        r"'train.seed' is set by `seeds:`",
    ),
    (
        "several seeds with tpe",
        "parameters:\n  method.patch_mix.alpha: {choice: [1.0, 2.0]}\nseeds: [0, 1]\n",
        r"search 'tpe' samples one seed per configuration",
    ),
    (
        "unknown scheduler setting",
        "parameters:\n  method.patch_mix.alpha: {choice: [1.0]}\n"
        "scheduler: {kind: asha, grace: 2}\n",
        r"unknown key 'scheduler.grace'; did you mean 'scheduler.grace_period'\?",
    ),
    (
        "asha max_t beyond the epochs",
        "base_overrides: {train.num_epochs: 4}\nparameters:\n"
        "  method.patch_mix.alpha: {choice: [1.0]}\nscheduler: {kind: asha, max_t: 10}\n",
        r"scheduler.max_t \(10\) exceeds train.num_epochs \(4\)",
    ),
    (
        "negative resources",
        "parameters:\n  method.patch_mix.alpha: {choice: [1.0]}\nresources: {cpu: -1}\n",
        r"resources.cpu must be a number >= 0",
    ),
    (
        "several whole GPUs as a fraction",
        "parameters:\n  method.patch_mix.alpha: {choice: [1.0]}\nresources: {gpu: 1.5}\n",
        r"resources.gpu above 1 must be a whole number",
    ),
    (
        "val metric under the paper protocol",
        "parameters:\n  method.patch_mix.alpha: {choice: [1.0]}\nprotocol: paper\n"
        "metric: val/icbhi_score\n",
        r"metric 'val/icbhi_score' is not reported under protocol 'paper'",
    ),
    (
        "unknown base override",
        "base_overrides: {train.epochs: 3}\n",
        r"base_overrides: unknown config path 'train.epochs'",
    ),
    (
        "missing base file",
        "base: nowhere.yaml\n",
        r"base config not found: .*nowhere.yaml",
    ),
    (
        "invalid joint point",
        "base_overrides: {model: {preset: custom, dims: [8, 16], depths: [1, 4]}, "
        "method.regularization: {enabled: true, stage: 1, blocks: [0]}}\n"
        "parameters:\n  method.regularization.stage: {grid: [0, 1]}\n"
        "  method.regularization.blocks: {grid: [[0], [3]]}\nsearch: grid\n",
        r"the point \{method.regularization.stage=0, method.regularization.blocks=\[3\]\} "
        r"is not a valid config",
    ),
    (
        "one_at_a_time with a range",
        "parameters:\n  method.patch_mix.alpha: {uniform: [0.5, 2.0]}\nsearch: one_at_a_time\n",
        r"one_at_a_time needs listed values",
    ),
    (
        "NaN bound",
        "parameters:\n  method.regularization.sigma: {uniform: [.nan, 2.0]}\n",
        r":2: parameters.method.regularization.sigma.uniform\[0\] must be a finite number",
    ),
    (
        "unknown domain kind",
        "parameters:\n  method.patch_mix.alpha: {random: [1.0]}\n",
        r":2: unknown key 'parameters.method.patch_mix.alpha.random'",
    ),
    (
        "repeated seed",
        "search: grid\nseeds: [0, 0]\n",
        r":2: seeds must be a non-empty list of distinct integers >= 0, got \[0, 0\]",
    ),
    ("not a mapping", "- a\n- b\n", r"a search space must be a YAML mapping"),
    ("broken YAML", "parameters: {a: [1, 2}\n", r"not valid YAML"),
]


@pytest.mark.parametrize(("case", "text", "message"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_space_is_refused_naming_the_key(
    tmp_path: Path, case: str, text: str, message: str
) -> None:
    path = write_space(tmp_path, text)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as raised:
        load_search_space(path)
    assert str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_missing_space_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="search space file not found"):
        load_search_space(tmp_path / "absent.yaml")


def test_metric_can_be_the_reported_score(tmp_path: Path) -> None:
    text = GOOD + f"metric: {REPORT_SCORE}\nmode: max\n"
    assert load_search_space(write_space(tmp_path, text)).metric == REPORT_SCORE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "parameters:\n  method.patch_mix.temprature: {choice: [0.1]}\n",
            "did you mean 'method.patch_mix.temperature'",
        ),
        (
            "parameters:\n  method.patch_mix.alpha: {loguniform: [-1, 2]}\n",
            "loguniform needs low > 0",
        ),
    ],
)
def test_cli_refuses_a_bad_space_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = write_space(tmp_path, text)
    ray_tmp = tmp_path / "ray_tmp"
    ray_tmp.mkdir()
    completed = subprocess.run(
        [sys.executable, str(REPO / "tuning" / "sweep.py"), "--space", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "RAY_TMPDIR": str(ray_tmp)},
        timeout=120,
    )
    assert_one_line_error(completed, message)
    assert "Traceback" not in completed.stderr
    # Refused before anything slow: no Ray started (its session folder would be in RAY_TMPDIR),
    # no output root, no data or features.
    assert not any(ray_tmp.iterdir()), list(ray_tmp.iterdir())
    assert not (tmp_path / "runs").exists()


def test_best_config_of_a_space_loads_back(tmp_path: Path) -> None:
    from lungsrad.config import save_config

    space = load_search_space(write_space(tmp_path, GOOD))
    trial = space.resolve(
        {
            "method.patch_mix.temperature": 0.05,
            "method.regularization.sigma": 0.7,
            "method.regularization.kernel_size": 3,
        }
    )
    save_config(trial.config, tmp_path / "best.yaml")
    assert load_config(tmp_path / "best.yaml") == trial.config


def run_sweep_cli(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "tuning" / "sweep.py"), *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("htp://127.0.0.1:5000", "URI 'htp://127.0.0.1:5000' has unsupported scheme 'htp'"),
        ("http://me:secret@127.0.0.1:1", "server 'http://***@127.0.0.1:1' is not reachable"),
    ],
)
def test_cli_stops_before_ray_when_the_tracking_uri_is_bad(
    tmp_path: Path, uri: str, message: str
) -> None:
    space = write_space(tmp_path, GOOD)
    completed = run_sweep_cli("--space", str(space), "--tracking-uri", uri, cwd=tmp_path)
    assert_one_line_error(completed, message)
    assert "secret" not in completed.stderr + completed.stdout
    assert "Ray" not in completed.stdout  # no cluster was started


def test_cli_resume_without_an_earlier_sweep(tmp_path: Path) -> None:
    space = write_space(tmp_path, GOOD)
    completed = run_sweep_cli("--space", str(space), "--resume", cwd=tmp_path)
    assert_one_line_error(completed, "--resume: no earlier sweep 'good' under")


def test_swept_values_keep_their_exact_value_as_identity(tmp_path: Path) -> None:
    """Labels identify values exactly (seed grouping, tags, report axis); the 3-digit form is
    for display only."""
    from tuning.search_space import display_label

    path = tmp_path / "exact.yaml"
    path.write_text(
        "name: exact\nsearch: grid\nseeds: [0, 1]\n"
        "parameters:\n  train.learning_rate: {grid: [1.0e-4, 1.0000001e-4]}\n"
        "  method.patch_mix.alpha: {grid: [1, 2.0]}\n",
        encoding="utf-8",
    )
    space = load_search_space(path)
    close = [
        space.resolve({"train.learning_rate": rate, "method.patch_mix.alpha": 1, "seed": seed})
        for rate in (1.0e-4, 1.0000001e-4)
        for seed in (0, 1)
    ]
    assert len({trial.group_key() for trial in close}) == 2  # never merged by a rounded label
    assert close[0].group_key() == close[1].group_key()  # seeds of one point share it
    assert close[2].values["train.learning_rate"] == "0.00010000001"
    assert display_label(close[2].values["train.learning_rate"]) == "0.0001"
    assert display_label("0.03666490418612682") == "0.0367"
    assert display_label("12") == "12" and display_label("dual") == "dual"
    assert close[2].describe_short() == "learning_rate=0.0001 alpha=1 seed=0"
    whole = space.resolve({"train.learning_rate": 1.0e-4, "method.patch_mix.alpha": 2.0})
    assert whole.values["method.patch_mix.alpha"] == "2"  # 2 and 2.0 are one value


def test_checkpoints_set_by_parameters_are_resolved_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial runs in its own working directory: a relative model.checkpoint in a listed value or
    a group's entry is resolved where the sweep runs, and a missing file refused before Ray."""
    monkeypatch.chdir(tmp_path)
    path = write_space(
        tmp_path,
        """\
        name: files
        base_overrides:
          model: {preset: custom, dims: [8, 16], depths: [1, 2]}
        parameters:
          model.checkpoint: {grid: [null, weights/a.pth]}
          backbone:
            grid:
              - {label: "deeper", model.depths: [1, 3], model.checkpoint: weights/b.pth}
        search: one_at_a_time
        """,
    )
    with pytest.raises(
        FileNotFoundError, match=r"space\.yaml:\d+: parameter 'model\.checkpoint': .*a\.pth"
    ):
        load_search_space(path)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "a.pth").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"space\.yaml:\d+: parameter 'backbone': .*b\.pth"):
        load_search_space(path)
    (tmp_path / "weights" / "b.pth").write_bytes(b"")
    space = load_search_space(path)
    files = [space.resolve({POINT_KEY: p}).config.model.checkpoint for p in space.points()]
    assert files == [
        None,
        str(tmp_path / "weights" / "a.pth"),
        str(tmp_path / "weights" / "b.pth"),
    ]
