"""Final training: `python tuning/final.py --config best_config.yaml --seeds 0 1 2 3 4` trains the
seeds as parallel Ray trials under one MLflow parent run and prints a Table-1 style summary (Sp,
Se, Score, 4-class and 2-class: mean, std and 95 % Student-t interval over seeds, and per
recording device). `--folds 0 1 2 3 4` trains seeds x RespireNet folds (protocol 'foldwise') and
adds the mean over folds with its interval. Compare finals of several configs, paired by seed (and
fold), with `python -m tuning.compare`.
"""

from __future__ import annotations

from tuning.results import read_selection_record, table1_markdown, table1_metrics

if __package__ in (None, ""):
    import _repo_path  # noqa: F401  # run as a file: the repository root becomes importable

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lungsrad.config import ExperimentConfig, apply_overrides, load_config
from lungsrad.errors import UserError
from lungsrad.files import write_text_atomic
from lungsrad.metrics import SELECTION_SCORE
from lungsrad.schema import read_yaml_file
from mlflow_tracking.run_writer import RunTracker
from tuning.cluster import ClusterInfo, connect, disconnect
from tuning.driver import run_sweep
from tuning.folds import (
    FOLD_PATH,
    device_markdown,
    fold_and_device_metrics,
    fold_parameter,
    folds_markdown,
)
from tuning.preflight import check_space_inputs
from tuning.presentation import SweepOutcome, print_outcome
from tuning.search_space import BASE_POINT, Parameter, ResourceSpec, SchedulerSpec, SearchSpace
from tuning.settings import (
    data_root_for,
    default_output_root,
    make_settings,
    open_tracking,
    synthetic_data_folder,
)
from tuning.sweep import (
    EXIT_NO_RESULT,
    add_common_arguments,
    command_argv,
    flag_overrides,
    invoked_script,
    run_command,
)

TABLE1_FILE = "table1.md"


def final_space(
    config_path: str | Path,
    *,
    seeds: Sequence[int],
    resources: ResourceSpec,
    data_root: Path | None,
    max_failures: int = 2,
    folds: Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SearchSpace:
    """A seeds-only search space around one config file (no parameters, grid over seeds); with
    `folds`, also a grid over data.fold under train.protocol 'foldwise' (seeds x folds).
    `overrides` (--set, --split-file) are applied over the file; the space requires a pretrained
    checkpoint when the file is the export of a sweep that did (its selection record says so).

    Raises:
        FileNotFoundError / ValueError: missing file, bad config, or a config_version written
            by another version of the code (one line naming the file).
    """
    path = Path(config_path)
    config = load_run_config(path)
    if data_root is not None:
        config = apply_overrides(config, {"data.root": str(data_root)})
    if overrides:
        config = apply_overrides(config, overrides)
    if not seeds or len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
        raise UserError(f"--seeds must be distinct integers >= 0, got {list(seeds)}")
    parameters: tuple[Parameter, ...] = ()
    if folds:
        parameters = (fold_parameter(folds),)
        config = apply_overrides(
            config, {"train.protocol": "foldwise", FOLD_PATH: parameters[0].values[0]}
        )
    return SearchSpace(
        name=f"final-{config.name}",
        path=path.resolve(),
        text=path.read_text(encoding="utf-8"),
        variants={BASE_POINT: config},
        parameters=parameters,
        search="grid",
        search_seed=0,
        scheduler=SchedulerSpec(),
        num_samples=1,
        max_concurrent_trials=None,
        resources=resources,
        seeds=tuple(seeds),
        protocol=config.train.protocol,
        metric=SELECTION_SCORE,
        mode="max",
        max_failures=max_failures,
        requires_pretrained=_exported_requiring_pretrained(path),
    )


# Keys only a search-space file has (search_spaces/README.md), never a run config.
_SPACE_KEYS = frozenset({"parameters", "base", "base_overrides", "variants", "search", "seeds"})


def load_run_config(path: Path) -> ExperimentConfig:
    """load_config, refusing a search-space file in one line that says how to run it."""
    _, document = read_yaml_file(path, what="config file")
    if isinstance(document, Mapping) and _SPACE_KEYS & set(document):
        raise UserError(
            f"{path} is a search-space file, not a run config: run it with "
            f"python tuning/sweep.py --space {path}; final.py --config takes a run config "
            "(a sweep's best_config.yaml, or configs/*.yaml)"
        )
    return load_config(path)


def _exported_requiring_pretrained(path: Path) -> bool:
    """True when `path` is a best_config.yaml of a sweep whose space has requires_pretrained."""
    try:
        return bool(read_selection_record(path).get("requires_pretrained"))
    except (UserError, ValueError):
        return False


def build_parser() -> argparse.ArgumentParser:
    """The final.py argument parser."""
    parser = argparse.ArgumentParser(
        prog="tuning/final.py",
        description="Train one config on several seeds (parallel Ray trials) and summarise.",
    )
    parser.add_argument(
        "--config", required=True, help="run config, e.g. a sweep's best_config.yaml"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="train.seed values"
    )
    parser.add_argument(
        "--folds",
        type=int,
        nargs="+",
        default=None,
        help="RespireNet test folds (0-4): train seeds x folds under protocol 'foldwise'",
    )
    parser.add_argument("--cpu", type=float, default=1.0, help="CPUs per seed run")
    parser.add_argument(
        "--gpu",
        type=float,
        default=None,
        help="GPUs per seed run, fractions allowed (default: 1 when the cluster has GPUs, else 0)",
    )
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a failed seed run")
    add_common_arguments(parser)
    return parser


def _gpu_per_run(requested: float | None, cluster: ClusterInfo | None) -> float:
    if requested is not None:
        if requested < 0:
            raise UserError(f"--gpu must be >= 0, got {requested}")
        return requested
    assert cluster is not None
    return 1.0 if cluster.total_gpus >= 1 else 0.0


def compare_command(outcome: SweepOutcome) -> str:
    """The tuning.compare command for this final, on the store it logged to."""
    return (
        f"python -m tuning.compare --tracking-uri {outcome.tracking.display_uri} "
        f"--parent-run-id {outcome.parent_run_id} OTHER_PARENT_RUN_ID ..."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of tuning/final.py."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        root = default_output_root(args.output_root)
        config = load_run_config(Path(args.config))
        data_root = data_root_for([config], args.data, root)
        if args.cpu <= 0:
            raise UserError(f"--cpu must be > 0, got {args.cpu}")
        settings = make_settings(args, experiment=f"lungsrad-final-{config.name}", role="final")
        open_tracking(settings)  # a bad tracking URI fails here, before Ray starts
        space = final_space(
            args.config,
            seeds=args.seeds,
            resources=ResourceSpec(cpu=args.cpu, gpu=_gpu_per_run(args.gpu or 0.0, None)),
            data_root=data_root,
            max_failures=args.max_failures,
            folds=args.folds,
            overrides=flag_overrides(args),
        )
        weights = check_space_inputs(space, generated_data=synthetic_data_folder(settings))
        # Without --gpu the cluster decides (one GPU per seed run when it has GPUs), so Ray is
        # joined first; run_sweep then reuses the connection.
        cluster = connect(args.ray_address) if args.gpu is None else None
        try:
            resources = ResourceSpec(cpu=args.cpu, gpu=_gpu_per_run(args.gpu, cluster))
            space = dataclasses.replace(space, resources=resources)
            outcome = run_sweep(
                space, settings, export_best=False, check_inputs=False, initial_weights=weights
            )
        finally:
            if cluster is not None:
                disconnect(cluster)
        title = f"Final '{config.name}' ({space.protocol} protocol), seeds {list(space.seeds)}"
        if args.folds:
            title += f", folds {list(args.folds)}"
        table = table1_markdown(outcome.outcomes, title=title)
        table += folds_markdown(outcome.outcomes) + device_markdown(outcome.outcomes)
        write_text_atomic(outcome.folder / TABLE1_FILE, table)
        parent = RunTracker(outcome.tracking, run_id=outcome.parent_run_id)
        parent.log_text(table, TABLE1_FILE)
        parent.log_metrics(table1_metrics(outcome.outcomes), step=0)
        parent.log_metrics(fold_and_device_metrics(outcome.outcomes), step=0)
        parent.finish("FINISHED" if outcome.best is not None else "FAILED")
        print_outcome(outcome, role="final training")
        print(f"table: {outcome.folder / TABLE1_FILE}\n")
        print(table)
        print(f"compare with other finals on the same seeds: {compare_command(outcome)}")
        return 0 if outcome.best is not None else EXIT_NO_RESULT

    return run_command(
        body, args.tracking_uri, script=invoked_script("tuning/final.py"), argv=command_argv(argv)
    )


if __name__ == "__main__":
    sys.exit(main())
