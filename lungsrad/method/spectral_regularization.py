"""Spectral-aware layer regularization: fixed Gaussian smoothing of chosen backbone block outputs.

Lung-SRAD smooths the (frequency, time) output map of selected blocks with a depthwise, separable,
L1-normalised Gaussian; here it is a forward hook, so the backbone and its checkpoints stay
exactly the release model (the kernel is a non-persistent buffer, never in a state dict). The
backbone says how a block output is its grid (`map_block_grid`): a DASS block outputs the map
itself; an AST block outputs tokens, whose patch tokens are the frequency x time grid (the cls and
dist tokens are not smoothed).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from lungsrad.config import ExperimentConfig, regularized_blocks

if TYPE_CHECKING:
    from lungsrad.models import AST, DASS

# Set on every hook function this module registers, so a second attachment is detected.
_HOOK_MARKER = "_lungsrad_spectral_regularization"


def gaussian_kernel1d(kernel_size: int, sigma: float) -> torch.Tensor:
    """A centred, L1-normalised 1-D Gaussian.

    g[j] = exp(-(j - (k - 1) / 2)^2 / (2 sigma^2)) / sum_i exp(-(i - (k - 1) / 2)^2 / (2 sigma^2))

    Args:
        kernel_size: odd length k >= 1.
        sigma: standard deviation in cells (> 0).

    Returns:
        (kernel_size,) float32 weights summing to 1, symmetric about the centre.
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise ValueError(f"kernel_size must be an odd integer >= 1, got {kernel_size!r}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 1, got {kernel_size}")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    offsets = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    weights = torch.exp(-(offsets**2) / (2.0 * float(sigma) ** 2))
    return (weights / weights.sum()).to(torch.float32)


class GaussianSmoothing2d(nn.Module):
    """Depthwise separable Gaussian blur of a (batch, channels, freq, time) map, same size out.

    The 1-D kernel runs along H (frequency) and then along W (time); every channel is smoothed
    on its own. Edges (method.regularization.padding):
    - "reflect" (torchvision's `gaussian_blur` convention): with zero padding a map of 4 x 25
      cells (DASS-small stage 3) would lose a third of its frequency rows' mass to the border.
      An axis too short to reflect (size <= k // 2) is padded by replicating its edge instead,
      so a length-1 axis passes through unchanged.
    - "zero": zeros outside the map, as the authors' only public helper (ICBHI_HADES
      `vmamba_hades.py` at 51a4c42, `blur_separable`: F.conv2d with padding k // 2).
    The kernel is a non-persistent buffer: it never enters a state dict and is not trainable.
    """

    def __init__(
        self, kernel_size: int, sigma: float, *, padding: Literal["reflect", "zero"] = "reflect"
    ) -> None:
        super().__init__()
        if padding not in ("reflect", "zero"):
            raise ValueError(f"padding must be 'reflect' or 'zero', got {padding!r}")
        kernel = gaussian_kernel1d(kernel_size, sigma)
        self.kernel_size = kernel_size
        self.sigma = float(sigma)
        self.padding = padding
        self.kernel: torch.Tensor
        self.register_buffer("kernel", kernel, persistent=False)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma={self.sigma}, padding={self.padding}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Smooths x: (B, C, H, W) -> (B, C, H, W), same dtype and device."""
        if x.dim() != 4:
            raise ValueError(
                f"GaussianSmoothing2d expects (B, C, H, W), got shape {tuple(x.shape)}"
            )
        if self.kernel_size == 1:
            return x
        if self.kernel.device != x.device:
            # Hooks keep this module outside the model, so `model.to(device)` does not move it.
            self.kernel = self.kernel.to(x.device)
        kernel = self.kernel.to(x.dtype)
        channels = x.shape[1]
        pad = self.kernel_size // 2
        along_freq = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
        along_time = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
        if self.padding == "zero":
            x = F.conv2d(x, along_freq, padding=(pad, 0), groups=channels)
            return F.conv2d(x, along_time, padding=(0, pad), groups=channels)
        x = F.pad(x, (0, 0, pad, pad), mode=_pad_mode(x.shape[2], pad))
        x = F.conv2d(x, along_freq, groups=channels)
        x = F.pad(x, (pad, pad, 0, 0), mode=_pad_mode(x.shape[3], pad))
        return F.conv2d(x, along_time, groups=channels)


def _pad_mode(size: int, pad: int) -> str:
    return "reflect" if size > pad else "replicate"


def attach_spectral_regularization(
    model: DASS | AST, config: ExperimentConfig
) -> list[RemovableHandle]:
    """Registers forward hooks that replace the chosen blocks' outputs by their smoothed maps.

    The blocks are `regularized_blocks(config)` inside stage `config.method.regularization.stage`
    (DASS: stages numbered as the reference's `layers.0..3`; AST: stage 0, its blocks 0..11).
    Hooks fire in training and evaluation.

    Args:
        model: a backbone (`block(stage, index)`, `depths`, and `map_block_grid`, which applies
            the smoothing to a block output viewed as its (B, C, freq, time) grid).
        config: the run config; nothing is attached when regularization is disabled.

    Returns:
        The hook handles (empty when disabled); `handle.remove()` restores the plain model.
    """
    regularization = config.method.regularization
    if not regularization.enabled:
        return []
    stage = regularization.stage
    depths = tuple(model.depths)
    # validate_config checks the placement against the config's architecture; these catch a model
    # that was not built from this config (a bug, hence ValueError).
    if not 0 <= stage < len(depths):
        raise ValueError(
            f"method.regularization.stage {stage} not valid: the model has stages "
            f"0..{len(depths) - 1}"
        )
    blocks = regularized_blocks(config)
    bad = [index for index in blocks if not 0 <= index < depths[stage]]
    if bad:
        raise ValueError(
            f"method.regularization.blocks {blocks} not valid: stage {stage} of the model has "
            f"blocks 0..{depths[stage] - 1}"
        )
    smoothing = GaussianSmoothing2d(
        regularization.kernel_size, regularization.sigma, padding=regularization.padding
    )

    def smooth_output(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return model.map_block_grid(output, smoothing)

    setattr(smooth_output, _HOOK_MARKER, True)
    handles: list[RemovableHandle] = []
    for index in blocks:
        block = model.block(stage, index)
        if any(getattr(hook, _HOOK_MARKER, False) for hook in block._forward_hooks.values()):
            for handle in handles:
                handle.remove()
            raise RuntimeError(
                f"spectral regularization is already attached to stage {stage} block {index}; "
                "remove the earlier handles first"
            )
        handles.append(block.register_forward_hook(smooth_output))
    return handles
