"""A smoke run of the backbones sweep (search_spaces/backbones.yaml in miniature): tiny DASS and
tiny AST variants x 2 seeds, one short epoch each, on a real local Ray with a real SQLite MLflow
store, ending with the `tuning.compare` table and its "Lung-SRAD - AST patch-mix" row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lungsrad.metrics import REPORT_SCORE
from mlflow_tracking.tags import TAG_VARIANT
from mlflow_tracking.uri import sqlite_uri
from tuning.compare import COMPARISON_FILE, main
from tuning.driver import run_sweep
from tuning.search_space import load_search_space
from tuning.settings import DriverSettings

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]

from sweep_helpers import REPO, TINY_BASE, child_runs  # noqa: E402

EXPERIMENT = "test-sweep-backbones"
SHIPPED = REPO / "search_spaces" / "backbones.yaml"


def _tiny_configs(folder: Path, data: Path, cache: Path) -> tuple[Path, Path]:
    """A tiny DASS and a tiny AST run config (no method, random start), on the same data and
    input."""
    dass = json.loads(json.dumps(TINY_BASE))
    dass["data"].update({"root": str(data), "cache_dir": str(cache)})
    dass["train"]["num_epochs"] = 1
    dass["method"] = {"regularization": {"enabled": False}, "patch_mix": {"mode": "none"}}
    # The shipped space requires pretrained weights; tiny twins have none: a random start,
    # asked for explicitly.
    dass["model"]["checkpoint"] = "none"
    ast = json.loads(json.dumps(dass))
    ast["model"] = {"backbone": "ast", "ast_size": "tiny", "checkpoint": "none"}
    paths = (folder / "dass_tiny.yaml", folder / "ast_tiny.yaml")
    for path, values in zip(paths, (dass, ast), strict=True):
        path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def sweep(local_ray, synthetic_root, feature_cache, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep_backbones")
    dass, ast = _tiny_configs(folder, synthetic_root, feature_cache)
    shipped = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    method = {
        "lung_srad": {
            "method.regularization.enabled": True,
            "method.regularization.stage": 1,
            "method.regularization.blocks": "all",
            "method.patch_mix.mode": "dual",
            "method.patch_mix.projection_dim": 16,
        },
        "ast_patchmix": {
            "method.patch_mix.mode": "ast_style",
            "method.patch_mix.projection_dim": 16,
        },
    }
    # The shipped file's variants and settings, each variant on its tiny twin.
    document = {
        **{key: value for key, value in shipped.items() if key not in ("variants", "resources")},
        "name": "backbones_smoke",
        "variants": {
            name: {
                "base": str(ast if name.startswith("ast") else dass),
                "base_overrides": method.get(name, {}),
            }
            for name in shipped["variants"]
        },
        "resources": {"cpu": 1},
        "seeds": [0, 1],
        "max_failures": 1,
    }
    space_path = folder / "backbones_smoke.yaml"
    space_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    space = load_search_space(space_path)
    settings = DriverSettings(
        output_root=folder / "runs",
        storage_path=folder / "runs" / "ray_results",
        tracking_uri=sqlite_uri(folder / "runs" / "mlflow.db"),
        experiment=EXPERIMENT,
        ray_address=None,
    )
    return space, settings, run_sweep(space, settings), folder


def test_every_backbone_variant_trained_on_both_seeds(sweep) -> None:
    space, settings, outcome, _ = sweep
    assert list(space.variants) == ["dass_finetune", "lung_srad", "ast_finetune", "ast_patchmix"]
    assert [space.variants[name].model.backbone for name in space.variants] == [
        "dass",
        "dass",
        "ast",
        "ast",
    ]
    assert len(outcome.outcomes) == 8
    assert all(o.status == "done" for o in outcome.outcomes), outcome.outcomes
    runs = child_runs(settings.tracking_uri, EXPERIMENT, outcome.parent_run_id)
    by_variant: dict[str, int] = {}
    for run in runs:
        assert REPORT_SCORE in run.data.metrics
        by_variant[run.data.tags[TAG_VARIANT]] = by_variant.get(run.data.tags[TAG_VARIANT], 0) + 1
    assert by_variant == {name: 2 for name in space.variants}


def test_compare_prints_lung_srad_minus_ast_patchmix(sweep, capsys) -> None:
    _, settings, _, folder = sweep
    out = folder / "compare"
    argv = ["--experiment", EXPERIMENT, "--tracking-uri", settings.tracking_uri, "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    headline = [
        line for line in printed.splitlines() if line.startswith("| Lung-SRAD - AST patch-mix |")
    ]
    assert len(headline) == 1, printed
    cells = [cell.strip() for cell in headline[0].strip("|").split("|")]
    assert cells[1] == "[0, 1]"  # paired on both seeds
    # Two paired seeds give no interval, by t or by bootstrap, and no verdict (issue 25).
    assert cells[4] == cells[5] == "n=2: no interval"
    assert cells[6] == "unknown (n=2: fewer than 3 paired seeds)"
    assert (out / COMPARISON_FILE).read_text(encoding="utf-8") in printed + "\n"
