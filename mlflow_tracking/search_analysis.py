"""Analysis of a joint search (TPE, grid, random) from its MLflow child runs with Optuna's own
tools: configurations (trials grouped as seeds only when every swept value is equal), parameter
importance (`optuna.importance`, fANOVA), slice plots and a contour of the two most important
parameters (`optuna.visualization.matplotlib`), log axes for log-scale domains.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lungsrad.files import save_figure, write_text_atomic
from lungsrad.metrics import metric_range
from lungsrad.statistics import MeanInterval, format_interval, mean_interval
from mlflow_tracking.values import display_value

IMPORTANCE_FILE = "importance.csv"
CONFIGURATIONS_FILE = "configurations.csv"
IMPORTANCE_EVALUATOR = "fANOVA (optuna.importance.FanovaImportanceEvaluator, seed 0)"


@dataclass(frozen=True)
class Domain:
    """How a swept parameter was sampled, as far as the plots need it."""

    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False


@dataclass(frozen=True)
class Configuration:
    """One configuration of the search and the child runs (one per seed) that trained it."""

    variant: str
    values: dict[str, str]  # swept parameter -> value label
    run_ids: tuple[str, ...]
    seeds: tuple[int | None, ...]
    score: MeanInterval  # of the report metric over the seeds


def parse_domains(search_space_text: str | None, parameters: Sequence[str]) -> dict[str, Domain]:
    """Domains of the swept parameters from the search-space YAML logged with the sweep
    (`uniform`, `loguniform`, `int`; `choice`, `grid` and groups are categorical). Parameters
    it does not describe are treated as categorical."""
    document: Any = {}
    if search_space_text:
        try:
            document = yaml.safe_load(search_space_text) or {}
        except yaml.YAMLError:
            document = {}
    described = document.get("parameters") if isinstance(document, Mapping) else None
    domains: dict[str, Domain] = {}
    for name in parameters:
        spec = (described or {}).get(name)
        kind, bounds = next(iter(spec.items())) if isinstance(spec, Mapping) and spec else ("", [])
        if (
            kind in ("uniform", "loguniform", "int")
            and isinstance(bounds, list)
            and len(bounds) == 2
        ):
            domains[name] = Domain(
                kind="int" if kind == "int" else "float",
                low=float(bounds[0]),
                high=float(bounds[1]),
                log=kind == "loguniform",
            )
        else:
            domains[name] = Domain(kind="categorical")
    return domains


def group_configurations(points: Sequence[Any], *, metric: str) -> list[Configuration]:
    """Child runs grouped by (variant, every swept value): only runs that differ in nothing
    but the seed share a group. Best mean first; groups without a finite score last."""
    groups: dict[str, list[Any]] = {}
    # Trial-id order: ties rank as in the sweep's summary.md.
    for point in sorted(points, key=lambda p: str(getattr(p, "trial_id", ""))):
        key = json.dumps({"variant": point.variant, "values": point.values}, sort_keys=True)
        groups.setdefault(key, []).append(point)
    configurations = [
        Configuration(
            variant=members[0].variant,
            values=dict(members[0].values),
            run_ids=tuple(m.run_id for m in members),
            seeds=tuple(m.seed for m in members),
            score=mean_interval(
                [m.metrics.get(metric, math.nan) for m in members], bounds=metric_range(metric)
            ),
        )
        for members in groups.values()
    ]
    return sorted(
        configurations,
        key=lambda c: (not math.isfinite(c.score.mean), -c.score.mean if c.score.count else 0.0),
    )


def _distribution(domain: Domain, labels: Sequence[str]) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if domain.kind in ("float", "int"):
        assert domain.low is not None and domain.high is not None  # set by parse_domains
        if domain.kind == "int":
            return IntDistribution(int(domain.low), int(domain.high))
        return FloatDistribution(domain.low, domain.high, log=domain.log)
    return CategoricalDistribution(tuple(sorted(set(labels))))


def _param_value(domain: Domain, label: str) -> Any:
    if domain.kind == "categorical":
        return label
    # Labels are rounded to 6 significant digits: keep them inside the domain.
    low = -math.inf if domain.low is None else domain.low
    high = math.inf if domain.high is None else domain.high
    value = min(max(float(label), low), high)
    return int(round(value)) if domain.kind == "int" else value


def build_study(configurations: Sequence[Configuration], domains: Mapping[str, Domain]) -> Any:
    """An in-memory Optuna study with one trial per configuration (value: its mean score)."""
    import optuna
    from optuna.trial import create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scored = [c for c in configurations if math.isfinite(c.score.mean)]
    distributions = {
        name: _distribution(domain, [c.values[name] for c in scored if name in c.values])
        for name, domain in domains.items()
    }
    study = optuna.create_study(direction="maximize")
    for configuration in scored:
        if set(configuration.values) != set(domains):
            continue
        study.add_trial(
            create_trial(
                params={
                    name: _param_value(domains[name], label)
                    for name, label in configuration.values.items()
                },
                distributions=distributions,
                value=configuration.score.mean,
            )
        )
    return study


def parameter_importance(study: Any, parameters: Sequence[str]) -> dict[str, float]:
    """fANOVA importance per swept parameter (sums to 1 over the parameters that varied);
    0 for a parameter with one value in the trials, and for all when the score never changed;
    NaN for all with fewer than 2 trials."""
    import optuna

    varied = [
        name for name in parameters if len({trial.params[name] for trial in study.trials}) > 1
    ]
    importance = {name: (math.nan if len(study.trials) < 2 else 0.0) for name in parameters}
    # fANOVA cannot split a constant score (it raises); then no parameter moved it: all 0.
    score_varied = len({trial.value for trial in study.trials}) > 1
    if len(study.trials) >= 2 and varied and score_varied:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        found = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varied)
        importance.update({name: float(value) for name, value in found.items()})
    return importance


def importance_csv(
    importance: Mapping[str, float], domains: Mapping[str, Domain], *, trials: int
) -> str:
    """One row per swept parameter, most important first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["parameter", "importance", "domain", "configurations", "evaluator"])
    for name, value in sorted(
        importance.items(), key=lambda item: -item[1] if math.isfinite(item[1]) else 1.0
    ):
        domain = domains[name]
        kind = "log-" + domain.kind if domain.log else domain.kind
        writer.writerow([name, f"{value:.6f}", kind, trials, IMPORTANCE_EVALUATOR])
    return buffer.getvalue()


def configurations_csv(configurations: Sequence[Configuration], parameters: Sequence[str]) -> str:
    """One row per configuration, best first: its values, seeds and score interval."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["rank", "variant", *parameters, "seeds", "mean", "std", "ci95_low", "ci95_high"]
    )
    for rank, configuration in enumerate(configurations, start=1):
        score = configuration.score
        writer.writerow(
            [
                rank,
                configuration.variant,
                *(configuration.values.get(name, "") for name in parameters),
                " ".join(str(seed) for seed in configuration.seeds),
                *(f"{v:.4f}" if math.isfinite(v) else "" for v in (score.mean, score.std)),
                *(f"{v:.4f}" if math.isfinite(v) else "" for v in (score.low, score.high)),
            ]
        )
    return buffer.getvalue()


def _save(figure: Any, path: Path) -> None:
    save_figure(figure, path, dpi=120, bbox_inches="tight")


def _mark_best(axis: Any, best_value: float) -> None:
    """A red star on the best configuration's point (Optuna draws it nearly white on grey)."""
    axis.set_facecolor("white")
    axis.grid(True, color="#dddddd", linewidth=0.6)
    for collection in axis.collections:
        for x, y in collection.get_offsets():
            if y == best_value:
                star = axis.scatter(
                    [x], [y], marker="*", s=180, color="red", edgecolor="black", zorder=5,
                    label="best configuration",
                )  # fmt: skip
                axis.legend(handles=[star], fontsize=7, loc="best")
                return


def _unquote_ticks(axis: Any) -> None:
    """Categorical ticks as the values are written (Optuna shows their repr: '0.5')."""
    ticks = axis.get_xticks()
    labels = [display_value(text.get_text().strip("'\"")) for text in axis.get_xticklabels()]
    axis.set_xticks(ticks, labels=labels)


def _label_colorbar(figure: Any, plot_axes: Sequence[Any], label: str) -> None:
    """Names the colour bar Optuna adds (the figure's axes that are not plot axes)."""
    for axis in figure.axes:
        if all(axis is not plotted for plotted in plot_axes):
            axis.set_ylabel(label)


def write_plots(
    study: Any,
    importance: Mapping[str, float],
    folder: Path,
    *,
    sweep: str,
    metric: str,
    domains: Mapping[str, Domain] | None = None,
) -> list[Path]:
    """Importance bars (saying how many configurations they rest on), slice plots of every
    parameter (the best configuration marked, categorical values as written) and the contour of
    the two most important numeric parameters (never interpolated across a categorical one),
    each titled, with the score's unit; log axes come from the domains."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization import matplotlib as optuna_plots

    score_label = f"{metric} (%), mean over seeds"
    ranked = [
        name
        for name, value in sorted(importance.items(), key=lambda item: -item[1])
        if math.isfinite(value)
    ]
    plots = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if ranked:
            bars = pyplot.figure(figsize=(6.4, 0.6 + 0.45 * len(ranked)))
            axes = bars.subplots()
            axes.barh(ranked[::-1], [importance[name] for name in ranked[::-1]], color="#4c72b0")
            axes.set_xlabel("importance (fANOVA share of the score's variance, sums to 1)")
            axes.set_title(
                f"{sweep}: which parameters moved {metric}\n(fANOVA over only "
                f"{len(study.trials)} configurations: rough with few)",
                fontsize=9,
            )
            axes.set_xlim(0, 1)
            plots.append(folder / "importance.png")
            _save(bars, plots[-1])
            pyplot.close(bars)
        if len(study.trials) >= 1:
            names = sorted(importance)
            slices = optuna_plots.plot_slice(study, params=names)
            flat = list(getattr(slices, "flat", [slices]))
            flat[0].figure.canvas.draw()  # tick labels exist once drawn
            for axis, name in zip(flat, names, strict=True):
                axis.set_title(name, fontsize=8)
                axis.set_xlabel("value (log scale)" if axis.get_xscale() == "log" else "value")
                _mark_best(axis, study.best_trial.value)
                if (domains or {}).get(name, Domain("categorical")).kind == "categorical":
                    _unquote_ticks(axis)
            flat[0].set_ylabel(score_label)
            flat[0].figure.set_size_inches(3.6 * len(flat) + 1.5, 4.2)
            _label_colorbar(flat[0].figure, flat, "trial number (order of the search)")
            flat[0].figure.suptitle(
                f"{sweep}: {metric} per configuration against each parameter (colour: trial order)"
            )
            plots.append(folder / "slice.png")
            _save(flat[0].figure, plots[-1])
            pyplot.close(flat[0].figure)
        numeric = [
            name
            for name in ranked
            if (domains or {}).get(name, Domain("categorical")).kind != "categorical"
        ]
        if len(numeric) >= 2 and len(study.trials) >= 3:
            contour: Any = optuna_plots.plot_contour(study, params=numeric[:2])
            contour.set_title(
                f"{sweep}: {metric} (%) over the two most important numeric parameters\n"
                "(interpolated between configurations; dots: trained configurations)",
                fontsize=9,
            )
            _label_colorbar(contour.figure, [contour], score_label)
            plots.append(folder / "contour.png")
            _save(contour.figure, plots[-1])
            pyplot.close(contour.figure)
    return plots


@dataclass(frozen=True)
class JointReport:
    """What the joint-search analysis wrote."""

    markdown: list[str]
    plots: list[Path]
    importance: Path
    configurations: list[Configuration]


def joint_report(
    points: Sequence[Any],
    parameters: Sequence[str],
    folder: Path,
    *,
    search_space_text: str | None,
    sweep: str,
    metric: str,
) -> JointReport:
    """Configurations, importance, slice and contour plots of a joint search (files in folder)."""
    domains = parse_domains(search_space_text, parameters)
    configurations = group_configurations(points, metric=metric)
    study = build_study(configurations, domains)
    importance = parameter_importance(study, parameters)
    importance_path = folder / IMPORTANCE_FILE
    write_text_atomic(
        importance_path, importance_csv(importance, domains, trials=len(study.trials))
    )
    write_text_atomic(
        folder / CONFIGURATIONS_FILE, configurations_csv(configurations, list(parameters))
    )
    plots = write_plots(study, importance, folder, sweep=sweep, metric=metric, domains=domains)
    lines = [
        "",
        f"## Parameter importance ({len(study.trials)} configurations)",
        "",
        f"{IMPORTANCE_EVALUATOR} on the mean `{metric}` of each configuration; few "
        "configurations make it rough. Trials are grouped as seeds only when every swept value "
        "is equal.",
        "",
        "| parameter | importance | domain |",
        "|---|---:|---|",
    ]
    for name in sorted(
        importance, key=lambda n: -importance[n] if math.isfinite(importance[n]) else 1
    ):
        domain = domains[name]
        lines.append(
            f"| {name} | {importance[name]:.3f} | {'log-' if domain.log else ''}{domain.kind} |"
        )
    lines += [""] + [f"![{plot.stem}]({plot.name})" for plot in plots]
    if not any(plot.stem == "contour" for plot in plots) and len(parameters) >= 2:
        lines += [
            "",
            "No contour: it needs two numeric parameters that moved the score and 3 or more "
            "configurations (a contour would interpolate across a categorical parameter as if "
            "it were continuous).",
        ]
    lines += [
        "",
        "## Configurations, best first",
        "",
        f"`{metric}`: mean ± sample std [95 % Student-t interval] over seeds.",
        "",
        f"| rank | configuration | seeds | {metric} |",
        "|---:|---|---|---:|",
    ]
    for rank, configuration in enumerate(configurations, start=1):
        described = " ".join(f"{k}={display_value(v)}" for k, v in configuration.values.items())
        if configuration.variant not in ("base", ""):
            described = f"variant={configuration.variant} {described}"
        lines.append(
            f"| {rank} | {described} | {list(configuration.seeds)} "
            f"| {format_interval(configuration.score)} |"
        )
    return JointReport(
        markdown=lines, plots=plots, importance=importance_path, configurations=configurations
    )
