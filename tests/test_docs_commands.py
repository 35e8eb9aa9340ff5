"""Every command that README.md and docs/*.md (pages added later included) show for `lungsrad`,
`tuning/` and `mlflow_tracking` parses: the flags exist and take the values shown, and each CLI's
`--help` works. Placeholders (`<sweep folder>`, `[--flag X]`, `...`) are read as a person would."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from lungsrad.cli import build_parser as lungsrad_parser
    from mlflow_tracking.report import build_parser as report_parser
    from tuning.compare import build_parser as compare_parser
    from tuning.final import build_parser as final_parser
    from tuning.sweep import build_parser as sweep_parser

    return {
        "lungsrad": lungsrad_parser,
        "tuning/sweep.py": sweep_parser,
        "tuning/final.py": final_parser,
        "tuning.compare": compare_parser,
        "mlflow_tracking.report": report_parser,
    }


# The program part of a command line -> the CLI it runs.
_PROGRAMS = (
    (re.compile(r"^(?:python3?\s+)?tuning/sweep\.py\b"), "tuning/sweep.py"),
    (re.compile(r"^(?:python3?\s+)?tuning/final\.py\b"), "tuning/final.py"),
    (re.compile(r"^python3?\s+-m\s+tuning\.compare\b"), "tuning.compare"),
    (re.compile(r"^python3?\s+-m\s+mlflow_tracking\.report\b"), "mlflow_tracking.report"),
    (re.compile(r"^(?:python3?\s+-m\s+)?lungsrad(?=\s|$)"), "lungsrad"),
)


@dataclass(frozen=True)
class ShownCommand:
    """A command as a page shows it."""

    page: str
    line: int
    program: str
    arguments: str
    in_prose: bool  # an inline code span: may leave out required flags ("`lungsrad train`")


def _pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _candidate_lines(text: str) -> Iterator[tuple[int, str, bool]]:
    """Command lines of shell code blocks (continuations joined) and of inline code spans (the
    latter with True)."""
    lines = text.splitlines()
    fence: str | None = None
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else (stripped[3:].strip() or "text")
            continue
        if fence in ("bash", "sh", "shell", "console"):
            start, joined = pending or (number, "")
            joined = f"{joined} {stripped}".strip()
            if joined.endswith("\\"):
                pending = (start, joined[:-1])
                continue
            pending = None
            yield start, joined, False
        elif fence is None:
            for span in re.findall(r"`([^`]+)`", raw):
                yield number, span, True


def _commands_of(line: str) -> Iterator[tuple[str, str]]:
    """(program, arguments) of each lungsrad / tuning / mlflow_tracking command in a line."""
    line = re.sub(r"\s#\s.*$", "", line)  # a trailing comment
    for part in re.split(r"&&|\|\||;|\s--\s", line):
        part = part.strip()
        # Leading environment assignments and `. .venv/bin/activate`-like prefixes.
        part = re.sub(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+", "", part)
        for pattern, program in _PROGRAMS:
            match = pattern.match(part)
            if match:
                yield program, part[match.end() :]


def shown_commands() -> list[ShownCommand]:
    """Every command of the tools the pages show."""
    found = []
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        for number, line, in_prose in _candidate_lines(text):
            for program, arguments in _commands_of(line):
                found.append(
                    ShownCommand(
                        page=str(page.relative_to(REPO)),
                        line=number,
                        program=program,
                        arguments=arguments,
                        in_prose=in_prose,
                    )
                )
    return found


def _tokens(arguments: str) -> list[str]:
    """Shell words with placeholders read as values: `<...>` is one word, `[--flag X]` is the
    flag, `...` and `|` alternatives are dropped."""
    arguments = re.sub(r"<[^>]*>", "X", arguments)
    arguments = arguments.replace("[", " ").replace("]", " ")
    words = shlex.split(arguments, comments=False)
    return [word for word in words if word not in ("...", "|") and not word.startswith(">")]


COMMANDS = shown_commands()


def test_the_pages_show_commands_of_every_cli() -> None:
    shown = {command.program for command in COMMANDS}
    assert shown == set(_parsers()), shown


@pytest.mark.parametrize("program", sorted(_parsers()))
def test_help_of_each_cli(program: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stopped:
        _parsers()[program]().parse_args(["--help"])
    assert stopped.value.code == 0
    assert "usage:" in out.getvalue()


@pytest.mark.parametrize(
    "command", COMMANDS, ids=[f"{c.page}:{c.line}:{c.program}" for c in COMMANDS]
)
def test_shown_command_parses(command: ShownCommand) -> None:
    tokens = _tokens(command.arguments)
    if not tokens or tokens == ["--help"]:
        return  # a bare program name in prose, or its help (tested above)
    parser = _parsers()[command.program]()
    if command.in_prose:
        _relax_required(parser)
    error = _parse_error(parser, tokens)
    assert error is None, (
        f"{command.page}:{command.line}: `{command.program} {command.arguments.strip()}` does "
        f"not parse: {error}"
    )


def _relax_required(parser: argparse.ArgumentParser) -> None:
    """Required flags, required groups of flags and single positional arguments become optional
    (sub-commands stay required): prose names a command (`lungsrad data inspect`) without them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _relax_required(sub)
        elif action.option_strings:
            action.required = False
        elif action.nargs is None:
            action.nargs = "?"
            action.required = False
    for group in parser._mutually_exclusive_groups:
        group.required = False


def _parse_error(parser: argparse.ArgumentParser, tokens: list[str]) -> str | None:
    """None when the tokens parse; else argparse's message. An upper-case placeholder given to
    a number flag (`--recordings N`) is read as a number."""
    tokens = list(tokens)
    for _ in range(len(tokens) + 1):
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                parser.parse_args(tokens)
            return None
        except SystemExit:
            message = errors.getvalue().strip().splitlines()[-1]
        placeholder = re.search(r"invalid (?:int|float) value: '([A-Z][A-Z0-9_]*)'", message)
        if placeholder is None or placeholder.group(1) not in tokens:
            return message
        tokens[tokens.index(placeholder.group(1))] = "1"
    return message


def test_a_wrong_flag_or_value_is_caught() -> None:
    parser = _parsers()["tuning/sweep.py"]()
    assert _parse_error(parser, ["--space", "s.yaml", "--no-such-flag"]) is not None
    assert "--space" in (_parse_error(_parsers()["tuning/sweep.py"](), ["--resume"]) or "")
    synth = ["data", "synth", "OUT", "--recordings", "N", "--seed", "S"]
    assert _parse_error(_parsers()["lungsrad"](), synth) is None
    assert _parse_error(_parsers()["lungsrad"](), ["data", "synth", "OUT", "--recordings", "x"])


def test_cluster_page_shows_the_mlflow_server_command_the_tests_run() -> None:
    """docs/cluster.md's `mlflow server` recipe is `server_command`, the command
    LocalTrackingServer runs (the tests' PostgreSQL-backed server included): the same words in
    the same order, with the page's host names and paths as the values."""
    from mlflow_tracking.server import server_command

    text = (REPO / "docs" / "cluster.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    shown = [
        shlex.split(block.replace("\\\n", " "))
        for block in blocks
        if block.strip().startswith("mlflow server")
    ]
    assert len(shown) == 1, shown
    (argv,) = shown
    values = dict(zip(argv[2::2], argv[3::2], strict=False))
    assert values["--backend-store-uri"].startswith("postgresql://")
    assert argv == server_command(
        backend_store_uri=values["--backend-store-uri"],
        artifacts_destination=values["--artifacts-destination"],
        host=values["--host"],
        port=int(values["--port"]),
        allowed_hosts=values["--allowed-hosts"],
        workers=int(values["--workers"]),
    )
