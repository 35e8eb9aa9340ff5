"""Command line: `lungsrad fetch`, `lungsrad data synth|inspect|features`, `lungsrad train`,
`lungsrad evaluate`, `lungsrad spectral`. Only parses arguments and calls the library; bad input
exits 2 in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lungsrad import errors
from lungsrad.config import parse_override
from lungsrad.errors import EXIT_BAD_INPUT


def _fetch(args: argparse.Namespace) -> int:
    from lungsrad.assets.fetch import FetchOptions, fetch_asset, list_assets

    if args.list:
        for row in list_assets(args.dir):
            print(f"{row['name']}  size {row['size']}  {row['pin']}  fetched: {row['fetched']}")
            print("".join(f"    {source}\n" for source in row["sources"].split(" | ")), end="")
        return 0
    if args.name is None:
        raise errors.UserError("name an asset (lungsrad fetch NAME) or pass --list")
    options = FetchOptions(
        directory=args.dir,
        from_files=tuple(args.from_files or ()),
        urls=tuple(args.url or ()),
        force=args.force,
        timeout_s=args.timeout,
    )
    fetch_asset(args.name, options)
    return 0


def _data_synth(args: argparse.Namespace) -> int:
    from lungsrad.data.synthetic import write_synthetic_dataset

    summary = write_synthetic_dataset(
        args.out, num_recordings=args.recordings, seed=args.seed, overwrite=args.overwrite
    )
    print(summary.format_text())
    return 0


def _data_inspect(args: argparse.Namespace) -> int:
    from lungsrad.data.inspect import inspect_dataset

    report = inspect_dataset(args.directory, split_file=args.split_file)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format_text())
    if report.is_usable:
        return 0
    # The report above lists every problem; stderr gets one line naming the first.
    first = str(report.problems[0]) if report.problems else "no breathing cycles found"
    more = f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
    print(f"lungsrad: error: {args.directory} is not usable: {first}{more}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _data_features(args: argparse.Namespace) -> int:
    from lungsrad.config import apply_overrides, load_config
    from lungsrad.data.export import export_model_inputs

    config = load_config(args.config)
    overrides = dict(parse_override(item) for item in args.set or [])
    overrides["data.root"] = str(args.directory)
    if args.split_file is not None:
        overrides["data.split_file"] = str(args.split_file)
    config = apply_overrides(config, overrides)
    export = export_model_inputs(config.data, args.out, overwrite=args.force)
    print(export.format_text())
    return 0


def _train(args: argparse.Namespace) -> int:
    from lungsrad.config import apply_overrides, load_config
    from lungsrad.training.run import NonFiniteLossError, run_experiment

    config = load_config(args.config)
    overrides = dict(parse_override(item) for item in args.set or [])
    if args.data is not None:
        overrides["data.root"] = str(args.data)
    if args.split_file is not None:
        overrides["data.split_file"] = str(args.split_file)
    if overrides:
        config = apply_overrides(config, overrides)
    try:
        result = run_experiment(config, output_dir=args.out, resume=not args.no_resume)
    except NonFiniteLossError as error:
        # A diverged run is not bad input (exit 2) but a failed run: one line, exit 1.
        print(f"lungsrad: training stopped: {error}", file=sys.stderr)
        return 1
    print(result.format_text())
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lungsrad.training.evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(
        args.checkpoint, data_root=args.data, split=args.split, output_dir=args.out
    )
    print(report.format_text())
    return 0


def _spectral(args: argparse.Namespace) -> int:
    from lungsrad.analysis.spectral.driver import run_spectral_analysis, run_spectral_comparison

    if args.compare:
        comparison = run_spectral_comparison(
            args.compare, data_root=args.data, output_dir=args.out, num_examples=args.examples
        )
        print(comparison.format_text())
        return 0
    summary = run_spectral_analysis(
        args.checkpoint,
        data_root=args.data,
        output_dir=args.out,
        num_examples=args.examples,
    )
    print(summary.format_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `lungsrad` argument parser."""
    parser = argparse.ArgumentParser(prog="lungsrad", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_fetch_parser(commands)
    _add_data_parsers(commands)
    _add_run_parsers(commands)
    return parser


def _add_fetch_parser(commands: argparse._SubParsersAction) -> None:
    """`lungsrad fetch NAME | --list`."""
    fetch = commands.add_parser(
        "fetch",
        help="download the ICBHI database or pretrained weights by name, verify, lay them out",
    )
    fetch.add_argument(
        "name", nargs="?", help="icbhi, dass-medium-v2, ast-audioset, hf:saurabhati/DASS_... "
    )
    fetch.add_argument("--list", action="store_true", help="every name, source, size, pin")
    fetch.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="assets folder (default: $LUNGSRAD_ASSETS, else ~/.cache/lungsrad/assets)",
    )
    fetch.add_argument(
        "--from",
        dest="from_files",
        type=Path,
        action="append",
        metavar="FILE",
        help="a file downloaded by hand (same checks, same layout; repeatable)",
    )
    fetch.add_argument(
        "--url", action="append", help="fetch from this URL instead (a mirror; repeatable)"
    )
    fetch.add_argument("--force", action="store_true", help="replace an asset fetched before")
    fetch.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="give up on a silent server"
    )
    fetch.set_defaults(handler=_fetch)


def _add_data_parsers(commands: argparse._SubParsersAction) -> None:
    """`lungsrad data synth | inspect | features`."""
    data = commands.add_parser("data", help="synthetic data and dataset checks")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    synth = data_commands.add_parser("synth", help="write a synthetic ICBHI-layout dataset")
    synth.add_argument("out", type=Path, help="output folder (created)")
    synth.add_argument("--recordings", type=int, default=40, help="number of recordings")
    synth.add_argument("--seed", type=int, default=0, help="random seed (output is deterministic)")
    synth.add_argument(
        "--overwrite", action="store_true", help="replace an existing synthetic dataset in OUT"
    )
    synth.set_defaults(handler=_data_synth)
    inspect = data_commands.add_parser("inspect", help="validate a dataset folder and summarise it")
    inspect.add_argument("directory", type=Path, help="ICBHI_final_database-style folder")
    inspect.add_argument("--split-file", type=Path, default=None, help="official split file")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(handler=_data_inspect)
    features = data_commands.add_parser(
        "features",
        help="write every cycle's model input (normalised, resized, no augmentation) to an .npz",
    )
    features.add_argument("directory", type=Path, help="ICBHI_final_database-style folder")
    features.add_argument("--config", type=Path, required=True, help="run config YAML (its data)")
    features.add_argument("--out", type=Path, required=True, help="output FILE.npz (written once)")
    features.add_argument("--split-file", type=Path, default=None, help="official split file")
    features.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)"
    )
    features.add_argument("--force", action="store_true", help="replace an existing --out file")
    features.set_defaults(handler=_data_features)


def _add_run_parsers(commands: argparse._SubParsersAction) -> None:
    """`lungsrad train | evaluate | spectral`."""
    train = commands.add_parser("train", help="train one run from a YAML config")
    train.add_argument("--config", type=Path, required=True, help="run config YAML")
    train.add_argument(
        "--data",
        type=Path,
        default=None,
        help="ICBHI_final_database folder (unzipped) or fetch:icbhi; wins over the config's "
        "data.root",
    )
    train.add_argument(
        "--split-file",
        type=Path,
        default=None,
        help="official split file ICBHI_challenge_train_test.txt; wins over data.split_file "
        "(default: data.split_file, else the file of that name in the data folder)",
    )
    train.add_argument("--out", type=Path, default=Path("runs/train"), help="output folder")
    train.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)"
    )
    train.add_argument(
        "--no-resume", action="store_true", help="refuse to continue from a checkpoint in --out"
    )
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint")
    evaluate.add_argument("--checkpoint", type=Path, required=True, help="lungsrad checkpoint")
    evaluate.add_argument("--data", type=Path, default=None, help="dataset folder")
    evaluate.add_argument("--split", choices=("test", "val", "train"), default="test")
    evaluate.add_argument("--out", type=Path, default=None, help="folder for the confusion PNG")
    evaluate.set_defaults(handler=_evaluate)

    spectral = commands.add_parser(
        "spectral", help="spectral response of each block: DASS SS2D or AST attention (Fig. 1/2)"
    )
    which = spectral.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", type=Path, help="lungsrad checkpoint (DASS or AST)")
    which.add_argument(
        "--compare",
        type=Path,
        nargs=2,
        metavar=("A.pt", "B.pt"),
        help="two checkpoints (e.g. an AST and a DASS) drawn side by side in one figure",
    )
    spectral.add_argument("--data", type=Path, default=None, help="dataset folder")
    spectral.add_argument("--out", type=Path, required=True, help="output folder (PNG + CSV)")
    spectral.add_argument("--examples", type=int, default=4, help="test cycles to average over")
    spectral.set_defaults(handler=_spectral)


def run_cli(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Runs a handler through the CLI funnel (lungsrad.errors.run_cli): user errors become one
    line on stderr and exit status 2; a closed pipe ends quietly, Ctrl-C with status 130."""
    try:
        return errors.run_cli(lambda: handler(args), prefix="lungsrad: error: ")
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error of ours; silence the final flush.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except KeyboardInterrupt:
        print("lungsrad: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lungsrad` console script."""
    args = build_parser().parse_args(argv)
    return run_cli(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
