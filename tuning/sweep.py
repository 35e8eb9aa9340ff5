"""Sweep driver: `python tuning/sweep.py --space search_spaces/NAME.yaml`, locally or as the
entrypoint of `ray job submit --working-dir . -- python tuning/sweep.py ...`.

Validates the search space, checks MLflow, prepares data and the shared feature set, then runs a
Ray Tune experiment (Optuna TPE / grid / one-at-a-time, optional ASHA) whose trials are
`tuning.trainable.train_trial`; at the end exports best_config.yaml and a summary. This file is
the command line; tuning.driver runs the sweep.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import _repo_path  # noqa: F401  # run as a file: the repository root becomes importable

import argparse
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from lungsrad.config import parse_override
from lungsrad.errors import run_cli
from mlflow_tracking.uri import redact_text
from tuning.interrupts import SweepInterrupted, catch_interrupts, resume_command
from tuning.presentation import print_outcome
from tuning.search_space import checkpoints_unchecked, load_search_space
from tuning.settings import data_root_for, default_output_root, make_settings

EXIT_NO_RESULT = 1


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by sweep.py and final.py."""
    parser.add_argument(
        "--data",
        default=None,
        help="ICBHI_final_database folder (unzipped) or fetch:icbhi; wins over the config's "
        "data.root (default: data.root, else synthetic data generated under OUTPUT_ROOT)",
    )
    parser.add_argument(
        "--split-file",
        default=None,
        metavar="PATH",
        help="official split file ICBHI_challenge_train_test.txt; wins over data.split_file "
        "(default: data.split_file, else the file of that name in the data folder)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="set a config key on every base config, e.g. model.checkpoint=/abs/DASS_small.pth "
        "(repeatable; wins over the file)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="SWEEP_ID",
        help="continue an interrupted run of this command (finished trials are kept); SWEEP_ID "
        "(printed at its start and when it stops, in its sweep.json) is needed when the storage "
        "path holds several",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:////ABS/OUTPUT_ROOT/mlflow.db; a sqlite path after three slashes is relative)",
    )
    parser.add_argument("--experiment", default=None, help="MLflow experiment name")
    parser.add_argument(
        "--storage-path",
        default=None,
        help="Ray Tune storage folder, shared by all nodes (default: OUTPUT_ROOT/ray_results)",
    )
    parser.add_argument(
        "--output-root",
        default=None,
        help="folder for mlflow.db, synthetic data and results (default: ./runs; in a Ray job "
        "~/lungsrad_runs)",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, else start a local Ray on 127.0.0.1)",
    )


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from --set KEY=VALUE (YAML values) and --split-file (absolute)."""
    overrides: dict[str, Any] = dict(parse_override(item) for item in args.set or [])
    if args.split_file is not None:
        path = Path(args.split_file).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"--split-file not found: {path}")
        overrides["data.split_file"] = str(path)
    return overrides


def build_parser() -> argparse.ArgumentParser:
    """The sweep.py argument parser."""
    parser = argparse.ArgumentParser(
        prog="tuning/sweep.py", description="Run a Lung-SRAD hyper-parameter sweep on Ray Tune."
    )
    parser.add_argument("--space", required=True, help="search-space YAML (search_spaces/*.yaml)")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print the trials, resources, epochs and estimated device and wall time, then exit "
        "0 without starting Ray or writing anything (docs/sweeps.md, 'Planning a sweep')",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="--plan, estimated from a few training steps timed here instead of an earlier sweep",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--optuna-storage",
        default=None,
        metavar="URL",
        help="RDB storage of a TPE sweep's Optuna study, e.g. postgresql://USER:PASSWORD@HOST/DB "
        "(default: sqlite:////ABS/OUTPUT_ROOT/optuna.db); open it with optuna-dashboard URL",
    )
    parser.add_argument(
        "--warm-start",
        default=None,
        metavar="SWEEP",
        help="seed this TPE sweep with the finished trials of an earlier sweep of the same "
        "parameters and metric (its sweep id, sweep folder or MLflow parent run id)",
    )
    return parser


def run_command(
    function: Any,
    uri: str | Sequence[str | None] | None,
    *,
    script: str = "tuning/sweep.py",
    argv: Sequence[str] = (),
) -> int:
    """Runs a CLI body through the CLI funnel (lungsrad.errors.run_cli): user errors become one
    line on stderr and exit status 2; SIGINT and SIGTERM stop the sweep (exit 130 / 143) with
    the command that continues it. The credentials of `uri` (one URI or several) are masked in
    what it prints."""
    uris = [uri] if isinstance(uri, str) else [item for item in uri or () if item]

    def redact(text: str) -> str:
        for each in uris:
            text = redact_text(text, each)
        return text

    def interruptible() -> int:
        with catch_interrupts():
            return function()

    try:
        return run_cli(interruptible, redact=redact if uris else None)
    except KeyboardInterrupt as error:
        interrupted = error if isinstance(error, SweepInterrupted) else SweepInterrupted(2)
        if interrupted.sweep_id is None:
            print(
                f"interrupted by {interrupted.signal_name} before any trial started: run the "
                "same command again",
                file=sys.stderr,
            )
        else:
            command = resume_command(script, argv, interrupted.sweep_id)
            print(f"continue with: {redact(command)}", file=sys.stderr)
        return interrupted.exit_status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of tuning/sweep.py."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        root = default_output_root(args.output_root)
        if args.output_root is None and root != Path("runs").resolve():
            print(f"running inside a Ray job: outputs go to {root} (set --output-root to change)")
        overrides = flag_overrides(args)
        planning = args.plan or args.probe
        # A plan reads the space only: its weights need not be fetched yet.
        with checkpoints_unchecked() if planning else nullcontext():
            preview = load_search_space(args.space, overrides=overrides)
            data_root = data_root_for(list(preview.variants.values()), args.data, root)
            space = (
                load_search_space(args.space, data_root=data_root, overrides=overrides)
                if data_root
                else preview
            )
        settings = make_settings(args, experiment=f"lungsrad-{space.name}", role="sweep")
        if planning:
            from tuning.plan import print_plan  # reads only: no Ray, no MLflow, no sweep folder

            return print_plan(space, settings, probe=args.probe)
        # Ray and torch load once the space is known to be valid: a typo fails in a second.
        from tuning.driver import run_sweep

        outcome = run_sweep(space, settings)
        print_outcome(outcome)
        return 0 if outcome.best is not None else EXIT_NO_RESULT

    return run_command(
        body,
        [args.tracking_uri, args.optuna_storage],
        script=invoked_script("tuning/sweep.py"),
        argv=command_argv(argv),
    )


def invoked_script(default: str) -> str:
    """The script as the user ran it (`tuning/sweep.py`, an absolute path), for printed
    commands; `default` when run otherwise (python -m, a test calling main)."""
    invoked = sys.argv[0] if sys.argv else ""
    return invoked if Path(invoked).name == Path(default).name else default


def command_argv(argv: Sequence[str] | None) -> list[str]:
    """The command's arguments (sys.argv's when main was called without any)."""
    return list(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
