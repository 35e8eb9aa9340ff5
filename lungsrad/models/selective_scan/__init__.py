"""One selective-scan entry point with interchangeable backends (mamba-ssm's conventions).

Backends: `reference` (sequential loop, the truth), `chunked` (vectorised PyTorch, the CPU
default), `triton` (Triton kernels, d_state 1, the CUDA default), `mamba_ssm` (CUDA kernel of
state-spaces/mamba, optional build).
"""

from __future__ import annotations

import logging

import torch

from lungsrad.models.selective_scan.chunked import selective_scan_chunked
from lungsrad.models.selective_scan.mamba_ssm import (
    INSTALL_COMMAND,
    is_mamba_ssm_installed,
    load_selective_scan_fn,
    selective_scan_mamba,
)
from lungsrad.models.selective_scan.reference import selective_scan_reference
from lungsrad.models.selective_scan.triton import (
    is_interpreter_on,
    is_triton_installed,
    load_kernels,
    selective_scan_triton,
    ss2d_scan_triton,
)

__all__ = [
    "BACKENDS",
    "INSTALL_COMMAND",
    "available_backends",
    "check_backend",
    "resolve_backend",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_mamba",
    "selective_scan_reference",
    "selective_scan_triton",
    "ss2d_scan_triton",
]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "reference", "chunked", "mamba_ssm", "triton")
_IMPLEMENTATIONS = {
    "reference": selective_scan_reference,
    "chunked": selective_scan_chunked,
    "mamba_ssm": selective_scan_mamba,
    "triton": selective_scan_triton,
}
_logged_choices: set[tuple[str, str]] = set()


def available_backends() -> tuple[str, ...]:
    """Backends usable here: 'reference', 'chunked', plus 'mamba_ssm' with CUDA and mamba-ssm,
    plus 'triton' with triton and CUDA (or Triton's interpreter)."""
    names = ["reference", "chunked"]
    if torch.cuda.is_available() and is_mamba_ssm_installed():
        names.append("mamba_ssm")
    if is_triton_installed() and (torch.cuda.is_available() or is_interpreter_on()):
        names.append("triton")
    return tuple(names)


def check_backend(backend: str) -> None:
    """Raises ValueError for an unknown name, ImportError (with the install command) when
    'mamba_ssm' or 'triton' is asked for and cannot load. Call it when a model is built, to fail
    early."""
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown selective scan backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    if backend == "mamba_ssm":
        load_selective_scan_fn()
    if backend == "triton":
        load_kernels()


def _choose_auto(device: torch.device, d_state: int) -> tuple[str, str]:
    """(backend, why) for 'auto' on `device`."""
    if device.type != "cuda":
        return "chunked", f"the CPU default ({device.type} tensors)"
    if d_state == 1 and is_triton_installed():
        return "triton", "CUDA tensors and triton imports"
    triton_missing = (
        "triton does not import" if d_state == 1 else f"triton needs d_state 1, not {d_state}"
    )
    if is_mamba_ssm_installed():
        return "mamba_ssm", f"{triton_missing}, mamba-ssm is installed"
    return "chunked", f"SLOW on a GPU: {triton_missing} and mamba-ssm is not installed"


def resolve_backend(backend: str, device: torch.device, *, d_state: int = 1) -> str:
    """The concrete backend for tensors on `device` ('auto': triton on CUDA for d_state 1, else
    mamba_ssm when installed, else chunked). Logs the choice of 'auto' and why, once per device
    type and choice."""
    check_backend(backend)
    if backend != "auto":
        return backend
    chosen, reason = _choose_auto(device, d_state)
    key = (device.type, chosen)
    if key not in _logged_choices:
        _logged_choices.add(key)
        level = logging.WARNING if device.type == "cuda" and chosen == "chunked" else logging.INFO
        logger.log(
            level, "selective scan backend 'auto' on %s: using %r (%s)", device.type, chosen, reason
        )
    return chosen


def _check_shapes(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(
            f"selective_scan: u and delta must both be (batch, channels, L), got {tuple(u.shape)} "
            f"and {tuple(delta.shape)}"
        )
    batch, channels, length = u.shape
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"selective_scan: A must be ({channels}, N), got {tuple(A.shape)}")
    state = A.shape[1]
    for name, gate in (("B", B), ("C", C)):
        grouped = gate if gate.dim() == 4 else gate.unsqueeze(1)
        if (
            grouped.dim() != 4
            or grouped.shape[0] != batch
            or grouped.shape[2:] != (state, length)
            or channels % grouped.shape[1]
        ):
            raise ValueError(
                f"selective_scan: {name} must be ({batch}, groups, {state}, {length}) with groups "
                f"dividing {channels}, got {tuple(gate.shape)}"
            )
    if B.shape != C.shape:
        raise ValueError(f"selective_scan: B {tuple(B.shape)} and C {tuple(C.shape)} differ")
    for name, vector in (("D", D), ("delta_bias", delta_bias)):
        if vector is not None and vector.shape != (channels,):
            raise ValueError(
                f"selective_scan: {name} must be ({channels},), got {tuple(vector.shape)}"
            )


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """Selective scan y = SSM(u) with input-dependent step sizes (mamba-ssm's conventions).

    Per batch item, channel d and state n: delta = softplus(delta + delta_bias) (when asked),
    h_t = exp(delta_t A[d, n]) h_{t-1} + delta_t B_t u_t, y_t = sum_n C_t h_t + D[d] u_t.
    The state arithmetic is float32 (float64 for float64 input) whatever the input dtype.

    Args:
        u: (batch, channels, L).
        delta: (batch, channels, L), before bias and softplus.
        A: (channels, N), normally negative.
        B: (batch, groups, N, L) (or (batch, N, L) for one group); channel d reads group
            d // (channels // groups).
        C: like B.
        D: (channels,) skip gains, or None.
        delta_bias: (channels,), or None.
        delta_softplus: apply softplus to delta + delta_bias.
        backend: 'auto', 'reference', 'chunked', 'mamba_ssm' or 'triton' (d_state N = 1).

    Returns:
        (batch, channels, L): float64 for float64 input, otherwise float32.
    """
    _check_shapes(u, delta, A, B, C, D, delta_bias)
    implementation = _IMPLEMENTATIONS[resolve_backend(backend, u.device, d_state=A.shape[1])]
    return implementation(u, delta, A, B, C, D, delta_bias, delta_softplus)
