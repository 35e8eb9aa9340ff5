"""Per-epoch random streams and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from lungsrad.config import config_from_dict
from lungsrad.training.loop import (
    STREAM_SHUFFLE,
    STREAM_SPECAUGMENT,
    epoch_generator,
    stream_seed,
)
from lungsrad.training.optimization import learning_rate_factor


def _train(**values):
    return config_from_dict({"train": values}).train


def test_stream_seeds_depend_only_on_seed_epoch_and_stream():
    assert stream_seed(0, 3, STREAM_SHUFFLE) == stream_seed(0, 3, STREAM_SHUFFLE)
    seeds = {stream_seed(s, e, k) for s in (0, 1) for e in (1, 2) for k in (0, 1, 2, 3)}
    assert len(seeds) == 16
    assert all(0 <= seed < 2**63 for seed in seeds)
    first = torch.rand(4, generator=epoch_generator(7, 2, STREAM_SPECAUGMENT))
    again = torch.rand(4, generator=epoch_generator(7, 2, STREAM_SPECAUGMENT))
    assert torch.equal(first, again)


def test_cosine_schedule_with_warmup():
    train = _train(num_epochs=10, schedule="cosine", warmup_epochs=2)
    factors = [learning_rate_factor(e, train) for e in range(10)]
    assert factors[:2] == pytest.approx([1 / 3, 2 / 3])
    assert factors[2] == pytest.approx(1.0)
    assert factors[2:] == sorted(factors[2:], reverse=True)
    assert factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert factors[-1] > 0


def test_step_and_constant_schedules():
    step = _train(num_epochs=10, schedule="step", step_size_epochs=3, step_gamma=0.5)
    assert [learning_rate_factor(e, step) for e in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    constant = _train(num_epochs=5, schedule="constant", warmup_epochs=1)
    assert [learning_rate_factor(e, constant) for e in range(5)] == [0.5, 1, 1, 1, 1]
