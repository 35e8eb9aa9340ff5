"""Shared fixtures for the method tests: a small stand-in backbone with DASS's interface, and the
real tiny DASS."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lungsrad.config import ExperimentConfig, config_from_dict


class StandInBlock(nn.Module):
    """Residual depthwise-conv block: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.mix = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(torch.tanh(self.conv(x)))


class StandInDASS(nn.Module):
    """Follows the DASS contract in contracts.md (embed / forward_from_embedding / forward_head /
    block / depths / num_features) with a few cheap convolutions."""

    def __init__(
        self, *, num_classes: int = 4, dims: tuple[int, ...] = (8, 16), depths=(2, 3)
    ) -> None:
        super().__init__()
        self.depths = tuple(depths)
        self.num_features = dims[-1]
        self.patch_embed = nn.Conv2d(1, dims[0], 4, stride=4)
        self.layers = nn.ModuleList()
        for stage, (width, depth) in enumerate(zip(dims, depths, strict=True)):
            layer = nn.Module()
            layer.blocks = nn.Sequential(*[StandInBlock(width) for _ in range(depth)])
            last = stage == len(dims) - 1
            layer.downsample = (
                nn.Identity() if last else nn.Conv2d(width, dims[stage + 1], 3, 2, padding=1)
            )
            self.layers.append(layer)
        self.head = nn.Linear(dims[-1], num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x.transpose(1, 2).unsqueeze(1))

    def forward_from_embedding(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            h = layer.downsample(layer.blocks(h))
        return h.mean(dim=(2, 3))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from_embedding(self.embed(x))

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def block(self, stage: int, index: int) -> nn.Module:
        return self.layers[stage].blocks[index]

    def map_block_grid(self, output: torch.Tensor, function) -> torch.Tensor:
        return function(output)


@pytest.fixture
def standin_model() -> StandInDASS:
    torch.manual_seed(0)
    return StandInDASS()




def _method_config(*, dims=(8, 16), depths=(2, 3), **sections) -> ExperimentConfig:
    # The stand-in has 2 stages, so the default placement (stage 2) is moved to stage 1.
    sections["regularization"] = {"stage": 1, "blocks": [0], **sections.get("regularization", {})}
    values = {
        "model": {"preset": "custom", "dims": list(dims), "depths": list(depths)},
        "method": sections,
    }
    return config_from_dict(values)


@pytest.fixture
def make_config():
    """Factory: a validated config for the stand-in (dims (8, 16), depths (2, 3)) with
    `regularization={...}` / `patch_mix={...}` sections; dims/depths may be overridden."""
    return _method_config
