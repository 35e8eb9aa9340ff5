"""Bad inputs across the four command lines (issue 6): each case is a real subprocess that must
exit 2 with exactly one stderr line naming the culprit, and no traceback.

Cases already checked in-process live in tests/tuning/test_search_space.py (BAD_CASES,
test_cli_refuses_a_bad_space_in_one_line, test_cli_stops_before_ray_when_the_tracking_uri_is_bad,
test_cli_resume_without_an_earlier_sweep) and tests/lungsrad/test_cli_train.py; this table runs
every CLI end to end. The subprocesses start together (most of their time is imports) and each
parametrized case checks its own result.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from lungsrad.data.synthetic import write_synthetic_dataset
from tests.cli_errors import assert_one_line_error

REPO = Path(__file__).resolve().parents[2]
SWEEP = str(REPO / "tuning" / "sweep.py")
FINAL = str(REPO / "tuning" / "final.py")
LUNGSRAD = ("-m", "lungsrad")
RECORDING = "101_1b1_Pl_sc_AKGC417L"  # first recording of write_synthetic_dataset(seed=0)
SPLIT_FILE = "ICBHI_challenge_train_test.txt"
PARALLEL_RUNS = 3

TINY_CONFIG = {
    "name": "bad_inputs",
    "data": {"segment_seconds": 1.0, "num_mel_bins": 32},
    "model": {"preset": "custom", "dims": [8, 16], "depths": [1, 1], "scan_backend": "chunked"},
    "method": {
        "regularization": {"enabled": True, "stage": 1, "blocks": "all"},
        "patch_mix": {"mode": "dual", "projection_dim": 16},
    },
    "train": {
        "num_epochs": 1,
        "batch_size": 8,
        "max_steps_per_epoch": 1,
        "time_mask": 10,
        "freq_mask": 8,
        "device": "cpu",
        "num_threads": 1,
    },
}
SPACE_BASE = "base_overrides: {model: {preset: custom, dims: [8, 16], depths: [1, 1]}}\n"


@dataclass(frozen=True)
class Case:
    """One bad input: how to build it in a work folder, the command, the culprit's regex."""

    name: str
    build: Callable[[Path, Path], list[str]]  # (work folder, clean dataset) -> argv after python
    culprit: str  # regex that the single stderr line must match
    marks: tuple = ()


# ---------------------------------------------------------------------------------------------
# Input builders


def _dataset_copy(work: Path, clean: Path, name: str) -> Path:
    folder = work / name
    shutil.copytree(clean, folder)
    return folder


def _write_config(work: Path, name: str, **changes: object) -> Path:
    values = copy.deepcopy(TINY_CONFIG)
    values["data"]["cache_dir"] = str(work / "cache" / name)
    for path, value in changes.items():
        node = values
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    config = work / f"{name}.yaml"
    config.write_text(yaml.safe_dump(values), encoding="utf-8")
    return config


def _train(work: Path, config: Path, data: Path, name: str) -> list[str]:
    return [*LUNGSRAD, "train", "--config", str(config), "--data", str(data)] + [
        "--out",
        str(work / "out" / name),
    ]


def _train_on(mutate: Callable[[Path], None]) -> Callable[[Path, Path], list[str]]:
    """`lungsrad train` on a copy of the clean dataset changed by `mutate(folder)`."""

    def build(work: Path, clean: Path) -> list[str]:
        name = mutate.__name__
        folder = _dataset_copy(work, clean, name)
        mutate(folder)
        return _train(work, _write_config(work, name), folder, name)

    return build


def corrupt_wav(folder: Path) -> None:
    (folder / f"{RECORDING}.wav").write_bytes(b"RIFF but not really a wav file" * 8)


def nan_wav(folder: Path) -> None:
    wav = folder / f"{RECORDING}.wav"
    audio, rate = soundfile.read(wav, dtype="float32")
    audio[100] = np.nan
    soundfile.write(wav, audio, rate, subtype="FLOAT")


def stereo_wav(folder: Path) -> None:
    wav = folder / f"{RECORDING}.wav"
    audio, rate = soundfile.read(wav)
    soundfile.write(wav, np.stack([audio, audio], axis=1), rate)


def _append_annotation(folder: Path, line: str, *, first: bool = False) -> None:
    annotation = folder / f"{RECORDING}.txt"
    text = annotation.read_text(encoding="utf-8")
    annotation.write_text(line + text if first else text + line, encoding="utf-8")


def three_fields(folder: Path) -> None:
    _append_annotation(folder, "1.0\t2.0\t0\n")


def negative_time(folder: Path) -> None:
    _append_annotation(folder, "-1.0\t2.0\t0\t0\n", first=True)


def reversed_times(folder: Path) -> None:
    _append_annotation(folder, "5.0\t2.0\t0\t0\n", first=True)


def past_the_end(folder: Path) -> None:
    _append_annotation(folder, "9000.0\t9001.0\t0\t0\n")


def split_without_files(folder: Path) -> None:
    split = folder / SPLIT_FILE
    split.write_text(split.read_text() + "999_1b1_Tc_sc_Meditron\ttrain\n", encoding="utf-8")


def inspect_missing(work: Path, clean: Path) -> list[str]:
    return [*LUNGSRAD, "data", "inspect", str(work / "no_such_folder")]


def inspect_empty(work: Path, clean: Path) -> list[str]:
    (work / "empty_folder").mkdir()
    return [*LUNGSRAD, "data", "inspect", str(work / "empty_folder")]


def inspect_corrupt(work: Path, clean: Path) -> list[str]:
    folder = _dataset_copy(work, clean, "inspect_corrupt")
    corrupt_wav(folder)
    return [*LUNGSRAD, "data", "inspect", str(folder)]


def train_missing_data(work: Path, clean: Path) -> list[str]:
    return _train(work, _write_config(work, "missing"), work / "no_data_here", "missing")


def unknown_config_key(work: Path, clean: Path) -> list[str]:
    config = _write_config(work, "unknown_key", **{"train.learnig_rate": 0.1})
    return _train(work, config, clean, "unknown_key")


def wrong_type(work: Path, clean: Path) -> list[str]:
    config = _write_config(work, "wrong_type", **{"train.batch_size": "eight"})
    return _train(work, config, clean, "wrong_type")


def checkpoint_wrong_shapes(work: Path, clean: Path) -> list[str]:
    from lungsrad.config import config_from_dict
    from lungsrad.models.build import build_model

    wider = copy.deepcopy(TINY_CONFIG)
    wider["model"]["dims"] = [16, 32]
    checkpoint = work / "dass_wider.pth"
    torch.save(build_model(config_from_dict(wider)).state_dict(), checkpoint)
    config = _write_config(work, "wrong_shapes", **{"model.checkpoint": str(checkpoint)})
    return _train(work, config, clean, "wrong_shapes")


def checkpoint_not_state_dict(work: Path, clean: Path) -> list[str]:
    checkpoint = work / "a_list.pth"
    torch.save([1, 2, 3], checkpoint)
    config = _write_config(work, "not_state_dict", **{"model.checkpoint": str(checkpoint)})
    return _train(work, config, clean, "not_state_dict")


def _space(work: Path, name: str, body: str) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(f"name: {name}\n{SPACE_BASE}{body}", encoding="utf-8")
    return path


def _sweep(work: Path, space: Path, *extra: str) -> list[str]:
    return [SWEEP, "--space", str(space), "--output-root", str(work / "runs"), *extra]


def space_unknown_path(work: Path, clean: Path) -> list[str]:
    body = "parameters:\n  method.patch_mix.temprature: {choice: [0.1]}\n"
    return _sweep(work, _space(work, "unknown_path", body))


def space_reversed_bounds(work: Path, clean: Path) -> list[str]:
    body = "parameters:\n  method.regularization.sigma: {uniform: [2.0, 0.5]}\n"
    return _sweep(work, _space(work, "reversed_bounds", body))


def space_loguniform_zero(work: Path, clean: Path) -> list[str]:
    body = "parameters:\n  method.patch_mix.temperature: {loguniform: [0, 0.5]}\n"
    return _sweep(work, _space(work, "loguniform_zero", body))


def space_unknown_key(work: Path, clean: Path) -> list[str]:
    body = "parameters:\n  method.patch_mix.alpha: {choice: [1.0]}\nnum_sample: 3\n"
    return _sweep(work, _space(work, "unknown_top_key", body))


def space_too_many_gpus(work: Path, clean: Path) -> list[str]:
    body = (
        f"base_overrides: {{data: {{root: {clean}, cache_dir: {work / 'cache' / 'gpus'}}}, "
        "model: {preset: custom, dims: [8, 16], depths: [1, 1]}}\n"
        "parameters:\n  method.patch_mix.alpha: {choice: [1.0]}\nresources: {cpu: 1, gpu: 4}\n"
    )
    path = work / "too_many_gpus.yaml"
    path.write_text(f"name: too_many_gpus\n{body}", encoding="utf-8")
    return _sweep(work, path)


def sweep_resume_without_sweep(work: Path, clean: Path) -> list[str]:
    body = "parameters:\n  method.patch_mix.alpha: {choice: [1.0]}\n"
    return _sweep(work, _space(work, "never_ran", body), "--resume")


def sweep_tracking_uri_typo(work: Path, clean: Path) -> list[str]:
    body = "parameters:\n  method.patch_mix.alpha: {choice: [1.0]}\n"
    space = _space(work, "uri_typo", body)
    return _sweep(work, space, "--tracking-uri", f"sqlit:///{work}/x.db")


def final_other_code_version(work: Path, clean: Path) -> list[str]:
    config = _write_config(work, "version_999", config_version=999)
    return [FINAL, "--config", str(config), "--gpu", "0", "--output-root", str(work / "runs")]


def final_tracking_unreachable(work: Path, clean: Path) -> list[str]:
    config = _write_config(work, "final_ok")
    return [FINAL, "--config", str(config), "--data", str(clean), "--gpu", "0"] + [
        "--output-root",
        str(work / "runs"),
        "--tracking-uri",
        "http://user:hunter2@127.0.0.1:1",
    ]


def final_missing_config(work: Path, clean: Path) -> list[str]:
    return [FINAL, "--config", str(work / "best_config_nowhere.yaml"), "--gpu", "0"]


CASES = [
    Case("inspect: missing folder", inspect_missing, r"not found: .*no_such_folder"),
    Case("inspect: empty folder", inspect_empty, r"no recordings in .*empty_folder"),
    Case(
        "inspect: corrupt wav",
        inspect_corrupt,
        rf"{RECORDING}\.wav",
    ),
    Case("train: missing data folder", train_missing_data, r"no_data_here"),
    Case("train: corrupt wav", _train_on(corrupt_wav), rf"{RECORDING}\.wav: unreadable wav"),
    Case(
        "train: wav with NaN",
        _train_on(nan_wav),
        rf"{RECORDING}\.wav: holds NaN",
    ),
    Case("train: stereo wav", _train_on(stereo_wav), rf"{RECORDING}\.wav: has 2 channels"),
    Case(
        "train: annotation with three fields",
        _train_on(three_fields),
        rf"{RECORDING}\.txt:\d+: expected 4 fields",
    ),
    Case(
        "train: negative cycle start",
        _train_on(negative_time),
        rf"{RECORDING}\.txt:1: cycle starts before the recording",
    ),
    Case(
        "train: reversed cycle times",
        _train_on(reversed_times),
        rf"{RECORDING}\.txt:1: reversed cycle",
    ),
    Case(
        "train: cycle past the recording end",
        _train_on(past_the_end),
        rf"{RECORDING}\.txt:\d+: cycle starts at 9000 s, at or after the recording end",
    ),
    Case(
        "train: split entry without files",
        _train_on(split_without_files),
        rf"{SPLIT_FILE}:\d+: split entry without files: .*999_1b1_Tc_sc_Meditron",
    ),
    Case(
        "train: unknown config key",
        unknown_config_key,
        r"unknown_key\.yaml: unknown config key 'train\.learnig_rate'",
    ),
    Case(
        "train: wrong type",
        wrong_type,
        r"wrong_type\.yaml: config key 'train\.batch_size' must be an integer",
    ),
    Case(
        "train: DASS checkpoint with wrong shapes",
        checkpoint_wrong_shapes,
        r"dass_wider\.pth: .*(shape|size)",
    ),
    Case(
        "train: checkpoint not a state dict",
        checkpoint_not_state_dict,
        r"a_list\.pth: not a state dict",
    ),
    Case(
        "sweep: unknown search-space path",
        space_unknown_path,
        r"unknown_path\.yaml:\d+: .*unknown config path 'method\.patch_mix\.temprature'",
    ),
    Case(
        "sweep: reversed domain bounds",
        space_reversed_bounds,
        r"reversed_bounds\.yaml:\d+: .*'method\.regularization\.sigma'.*low < high",
    ),
    Case(
        "sweep: loguniform with a non-positive bound",
        space_loguniform_zero,
        r"loguniform_zero\.yaml:\d+: .*'method\.patch_mix\.temperature'.*loguniform needs low > 0",
    ),
    Case(
        "sweep: unknown search-space key",
        space_unknown_key,
        r"unknown_top_key\.yaml.*num_sample",
    ),
    Case(
        "sweep: more GPUs than the cluster has",
        space_too_many_gpus,
        r"resources\.gpu asks for 4 GPUs",
    ),
    Case(
        "sweep: --resume with no previous sweep",
        sweep_resume_without_sweep,
        r"--resume: no earlier sweep 'never_ran'",
    ),
    Case(
        "sweep: tracking URI with a typo",
        sweep_tracking_uri_typo,
        r"'sqlit:///.*x\.db' has unsupported scheme 'sqlit'",
    ),
    Case(
        "final: best config from another code version",
        final_other_code_version,
        r"version_999\.yaml: config_version is 999",
    ),
    Case(
        "final: tracking server unreachable",
        final_tracking_unreachable,
        r"'http://\*\*\*@127\.0\.0\.1:1' is not reachable",
    ),
    Case("final: missing best config", final_missing_config, r"best_config_nowhere\.yaml"),
]


def _is_skipped(case: Case) -> bool:
    return any(getattr(mark, "name", "") == "skip" for mark in case.marks)


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """Builds every case's input and starts all subprocesses (a few at a time)."""
    clean = tmp_path_factory.mktemp("clean_data")
    write_synthetic_dataset(clean, num_recordings=8, seed=0)
    futures = {}
    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        for index, case in enumerate(CASES):
            if _is_skipped(case):
                continue
            work = tmp_path_factory.mktemp(f"case{index}")
            argv = [sys.executable, *case.build(work, clean)]
            futures[case.name] = pool.submit(
                subprocess.run, argv, capture_output=True, text=True, cwd=work, timeout=180
            )
        yield futures


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=c.marks) for c in CASES])
def test_bad_input_exits_2_in_one_line_naming_the_culprit(
    case: Case, results: dict[str, Future[subprocess.CompletedProcess[str]]]
) -> None:
    completed = results[case.name].result()
    report = (
        f"exit {completed.returncode}\nstderr:\n{completed.stderr}\nstdout:\n{completed.stdout}"
    )
    assert "Traceback" not in completed.stderr, report
    assert_one_line_error(completed, pattern=case.culprit)
    assert "hunter2" not in completed.stderr + completed.stdout
