"""Inputs a sweep or final must refuse before Ray starts (issue 25): a checkpoint that does not
load into its model, a paper space without pretrained weights, a missing split file, a zip as
--data, a search-space file given to final.py. Each is a real subprocess that must exit 2 with
exactly one stderr line, no traceback, and no Ray started (the driver prints "local Ray at ..."
once it has one). The subprocesses start together; each case checks its own result. In-process
tests cover what needs no process: "none" as an explicit random start, --split-file on every
command, the --help of --data and the note on a relative sqlite URI.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from lungsrad.assets.registry import ASSETS_DIR_VARIABLE
from lungsrad.config import config_from_dict
from lungsrad.data.layout import SPLIT_FILE_NAME
from lungsrad.data.synthetic import write_synthetic_dataset
from lungsrad.models.build import build_model
from tests.cli_errors import assert_one_line_error

REPO = Path(__file__).resolve().parents[2]
SWEEP = str(REPO / "tuning" / "sweep.py")
FINAL = str(REPO / "tuning" / "final.py")
PARALLEL_RUNS = 3
RAY_STARTED = "local Ray at"

TINY = {
    "name": "preflight",
    "data": {"segment_seconds": 1.0, "num_mel_bins": 32},
    "model": {"preset": "custom", "dims": [8, 16], "depths": [1, 1], "scan_backend": "chunked"},
    "method": {"regularization": {"enabled": True, "stage": 1, "blocks": "all"}},
    "train": {"num_epochs": 1, "batch_size": 8, "max_steps_per_epoch": 1, "device": "cpu"},
}


def _tiny(**changes: object) -> dict:
    values = copy.deepcopy(TINY)
    for path, value in changes.items():
        node = values
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return values


def _write(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _space(work: Path, data: Path, name: str, **keys: object) -> Path:
    base = _tiny(**{"data.root": str(data), "data.cache_dir": str(work / "cache")})
    document = {
        "name": name,
        "base_overrides": base,
        "parameters": {"method.patch_mix.alpha": {"grid": [1.0]}},
        "search": "grid",
        "resources": {"cpu": 1},
        **keys,
    }
    return _write(work / f"{name}.yaml", document)


def _sweep(work: Path, space: Path, *extra: str) -> list[str]:
    return [SWEEP, "--space", str(space), "--output-root", str(work / "runs"), *extra]


def _final(work: Path, config: Path, *extra: str) -> list[str]:
    return [FINAL, "--config", str(config), "--gpu", "0", "--output-root", str(work / "runs")] + [
        *extra
    ]


def _wider_dass(work: Path) -> Path:
    path = work / "dass_wider.pth"
    torch.save(build_model(config_from_dict(_tiny(**{"model.dims": [16, 32]}))).state_dict(), path)
    return path


def _tiny_ast(work: Path) -> Path:
    path = work / "ast_tiny.pth"
    config = _tiny(**{"model.backbone": "ast", "model.ast_size": "tiny"})
    del config["method"]
    for key in ("dims", "depths", "preset", "scan_backend"):
        del config["model"][key]
    torch.save(build_model(config_from_dict(config)).state_dict(), path)
    return path


# ---------------------------------------------------------------------------------------------
# Cases: (work folder, clean dataset) -> argv after python


def sweep_text_checkpoint(work: Path, data: Path) -> list[str]:
    text = work / "weights.pth"
    text.write_text("these are not weights\n")
    return _sweep(work, _space(work, data, "text_ckpt"), "--set", f"model.checkpoint={text}")


def sweep_wrong_size_checkpoint(work: Path, data: Path) -> list[str]:
    space = _space(work, data, "wrong_size")
    return _sweep(work, space, "--set", f"model.checkpoint={_wider_dass(work)}")


def sweep_other_backbone_checkpoint(work: Path, data: Path) -> list[str]:
    space = _space(work, data, "other_backbone")
    return _sweep(work, space, "--set", f"model.checkpoint={_tiny_ast(work)}")


def sweep_checkpoint_as_value(work: Path, data: Path) -> list[str]:
    good = work / "good.pth"
    torch.save(build_model(config_from_dict(_tiny())).state_dict(), good)
    parameters = {"model.checkpoint": {"grid": [str(good), str(_wider_dass(work))]}}
    return _sweep(work, _space(work, data, "ckpt_value", parameters=parameters))


def sweep_paper_space_without_checkpoint(work: Path, data: Path) -> list[str]:
    space = REPO / "search_spaces" / "paper_fig3.yaml"
    return _sweep(work, space, "--data", str(data), "--set", "model.checkpoint=null")


def sweep_paper_space_checkpoint_missing(work: Path, data: Path) -> list[str]:
    # The space names the authors' file by its fetch name; the assets folder is empty.
    return _sweep(work, REPO / "search_spaces" / "paper_fig3.yaml", "--data", str(data))


def sweep_variant_without_checkpoint(work: Path, data: Path) -> list[str]:
    return _sweep(work, _space(work, data, "needs_weights", requires_pretrained=True))


def _without_split_file(work: Path, data: Path) -> Path:
    import shutil

    folder = work / "no_split"
    shutil.copytree(data, folder)
    (folder / SPLIT_FILE_NAME).unlink()
    return folder


def sweep_missing_split_file(work: Path, data: Path) -> list[str]:
    return _sweep(work, _space(work, _without_split_file(work, data), "no_split"))


def sweep_zip_as_data(work: Path, data: Path) -> list[str]:
    import shutil

    archive = shutil.make_archive(str(work / "ICBHI_final_database"), "zip", data)
    return _sweep(work, _space(work, data, "zipped"), "--data", archive)


def final_wrong_size_checkpoint(work: Path, data: Path) -> list[str]:
    config = _write(
        work / "final_wrong.yaml",
        _tiny(**{"data.root": str(data), "model.checkpoint": str(_wider_dass(work))}),
    )
    return _final(work, config)


def final_missing_split_file(work: Path, data: Path) -> list[str]:
    config = _write(work / "final_no_split.yaml", _tiny())
    return _final(work, config, "--data", str(_without_split_file(work, data)))


def final_given_a_search_space(work: Path, data: Path) -> list[str]:
    return _final(work, REPO / "search_spaces" / "smoke.yaml")


def train_zip_as_data(work: Path, data: Path) -> list[str]:
    import shutil

    archive = shutil.make_archive(str(work / "ICBHI_final_database"), "zip", data)
    config = _write(work / "train.yaml", _tiny())
    return ["-m", "lungsrad", "train", "--config", str(config), "--data", archive] + [
        "--out",
        str(work / "out"),
    ]


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path, Path], list[str]]
    culprit: str  # regex the one stderr line must match


CASES = [
    Case("sweep: text file as checkpoint", sweep_text_checkpoint, r"weights\.pth: not a PyTorch"),
    Case(
        "sweep: DASS checkpoint of another size",
        sweep_wrong_size_checkpoint,
        r"wrong_size\.yaml: model\.checkpoint .*dass_wider\.pth: checkpoint does not match .*"
        r"mis-shaped",
    ),
    Case(
        "sweep: AST checkpoint for a DASS",
        sweep_other_backbone_checkpoint,
        r"ast_tiny\.pth: this is an AST checkpoint, not a DASS one",
    ),
    Case(
        "sweep: bad checkpoint as a search-space value",
        sweep_checkpoint_as_value,
        r"ckpt_value\.yaml: .*dass_wider\.pth: checkpoint does not match",
    ),
    Case(
        "sweep: paper_fig3.yaml without a checkpoint",
        sweep_paper_space_without_checkpoint,
        r"paper_fig3\.yaml: requires_pretrained is true but its base config names no "
        r"model\.checkpoint .*--set model\.checkpoint=PATH.*'none'",
    ),
    Case(
        "sweep: paper_fig3.yaml, the authors' checkpoint not fetched",
        sweep_paper_space_checkpoint_missing,
        r"paper_fig3\.yaml:\d+: base: model\.checkpoint: fetch:dass-medium-v2 is not fetched "
        r"into .*assets; run `lungsrad fetch dass-medium-v2`.*--set model\.checkpoint=PATH.*'none'",
    ),
    Case(
        "sweep: requires_pretrained space without a checkpoint",
        sweep_variant_without_checkpoint,
        r"needs_weights\.yaml: requires_pretrained is true",
    ),
    Case(
        "sweep: split file missing",
        sweep_missing_split_file,
        rf"{SPLIT_FILE_NAME}: split file not found; pass --split-file \(CLI\) or set "
        r"data\.split_file",
    ),
    Case(
        "sweep: zip as --data",
        sweep_zip_as_data,
        r"--data .*ICBHI_final_database\.zip is a file, not a folder: it is a zip archive; "
        r"unzip it",
    ),
    Case(
        "final: DASS checkpoint of another size",
        final_wrong_size_checkpoint,
        r"final_wrong\.yaml: model\.checkpoint .*dass_wider\.pth: checkpoint does not match",
    ),
    Case(
        "final: split file missing",
        final_missing_split_file,
        r"split file not found; pass --split-file \(CLI\) or set data\.split_file",
    ),
    Case(
        "final: a search-space file as --config",
        final_given_a_search_space,
        r"smoke\.yaml is a search-space file, not a run config: run it with "
        r"python tuning/sweep\.py --space .*smoke\.yaml",
    ),
    Case(
        "train: zip as --data",
        train_zip_as_data,
        r"ICBHI_final_database\.zip: it is a zip archive; unzip it",
    ),
]


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clean_data")
    write_synthetic_dataset(folder, num_recordings=8, seed=0)
    return folder


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory, clean_data: Path
) -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    futures = {}
    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        for index, case in enumerate(CASES):
            work = tmp_path_factory.mktemp(f"preflight{index}")
            argv = [sys.executable, *case.build(work, clean_data)]
            # An empty assets folder: no `fetch:` name resolves unless a case fetches it.
            env = {**os.environ, ASSETS_DIR_VARIABLE: str(work / "assets")}
            futures[case.name] = pool.submit(
                subprocess.run,
                argv,
                capture_output=True,
                text=True,
                cwd=work,
                env=env,
                timeout=180,
            )
        yield futures


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_refused_before_ray_in_one_line(
    case: Case, results: dict[str, Future[subprocess.CompletedProcess[str]]]
) -> None:
    completed = results[case.name].result()
    report = (
        f"exit {completed.returncode}\nstderr:\n{completed.stderr}\nstdout:\n{completed.stdout}"
    )
    assert "Traceback" not in completed.stderr, report
    assert_one_line_error(completed, pattern=case.culprit)
    assert RAY_STARTED not in completed.stdout, report


# ---------------------------------------------------------------------------------------------
# In-process


def test_none_checkpoint_is_an_explicit_random_start(tmp_path: Path, clean_data: Path) -> None:
    from tuning.preflight import check_space_inputs
    from tuning.search_space import load_search_space

    model = build_model(config_from_dict(_tiny(**{"model.checkpoint": "none"})))
    assert model is not None
    space_path = _space(tmp_path, clean_data, "random_on_purpose", requires_pretrained=True)
    space = load_search_space(space_path, overrides={"model.checkpoint": "none"})
    check_space_inputs(space)  # passes: a random start asked for explicitly
    with pytest.raises(FileNotFoundError, match="set it to 'none' to train from a random"):
        build_model(config_from_dict(_tiny(**{"model.checkpoint": str(tmp_path / "no.pth")})))


def test_smoke_space_needs_no_checkpoint() -> None:
    from tuning.preflight import check_space_inputs
    from tuning.search_space import load_search_space

    space = load_search_space(REPO / "search_spaces" / "smoke.yaml")
    assert not space.requires_pretrained
    check_space_inputs(space)


@pytest.mark.parametrize(
    "name", ["paper_fig3", "table2", "lung_srad_tpe", "foldwise_cv", "backbones"]
)
def test_paper_spaces_require_pretrained_weights(name: str) -> None:
    import yaml as pyyaml

    document = pyyaml.safe_load((REPO / "search_spaces" / f"{name}.yaml").read_text())
    assert document["requires_pretrained"] is True


def test_split_file_flag_reaches_every_command(tmp_path: Path, clean_data: Path) -> None:
    """sweep.py, final.py and `lungsrad train` take --split-file; the data then checks out."""
    from tuning import final, sweep
    from tuning.preflight import check_space_inputs
    from tuning.search_space import load_search_space

    folder = _without_split_file(tmp_path, clean_data)
    split = tmp_path / "downloaded" / SPLIT_FILE_NAME
    split.parent.mkdir()
    split.write_bytes((clean_data / SPLIT_FILE_NAME).read_bytes())
    space_path = _space(tmp_path, folder, "split_flag")

    args = sweep.build_parser().parse_args(["--space", str(space_path), "--split-file", str(split)])
    space = load_search_space(space_path, overrides=sweep.flag_overrides(args))
    assert space.base_config.data.split_file == str(split)
    check_space_inputs(space)

    config = _write(tmp_path / "final.yaml", _tiny(**{"data.root": str(folder)}))
    args = final.build_parser().parse_args(["--config", str(config), "--split-file", str(split)])
    final_space = final.final_space(
        config,
        seeds=[0],
        resources=final.ResourceSpec(cpu=1),
        data_root=None,
        overrides=sweep.flag_overrides(args),
    )
    check_space_inputs(final_space)

    train_config = _write(tmp_path / "train.yaml", _tiny())
    completed = subprocess.run(
        [sys.executable, "-m", "lungsrad", "train", "--config", str(train_config)]
        + ["--data", str(folder), "--split-file", str(split), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_help_of_data_says_the_flag_wins() -> None:
    from lungsrad.cli import build_parser as lungsrad_parser
    from tuning import final, sweep

    train = lungsrad_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    for parser in (sweep.build_parser(), final.build_parser(), train):
        text = " ".join(parser.format_help().split())
        assert "wins over the config's data.root" in text, text
        assert "--split-file" in text


def test_relative_sqlite_uri_gets_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tuning import settings, sweep

    monkeypatch.chdir(tmp_path)
    args = sweep.build_parser().parse_args(
        ["--space", "x.yaml", "--tracking-uri", "sqlite:///runs/x.db"]
    )
    settings.make_settings(args, experiment="e", role="sweep")
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        f"note: tracking URI 'sqlite:///runs/x.db' is relative to the current folder: "
        f"{tmp_path / 'runs' / 'x.db'}; an absolute path takes four slashes: "
        f"sqlite:///{tmp_path / 'runs' / 'x.db'}"
    ]
    assert settings.relative_sqlite_note(f"sqlite:///{tmp_path}/x.db") is None
