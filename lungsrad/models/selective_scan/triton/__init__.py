"""The `triton` selective-scan backend: Triton kernels (d_state 1) behind one torch custom op.

Laid out as flash-linear-attention lays out an op (`fla/ops/hgrn/`): `availability` (triton,
CUDA or the interpreter, inputs the kernels take), `launch_plan` (tiles and warps), `launches`
(one description of a pass's three launches, forward and backward), `op` (the torch.library op
pair, its autograd and the wrappers) and `kernels` (the Triton code, imported lazily). The
kernels run on CUDA tensors, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1
set before triton is imported), which is how CI tests them.
"""

from lungsrad.models.selective_scan.triton.availability import (
    TRITON_HINT,
    check_triton_inputs,
    is_interpreter_on,
    is_triton_installed,
    load_kernels,
)
from lungsrad.models.selective_scan.triton.launch_plan import (
    LaunchConfig,
    default_launch,
    plan_launch,
)
from lungsrad.models.selective_scan.triton.launches import (
    KernelLaunch,
    ScanPass,
    backward_launches,
    forward_launches,
)
from lungsrad.models.selective_scan.triton.op import (
    selective_scan_triton,
    ss2d_scan_arguments,
    ss2d_scan_triton,
    triton_scan_backward,
    triton_scan_forward,
)

__all__ = [
    "TRITON_HINT",
    "KernelLaunch",
    "LaunchConfig",
    "ScanPass",
    "backward_launches",
    "check_triton_inputs",
    "default_launch",
    "forward_launches",
    "is_interpreter_on",
    "is_triton_installed",
    "load_kernels",
    "plan_launch",
    "selective_scan_triton",
    "ss2d_scan_arguments",
    "ss2d_scan_triton",
    "triton_scan_backward",
    "triton_scan_forward",
]
