"""The backbones comparison (search_spaces/backbones.yaml): named contrasts, headed by
"Lung-SRAD - AST patch-mix", with the hand-computed intervals of tests/tuning/test_compare.py;
the Table 2 chain is unchanged when no AST variant is present."""

from __future__ import annotations

from pathlib import Path

import pytest

from lungsrad.metrics import REPORT_SCORE
from tuning.compare import (
    comparison_markdown,
    contrast_steps,
    is_backbones_comparison,
    resolve_order,
)
from tuning.search_space import load_search_space

REPO = Path(__file__).resolve().parents[2]

# lung_srad - ast_patchmix: 2.0, 2.2, 1.8 (t interval [+1.50, +2.50]: better);
# ast_patchmix - ast_finetune: 1, 2, 0.5 (t interval [-0.73, +3.06]: within noise).
SCORES = {
    "dass_finetune": {0: 58.0, 1: 59.0, 2: 61.0},
    "lung_srad": {0: 63.0, 1: 65.2, 2: 64.3},
    "ast_finetune": {0: 60.0, 1: 61.0, 2: 62.0},
    "ast_patchmix": {0: 61.0, 1: 63.0, 2: 62.5},
}


def rows(text: str) -> dict[str, str]:
    return {
        line.split("|")[1].strip(): line
        for line in text.splitlines()
        if line.startswith("| ") and "[" in line.split("|")[2]
    }


def test_contrasts_name_the_paired_differences() -> None:
    steps = contrast_steps(SCORES)
    assert [step.name for step in steps] == [
        "Lung-SRAD - AST patch-mix",
        "Lung-SRAD - DASS fine-tune",
        "AST patch-mix - AST fine-tune",
        "DASS fine-tune - AST fine-tune",
    ]
    order = resolve_order(SCORES, None)
    assert order == ["dass_finetune", "lung_srad", "ast_finetune", "ast_patchmix"]
    text = comparison_markdown(SCORES, order, metric=REPORT_SCORE, title="t", steps=steps)
    table = rows(text)
    headline = table["Lung-SRAD - AST patch-mix"]
    assert "| [0, 1, 2] | +2.00, +2.20, +1.80 | +2.00 | [+1.50, +2.50] |" in headline
    assert headline.rstrip().endswith("| better |")
    assert "| +1.17 | [-0.73, +3.06] |" in table["AST patch-mix - AST fine-tune"]
    assert "**within noise**" in table["AST patch-mix - AST fine-tune"]
    assert "| contrast | paired seeds |" in text and "first named variant minus the second" in text


def test_only_contrasts_with_both_variants_and_only_for_backbones() -> None:
    partial = {name: SCORES[name] for name in ("lung_srad", "ast_patchmix")}
    assert [step.name for step in contrast_steps(partial)] == ["Lung-SRAD - AST patch-mix"]
    assert is_backbones_comparison(SCORES, None)
    assert not is_backbones_comparison(SCORES, ["ast_finetune", "ast_patchmix"])  # --order: chain
    table2 = {name: SCORES[name] for name in ("dass_finetune", "lung_srad")}
    assert not is_backbones_comparison(table2, None)
    text = comparison_markdown(
        table2, ["dass_finetune", "lung_srad"], metric=REPORT_SCORE, title="t"
    )
    assert "dass_finetune -> lung_srad" in rows(text)


def test_shipped_backbones_space(tmp_path, monkeypatch) -> None:
    # The AST configs name the AudioSet release file relative to where the sweep runs.
    monkeypatch.chdir(tmp_path)
    release = tmp_path / "pretrained_models" / "audioset_10_10_0.4593.pth"
    missing = r"yaml:\d+: variants\.ast_finetune: model\.checkpoint not found"
    with pytest.raises(FileNotFoundError, match=missing):
        load_search_space(REPO / "search_spaces" / "backbones.yaml")
    release.parent.mkdir()
    release.write_bytes(b"")
    space = load_search_space(REPO / "search_spaces" / "backbones.yaml")
    # Trials run in their own working directories: they get the absolute path.
    assert {config.model.checkpoint for config in space.variants.values()} == {
        None,
        str(release.resolve()),
    }
    assert list(space.variants) == ["dass_finetune", "lung_srad", "ast_finetune", "ast_patchmix"]
    assert space.seeds == (0, 1, 2, 3, 4) and space.num_trials() == 20
    backbone = {name: config.model.backbone for name, config in space.variants.items()}
    assert backbone == {
        "dass_finetune": "dass",
        "lung_srad": "dass",
        "ast_finetune": "ast",
        "ast_patchmix": "ast",
    }
    modes = {name: config.method.patch_mix.mode for name, config in space.variants.items()}
    assert modes == {
        "dass_finetune": "none",
        "lung_srad": "dual",
        "ast_finetune": "none",
        "ast_patchmix": "ast_style",
    }
    assert space.variants["lung_srad"].method.regularization.enabled
    assert {config.train.protocol for config in space.variants.values()} == {"paper"}


def test_final_runs_named_by_their_configs_get_the_contrasts() -> None:
    # final.py seed runs carry their config's name: the shipped configs of the four variants.
    names = {
        "dass_finetune": "table2_dass_finetune",
        "lung_srad": "table2_lung_srad",
        "ast_finetune": "table1_ast_finetune",
        "ast_patchmix": "table1_ast_patchmix",
    }
    finals = {names[variant]: scores for variant, scores in SCORES.items()}
    assert is_backbones_comparison(finals, None)
    steps = contrast_steps(finals)
    assert steps[0].name == "Lung-SRAD - AST patch-mix"
    assert (steps[0].after, steps[0].before) == ("table2_lung_srad", "table1_ast_patchmix")
    assert steps[0].difference.differences == pytest.approx((2.0, 2.2, 1.8))
    assert resolve_order(finals, None) == [names[v] for v in SCORES]
