"""The `reseed` key of a search space: accepted form, and one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import write_tiny_space

from tuning.search_space import ReseedSpec, load_search_space, space_summary

PARAMETERS = {"method.patch_mix.temperature": {"loguniform": [0.03, 0.3]}}


def _space(tmp_path: Path, reseed) -> Path:
    return write_tiny_space(
        tmp_path / "space.yaml", data=tmp_path, parameters=PARAMETERS, search="tpe", reseed=reseed
    )


def test_reseed_is_read_and_logged(tmp_path: Path) -> None:
    space = load_search_space(_space(tmp_path, {"top_k": 3, "seeds": [1, 2]}))
    assert space.reseed == ReseedSpec(top_k=3, seeds=(1, 2))
    assert space_summary(space)["sweep.reseed.seeds"] == [1, 2]
    assert load_search_space(_space(tmp_path, None)).reseed is None


@pytest.mark.parametrize(
    ("reseed", "message"),
    [
        ({"top_k": 0, "seeds": [1]}, r"space\.yaml:\d+: reseed\.top_k must be an integer >= 1"),
        ({"top_k": 2, "seeds": []}, r"reseed\.seeds must be a non-empty list"),
        ({"top_k": 2, "seeds": [0, 1]}, r"reseed\.seeds \[0, 1\] repeat the search's seeds \[0\]"),
        ({"top_k": 2, "seed": [1]}, r"unknown key 'reseed\.seed'; did you mean 'reseed\.seeds'\?"),
        ({"seeds": [1]}, r"reseed needs the key 'top_k'"),
        ({"top_k": "x", "seeds": [1]}, r"reseed\.top_k must be an integer, got 'x'"),
        ([3, 1], r"reseed must be \{top_k: 3, seeds: \[1, 2\]\}"),
    ],
)
def test_bad_reseed_is_named(tmp_path: Path, reseed, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_search_space(_space(tmp_path, reseed))
