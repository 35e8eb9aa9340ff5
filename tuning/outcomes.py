"""What a sweep's trials ended with: one trial's outcome, a configuration over its seeds, the
chosen best configuration, and which of their runs are degenerate classifiers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lungsrad.config import ExperimentConfig
from lungsrad.metrics import (
    REPORT_SCORE,
    metrics_degenerate_note,
)
from lungsrad.statistics import (
    MeanInterval,
)
from tuning.search_space import ResolvedTrial


@dataclass(frozen=True)
class TrialOutcome:
    """One trial as the sweep ended it."""

    trial_id: str
    resolved: ResolvedTrial
    status: str  # "done" | "failed"
    epochs: int  # epochs reported
    best_value: float  # running best of the sweep metric (NaN: none)
    last: dict[str, Any]  # last reported metrics
    error: str | None = None
    tune_config: dict[str, Any] = field(default_factory=dict)  # the trial's Tune config

    @property
    def report_score(self) -> float:
        """The final answer's score (test metrics at the protocol's selected epoch)."""
        return float(self.last.get(REPORT_SCORE, math.nan))

    @property
    def degenerate(self) -> str | None:
        """lungsrad.metrics.degenerate_note of the reported epoch's predictions (None: not
        degenerate, or a trial without them)."""
        return metrics_degenerate_note(self.last)


@dataclass(frozen=True)
class BestChoice:
    """The winning configuration and the trials (one per seed) behind it."""

    members: tuple[TrialOutcome, ...]
    mean_value: float  # mean over seeds of the trials' best metric
    configurations: int = 1  # configurations with a finished seed it was chosen from

    @property
    def config(self) -> ExperimentConfig:
        """Resolved config of the best configuration (its lowest-seed trial)."""
        return self.representative.resolved.config

    @property
    def representative(self) -> TrialOutcome:
        """The lowest-seed trial of the configuration."""
        return min(self.members, key=lambda t: t.resolved.seed)

    @property
    def seed_scores(self) -> dict[int, float]:
        """The sweep metric's running best per seed."""
        return {m.resolved.seed: m.best_value for m in sorted(self.members, key=seed_of)}

    @property
    def degenerate(self) -> str | None:
        """Which of its seeds are degenerate classifiers (`degenerate_members`), or None.

        Since non-degenerate configurations rank first, a degenerate best means that every
        configuration with a finished seed has a degenerate seed."""
        return degenerate_members(self.members)


@dataclass(frozen=True)
class ConfigurationSummary:
    """One configuration (all its seeds) of a sweep."""

    members: tuple[TrialOutcome, ...]  # every trial of the configuration, failed ones too
    selection: MeanInterval  # over finished seeds: the sweep metric's running best
    report: MeanInterval  # over finished seeds: the reported test Score

    @property
    def done(self) -> tuple[TrialOutcome, ...]:
        """The finished trials with a finite sweep metric."""
        return tuple(m for m in self.members if is_finished(m))

    @property
    def description(self) -> str:
        """The configuration without its seed."""
        return self.members[0].resolved.describe_config()

    @property
    def degenerate(self) -> str | None:
        """Which of its finished seeds are degenerate classifiers, or None."""
        return degenerate_members(self.done)


def degenerate_members(members: Sequence[TrialOutcome]) -> str | None:
    """Which runs of a configuration are degenerate classifiers: the note itself for one run
    ("degenerate: predicts only 'normal'"), else e.g. "1 of 2 seeds degenerate (seed 0:
    predicts only 'normal')"; None when none is."""
    flagged = [(m, m.degenerate) for m in sorted(members, key=seed_of) if m.degenerate]
    if not flagged:
        return None
    if len(members) == 1:
        return flagged[0][1]
    runs = "seeds" if all(fold_of(m) is None for m in members) else "runs"
    details = "; ".join(
        f"{run_label(m)}: {str(note).removeprefix('degenerate: ')}" for m, note in flagged
    )
    return f"{len(flagged)} of {len(members)} {runs} degenerate ({details})"


def is_finished(outcome: TrialOutcome) -> bool:
    return outcome.status == "done" and math.isfinite(outcome.best_value)


def seed_of(outcome: TrialOutcome) -> int:
    return outcome.resolved.seed


def fold_of(outcome: TrialOutcome) -> int | None:
    """The trial's data.fold (None: not a foldwise run)."""
    return outcome.resolved.config.data.fold


def run_label(outcome: TrialOutcome) -> str:
    fold = fold_of(outcome)
    seed = outcome.resolved.seed
    return f"seed {seed}" if fold is None else f"seed {seed}, fold {fold}"


def format_number(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "n/a"
