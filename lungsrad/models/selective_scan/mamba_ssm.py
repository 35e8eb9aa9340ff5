"""mamba-ssm's fused CUDA selective scan (`selective_scan_fn`) behind the reference's signature.

Follows state-spaces/mamba `mamba_ssm/ops/selective_scan_interface.py`; mamba-ssm is the optional
extra `cuda` and is imported lazily, only when this backend is used. Installed means its compiled
extension `selective_scan_cuda` imports: newer mamba-ssm builds it only on request
(MAMBA_KEEP_CUDA_BUILD=TRUE), and without it `selective_scan_fn` imports but fails when called.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from lungsrad.errors import BackendUnavailableError, UserError

INSTALL_COMMAND = (
    'MAMBA_FORCE_BUILD=TRUE MAMBA_KEEP_CUDA_BUILD=TRUE pip install --no-build-isolation ".[cuda]"'
)
INSTALL_HINT = (
    f"install mamba-ssm on a CUDA host with `{INSTALL_COMMAND}` (compiles its selective_scan_cuda "
    "extension from source: needs nvcc matching torch.version.cuda and a CUDA build of torch, "
    "and takes minutes per GPU architecture), or choose model.scan_backend 'auto'"
)

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.cache
def _import_selective_scan_fn() -> Callable[..., torch.Tensor] | ImportError:
    # torch (imported above) first: the extension links against its libraries.
    try:
        import selective_scan_cuda  # noqa: F401  (mamba-ssm's compiled scan)
    except ImportError as error:
        return ImportError(
            f"mamba-ssm's compiled extension selective_scan_cuda is missing ({error})"
        )
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError as error:
        return error
    return selective_scan_fn


def is_mamba_ssm_installed() -> bool:
    """Whether mamba-ssm's compiled `selective_scan_cuda` and its `selective_scan_fn` import
    (says nothing about a GPU)."""
    return not isinstance(_import_selective_scan_fn(), ImportError)


def load_selective_scan_fn() -> Callable[..., torch.Tensor]:
    """mamba-ssm's `selective_scan_fn`; ImportError with the install command when missing."""
    loaded = _import_selective_scan_fn()
    if isinstance(loaded, ImportError):
        raise BackendUnavailableError(
            f"selective scan backend 'mamba_ssm' is not available ({loaded}); {INSTALL_HINT}"
        )
    return loaded


def selective_scan_mamba(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
) -> torch.Tensor:
    """Selective scan with mamba-ssm's CUDA kernel; same maths and shapes as the reference.

    The kernel computes in float32 whatever the input dtype. u, delta, B and C are passed in
    u's dtype (the autocast dtype under AMP), A, D and delta_bias in float32, as the kernel
    requires; the output is returned as float32 like the reference DASS kernel's.

    Args:
        u: (batch, channels, L) CUDA tensor, float32 / float16 / bfloat16.
        delta: (batch, channels, L).
        A: (channels, N).
        B: (batch, groups, N, L) or (batch, N, L).
        C: like B.
        D: (channels,) or None.
        delta_bias: (channels,) or None.
        delta_softplus: apply softplus to delta + delta_bias.

    Returns:
        (batch, channels, L) float32.
    """
    if not u.is_cuda:
        raise UserError(
            f"selective scan backend 'mamba_ssm' needs CUDA tensors, got tensors on {u.device}; "
            "use backend 'chunked' (or 'auto') on CPU"
        )
    if u.dtype not in _KERNEL_DTYPES:
        raise ValueError(
            f"selective scan backend 'mamba_ssm' supports float32, float16 and bfloat16, got "
            f"{u.dtype}; use backend 'reference' or 'chunked' for {u.dtype}"
        )
    selective_scan_fn = load_selective_scan_fn()
    arguments = kernel_arguments(u, delta, A, B, C, D, delta_bias)
    # The kernel is not autocast-aware; keep autocast from touching anything inside the call.
    with torch.autocast(device_type="cuda", enabled=False):
        y = selective_scan_fn(
            *arguments[:5],
            D=arguments[5],
            z=None,
            delta_bias=arguments[6],
            delta_softplus=delta_softplus,
        )
    return y.float()


def kernel_arguments(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
) -> tuple[torch.Tensor | None, ...]:
    """(u, delta, A, B, C, D, delta_bias) as `selective_scan_cuda` checks them: u, delta, B, C
    contiguous in u's dtype; A, D, delta_bias contiguous float32."""
    dtype = u.dtype
    return (
        u.contiguous(),
        delta.to(dtype).contiguous(),
        A.float().contiguous(),
        B.to(dtype).contiguous(),
        C.to(dtype).contiguous(),
        D.float().contiguous() if D is not None else None,
        delta_bias.float().contiguous() if delta_bias is not None else None,
    )
