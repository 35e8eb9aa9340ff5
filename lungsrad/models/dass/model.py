"""DASS: the VMamba-based audio backbone (SS2D v05_noz, d_state 1, 4 scan directions) with its head.

Re-implements Saurabhbhati/DASS `src/models/ast_models.py` + `src/models/vmamba.py` as described
in shared/dass_reference/ARCHITECTURE.md; parameter names equal the release checkpoint keys
without their `module.v.` prefix, so release files load directly (see `weights.py`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lungsrad.config import MIN_NUM_CLASSES, MODEL_PRESETS
from lungsrad.models.selective_scan import (
    check_backend,
    resolve_backend,
    selective_scan,
    ss2d_scan_triton,
)

_HALF_DTYPES = (torch.float16, torch.bfloat16)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of a (batch, C, H, W) map, at every (h, w) position."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, C, H, W) -> (batch, C, H, W) (channels-last in memory)."""
        weight: torch.Tensor | None = self.weight
        bias: torch.Tensor | None = self.bias
        if weight is not None and weight.dtype != x.dtype:
            # A float32 scan output meeting half-precision parameters (model.half() without AMP);
            # under autocast layer_norm runs in float32 whatever is passed.
            weight = weight.to(x.dtype)
            bias = bias.to(x.dtype) if bias is not None else None
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, weight, bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Linear2d(nn.Linear):
    """1x1 convolution stored as an (out, in) linear weight, as in the release checkpoints."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, in, H, W) -> (batch, out, H, W); free of copies for channels-last memory."""
        return F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias).permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Per-sample stochastic depth: drops the whole branch of a sample with probability `rate`."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, ...) -> same shape; survivors are scaled by 1 / (1 - rate)."""
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """The four scan orders of a map: (batch, C, H, W) -> (batch, 4, C, H*W).

    0: row-major (along time within a mel row), 1: column-major (along frequency within a
    frame), 2 and 3: 0 and 1 reversed.
    """
    batch, channels, height, width = x.shape
    xs = x.new_empty((batch, 4, channels, height * width))
    xs[:, 0].view(batch, channels, height, width).copy_(x)
    xs[:, 1].view(batch, channels, width, height).copy_(x.transpose(2, 3))
    xs[:, 2:].copy_(xs[:, :2].flip(-1))
    return xs


def cross_merge(ys: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `cross_scan`, summing the directions: (batch, 4, C, L) -> (batch, C, H, W)."""
    batch, _, channels, _ = ys.shape
    pairs = ys[:, :2] + ys[:, 2:].flip(-1)  # (batch, 2, C, L) in row- and column-major order
    by_row = pairs[:, 0].view(batch, channels, height, width)
    by_column = pairs[:, 1].view(batch, channels, width, height).transpose(2, 3)
    return by_row + by_column


class SS2D(nn.Module):
    """2-D selective scan, VMamba forward type v05_noz (no gate branch), four directions.

    Parameters are registered in the release key order: x_proj_weight, dt_projs_weight,
    dt_projs_bias, A_logs, Ds, then out_norm, in_proj, conv2d, out_proj.
    """

    num_directions = 4

    def __init__(self, dim: int, *, d_state: int = 1, scan_backend: str = "auto") -> None:
        super().__init__()
        directions = self.num_directions
        self.dim = dim
        self.d_state = d_state
        self.dt_rank = math.ceil(dim / 16)
        self.scan_backend = scan_backend
        self.x_proj_weight = nn.Parameter(torch.empty(directions, self.dt_rank + 2 * d_state, dim))
        self.dt_projs_weight = nn.Parameter(torch.empty(directions, dim, self.dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(directions, dim))
        self.A_logs = nn.Parameter(torch.empty(directions * dim, d_state))
        self.Ds = nn.Parameter(torch.empty(directions * dim))
        self.out_norm = LayerNorm2d(dim)
        self.in_proj = Linear2d(dim, dim, bias=False)
        self.conv2d = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.out_proj = Linear2d(dim, dim, bias=False)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self, *, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        """VMamba "v0" init: A = -(1..N), D = 1, softplus(dt bias) log-uniform in [dt_min, dt_max].

        dt_projs_weight is uniform in +-R^-0.5, x_proj_weight like a default nn.Linear.
        """
        if self.A_logs.is_meta:  # shapes only (e.g. counting parameters): nothing to draw
            return
        self.A_logs.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)))
        self.Ds.fill_(1.0)
        nn.init.uniform_(self.dt_projs_weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        nn.init.uniform_(self.x_proj_weight, -(self.dim**-0.5), self.dim**-0.5)
        log_dt = torch.rand_like(self.dt_projs_bias) * math.log(dt_max / dt_min) + math.log(dt_min)
        dt = log_dt.exp().clamp_(min=1e-4)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, C, H, W) -> (batch, C, H, W)."""
        u = F.silu(self.conv2d(self.in_proj(x)))
        backend = resolve_backend(self.scan_backend, u.device, d_state=self.d_state)
        if backend == "triton" and self.d_state == 1:
            y = self._scan_fused(u)
        else:
            y = self._scan(u, backend)
        y = self.out_norm(y).to(x.dtype)
        return self.out_proj(y)

    def _scan_parameters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A, D, delta_bias) of the 4 * C scanned channels, at least float32."""
        return (
            -torch.exp(_at_least_float32(self.A_logs)),
            _at_least_float32(self.Ds),
            _at_least_float32(self.dt_projs_bias).reshape(-1),
        )

    def _scan(self, u: torch.Tensor, backend: str) -> torch.Tensor:
        """The four-direction scan through `cross_scan` / `cross_merge`: (batch, C, H, W) ->
        (batch, C, H, W), float32 (float64 for a float64 model), like the reference kernel."""
        batch, _, height, width = u.shape
        length = height * width
        rank, state = self.dt_rank, self.d_state
        xs = cross_scan(u)  # (batch, 4, C, L)
        projected = torch.matmul(self.x_proj_weight, xs)  # (batch, 4, R + 2N, L)
        dts = torch.matmul(self.dt_projs_weight, projected[:, :, :rank])  # (batch, 4, C, L)
        gates_b = projected[:, :, rank : rank + state]  # (batch, 4, N, L)
        gates_c = projected[:, :, rank + state :]
        A, D, delta_bias = self._scan_parameters()
        ys = selective_scan(
            xs.view(batch, -1, length),
            dts.view(batch, -1, length),
            A,
            gates_b,
            gates_c,
            D,
            delta_bias,
            delta_softplus=True,
            backend=backend,
        )
        return cross_merge(ys.view(batch, self.num_directions, -1, length), height, width)

    def _scan_fused(self, u: torch.Tensor) -> torch.Tensor:
        """`_scan` with the Triton kernels reading the four scan orders of the map in place.

        The projections are per position, so they run once on the map in its own order for all
        four directions; the kernels read direction k's step l at its map position and sum the
        directions into one output map (no 4x copies in or out).
        """
        batch, channels, height, width = u.shape
        y = ss2d_scan_triton(**self.fused_scan_inputs(u))  # (batch, L, C) float32 (or 64)
        return y.view(batch, height, width, channels).permute(0, 3, 1, 2)

    def fused_scan_inputs(self, u: torch.Tensor) -> dict[str, Any]:
        """The keyword arguments of `ss2d_scan_triton` for the map u (batch, C, H, W): what the
        fused scan runs on (benchmarks/triton_static.py compiles its launches from them)."""
        batch, channels, height, width = u.shape
        length = height * width
        rank, state = self.dt_rank, self.d_state
        directions = self.num_directions
        tokens = u.permute(0, 2, 3, 1).reshape(batch, length, channels)  # free if channels-last
        projected = F.linear(tokens, self.x_proj_weight.reshape(-1, channels))
        projected = projected.view(batch, length, directions, rank + 2 * state)
        ranks = projected[..., :rank].permute(2, 0, 1, 3).reshape(directions, -1, rank)
        dts = torch.matmul(ranks, self.dt_projs_weight.transpose(1, 2))  # (4, batch * L, C)
        gates = projected[..., rank:].permute(0, 2, 3, 1)  # (batch, 4, 2, L)
        A, D, delta_bias = self._scan_parameters()
        return {
            "u": tokens,
            "delta": dts.view(directions, batch, length, channels),
            "A": A,
            "B": gates[:, :, 0],
            "C": gates[:, :, 1],
            "D": D,
            "delta_bias": delta_bias,
            "height": height,
            "width": width,
        }


def _at_least_float32(parameter: torch.Tensor) -> torch.Tensor:
    return parameter.float() if parameter.dtype in _HALF_DTYPES else parameter


class Mlp(nn.Module):
    """1x1 conv C -> 4C, exact GELU, 1x1 conv 4C -> C."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Linear2d(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear2d(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, C, H, W) -> (batch, C, H, W)."""
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
    """Pre-norm block: x + DropPath(SS2D(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(
        self, dim: int, *, drop_path_rate: float, mlp_ratio: float = 4.0, scan_backend: str
    ) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.op = SS2D(dim, scan_backend=scan_backend)
        self.drop_path = DropPath(drop_path_rate)
        self.norm2 = LayerNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, C, H, W) -> (batch, C, H, W)."""
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _patch_embed(dim: int) -> nn.Sequential:
    """Patch embed v2: two stride-2 3x3 convs (1 -> dim/2 -> dim) with LayerNorm2d, GELU between.

    Slots 1, 3 and 6 are identities so the keys match the release (patch_embed.0/2/5/7).
    """
    return nn.Sequential(
        nn.Conv2d(1, dim // 2, kernel_size=3, stride=2, padding=1),
        nn.Identity(),
        LayerNorm2d(dim // 2),
        nn.Identity(),
        nn.GELU(),
        nn.Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1),
        nn.Identity(),
        LayerNorm2d(dim),
    )


def _downsample(dim: int, out_dim: int) -> nn.Sequential:
    """Downsample v3: stride-2 3x3 conv then LayerNorm2d (keys downsample.1 and downsample.3)."""
    return nn.Sequential(
        nn.Identity(),
        nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1),
        nn.Identity(),
        LayerNorm2d(out_dim),
    )


class Classifier(nn.Module):
    """LayerNorm2d, global average over (H, W), linear head."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        self.head = nn.Linear(dim, num_classes)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, C, H, W) -> (batch, C): normalised, then averaged over H and W."""
        return self.norm(x).mean((2, 3))


class DASS(nn.Module):
    """DASS backbone and head; input a log-mel fbank (batch, frames, mel_bins), output logits.

    Any widths, depths and frame counts work (each stride-2 conv maps n to ceil(n / 2)). Feature
    maps are (batch, C, H = mel, W = time), channels-last in memory.

    Args:
        num_classes: head outputs.
        dims: stage widths (even).
        depths: blocks per stage.
        drop_path_rate: stochastic depth of the last block; rates rise linearly from 0 over all
            blocks in order, the same rate for both branches of a block.
        scan_backend: selective scan backend, 'auto' | 'reference' | 'chunked' | 'mamba_ssm' |
            'triton'.
    """

    def __init__(
        self,
        *,
        num_classes: int = 4,
        dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (2, 2, 8, 2),
        drop_path_rate: float = 0.0,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        dims, depths = tuple(int(d) for d in dims), tuple(int(d) for d in depths)
        if not dims or len(dims) != len(depths):
            raise ValueError(f"DASS: dims {dims} and depths {depths} must have the same length")
        if any(d <= 0 or d % 2 for d in dims) or any(d <= 0 for d in depths):
            raise ValueError(
                f"DASS: dims must be positive and even, depths positive: {dims}, {depths}"
            )
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"DASS: drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if num_classes < MIN_NUM_CLASSES:
            raise ValueError(f"DASS: num_classes must be >= {MIN_NUM_CLASSES}, got {num_classes}")
        check_backend(scan_backend)
        self.dims = dims
        self.depths = depths
        self.num_classes = num_classes
        self._scan_backend = scan_backend

        self.patch_embed = _patch_embed(dims[0])
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.layers = nn.ModuleList()
        for stage, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            first = sum(depths[:stage])
            blocks = nn.Sequential(
                *(
                    VSSBlock(dim, drop_path_rate=rates[first + i], scan_backend=scan_backend)
                    for i in range(depth)
                )
            )
            last = stage == len(dims) - 1
            downsample = nn.Identity() if last else _downsample(dim, dims[stage + 1])
            self.layers.append(nn.Sequential(OrderedDict(blocks=blocks, downsample=downsample)))
        self.classifier = Classifier(dims[-1], num_classes)
        self._init_weights()

    @classmethod
    def small(cls, *, num_classes: int = 4, **kwargs: Any) -> DASS:
        """DASS-small: dims 96-192-384-768, depths 2-2-8-2, drop path 0.2 (overridable)."""
        return cls(num_classes=num_classes, **{**MODEL_PRESETS["small"], **kwargs})

    @classmethod
    def medium(cls, *, num_classes: int = 4, **kwargs: Any) -> DASS:
        """DASS-medium: dims 96-192-384-768, depths 2-2-20-2, drop path 0.3 (overridable)."""
        return cls(num_classes=num_classes, **{**MODEL_PRESETS["medium"], **kwargs})

    @torch.no_grad()
    def _init_weights(self) -> None:
        # VSSM re-draws every nn.Linear (the 1x1 layers included) as trunc-normal(0.02) with zero
        # bias; DASS then installs a fresh, default-initialised head. Convs keep their defaults,
        # LayerNorms start at (1, 0), the SSM parameters come from SS2D.reset_ssm_parameters.
        if self.classifier.head.weight.is_meta:
            return
        for module in self.modules():
            if isinstance(module, nn.Linear) and module is not self.classifier.head:
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def num_features(self) -> int:
        """Width of the pooled embedding (dims[-1])."""
        return self.dims[-1]

    @property
    def scan_backend(self) -> str:
        """Selective scan backend of every SS2D layer; assignable."""
        return self._scan_backend

    @scan_backend.setter
    def scan_backend(self, backend: str) -> None:
        check_backend(backend)
        self._scan_backend = backend
        for module in self.modules():
            if isinstance(module, SS2D):
                module.scan_backend = backend

    def block(self, stage: int, index: int) -> VSSBlock:
        """The `index`-th block of stage `stage` (output (batch, C, H, W); hooks allowed)."""
        if not 0 <= stage < len(self.depths) or not 0 <= index < self.depths[stage]:
            raise ValueError(
                f"DASS has no block ({stage}, {index}); depths are {list(self.depths)} "
                "(stage and index count from 0)"
            )
        block = self.layers[stage].get_submodule(f"blocks.{index}")
        assert isinstance(block, VSSBlock)
        return block

    def map_block_grid(
        self, output: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Applies `function` to a block output viewed as its (frequency, time) grid.

        A DASS block output already is that grid, (batch, C, H, W): `function(output)`.
        """
        return function(output)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, frames, mel_bins) -> patch embedding (batch, dims[0], H, W).

        H = ceil(mel_bins / 4) (frequency), W = ceil(frames / 4) (time).
        """
        if x.dim() != 3:
            raise ValueError(
                f"DASS expects a (batch, frames, mel_bins) fbank, got shape {tuple(x.shape)}"
            )
        image = x.unsqueeze(1).transpose(2, 3)  # (batch, 1, mel = height, frames = width)
        return self.patch_embed(image)

    @torch.no_grad()
    def stage_maps(self, frames: int, mel_bins: int) -> list[tuple[int, int, int]]:
        """(channels, height, width) of the map each stage's blocks (and SS2D scans) see for a
        (frames, mel_bins) input: DASS-small on 798 x 128 gives (96, 32, 200), (192, 16, 100),
        (384, 8, 50), (768, 4, 25). Runs the patch embedding and downsampling convs on an empty
        batch (free; also works for a model built on the meta device)."""
        weight = self.patch_embed.get_parameter("0.weight")
        h = self.embed(torch.empty(0, frames, mel_bins, device=weight.device, dtype=weight.dtype))
        maps = []
        for layer in self.layers:  # the blocks keep the map's shape (residual)
            maps.append((h.shape[1], h.shape[2], h.shape[3]))
            h = layer.get_submodule("downsample")(h)
        return maps

    def forward_from_embedding(self, h: torch.Tensor) -> torch.Tensor:
        """h: (batch, dims[0], H, W) -> pooled embedding (batch, num_features)."""
        for layer in self.layers:
            h = layer(h)
        return self.classifier.pool(h)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, frames, mel_bins) -> pooled embedding (batch, num_features)."""
        return self.forward_from_embedding(self.embed(x))

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled: (batch, num_features) -> logits (batch, num_classes)."""
        return self.classifier.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, frames, mel_bins) -> logits (batch, num_classes)."""
        return self.forward_head(self.forward_features(x))
