"""Whether the `triton` backend can run here: triton imports, CUDA or Triton's interpreter, and
inputs the kernels take. The kernels are imported lazily, only when the backend is used."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from lungsrad.errors import BackendUnavailableError, UserError

TRITON_HINT = (
    "Triton comes with torch's Linux CUDA wheels (elsewhere `pip install triton`); "
    "or choose model.scan_backend 'chunked'"
)
_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# What importing the kernels gave (the module or the ImportError), whether they were built for
# the interpreter, and SM counts per device: memoised in a plain dict rather than
# functools.cache, which torch.compile warns about and traces through.
_memo: dict[Any, Any] = {}


def _load_kernels() -> ModuleType | ImportError:
    if "kernels" not in _memo:
        try:
            from lungsrad.models.selective_scan.triton import kernels
        except ImportError as error:
            _memo["kernels"] = error
        else:
            from triton.runtime.interpreter import InterpretedFunction

            kernel = kernels.scan_chunk_output_kernel
            _memo["interpreted"] = isinstance(kernel, InterpretedFunction)
            _memo["kernels"] = kernels
    return _memo["kernels"]


def is_triton_installed() -> bool:
    """Whether triton imports (says nothing about a GPU)."""
    return not isinstance(_load_kernels(), ImportError)


def is_interpreter_on() -> bool:
    """Whether the kernels were built for Triton's interpreter (TRITON_INTERPRET=1 at import)."""
    _load_kernels()
    return bool(_memo.get("interpreted", False))


def processor_count(device: torch.device) -> int:
    """Streaming multiprocessors of the CUDA `device` (memoised)."""
    key = ("processors", device.index)
    if key not in _memo:
        _memo[key] = torch.cuda.get_device_properties(device).multi_processor_count
    return _memo[key]


def load_kernels() -> ModuleType:
    """The kernel module; ImportError naming the backend and the alternative when triton is
    missing."""
    kernels = _load_kernels()
    if isinstance(kernels, ImportError):
        raise BackendUnavailableError(
            f"selective scan backend 'triton' is not available ({kernels}); {TRITON_HINT}"
        )
    return kernels


def check_triton_inputs(u: torch.Tensor, A: torch.Tensor) -> None:
    """Raises (one line, naming the backend and what to do) for inputs the kernels cannot take.

    Args:
        u: (batch, ...) scan input; its device and dtype are checked.
        A: (channels, N) or (channels * directions,) decay rates; N must be 1.
    """
    load_kernels()
    if u.device.type != "cuda" and not is_interpreter_on():
        raise UserError(
            f"selective scan backend 'triton' needs CUDA tensors (or Triton's interpreter, "
            f"TRITON_INTERPRET=1), got tensors on {u.device}; use backend 'chunked' (or 'auto') "
            "on CPU"
        )
    if A.dim() == 2 and A.shape[1] != 1:
        raise UserError(
            f"selective scan backend 'triton' supports d_state N = 1 only, got N = {A.shape[1]}; "
            "use backend 'chunked' for N > 1"
        )
    if u.dtype not in _INPUT_DTYPES:
        raise ValueError(
            f"selective scan backend 'triton' supports float32, float16, bfloat16 and float64, "
            f"got {u.dtype}; use backend 'reference' for {u.dtype}"
        )
    if u.numel() == 0:
        raise ValueError(
            f"selective scan backend 'triton' needs a non-empty input, got shape {tuple(u.shape)}"
        )
    if u[0].numel() >= 2**31:  # offsets inside one batch item are 32-bit in the kernels
        raise UserError(
            f"selective scan backend 'triton' takes under 2**31 elements per batch item, got "
            f"{tuple(u.shape)}; use backend 'chunked' for this shape"
        )
