"""Fixtures shared by the lungsrad tests: the real DASS at a tiny size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lungsrad.models import DASS

TINY_DIMS = (16, 32, 64, 128)
TINY_DEPTHS = (1, 1, 2, 1)


@pytest.fixture
def tiny_dass():
    """Factory for the real DASS at a tiny size (dims 16-128, depths 1-1-2-1), seeded."""

    def build(**kwargs) -> nn.Module:
        torch.manual_seed(0)
        return DASS(dims=TINY_DIMS, depths=TINY_DEPTHS, **kwargs)

    return build
