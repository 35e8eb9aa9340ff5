"""Reference selective scan: the plain sequential recurrence, the truth for every other backend.

Follows mamba-ssm's conventions (state-spaces/mamba `mamba_ssm/ops/selective_scan_interface.py`,
`selective_scan_ref`): one Python step per position, vectorised over batch, channels and state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 when any input is float64, else float32 (half inputs are scanned in float32)."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def expand_groups(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(batch, groups, N, L) or (batch, N, L) -> (batch, channels, N, L), by channel blocks."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    groups = x.shape[1]
    return x.repeat_interleave(channels // groups, dim=1)


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
) -> torch.Tensor:
    """Sequential selective scan (autograd through the loop; slow, for tests and benchmarks).

    Per batch item, channel d and state n: delta = softplus(delta + delta_bias) (when asked),
    h_t = exp(delta_t A[d, n]) h_{t-1} + delta_t B_t u_t, y_t = sum_n C_t h_t + D[d] u_t.

    Args:
        u: (batch, channels, L) scan input.
        delta: (batch, channels, L) step sizes before bias and softplus.
        A: (channels, N) negative decay rates.
        B: (batch, groups, N, L) input gates; channel d uses group d // (channels // groups).
        C: (batch, groups, N, L) output gates, grouped like B.
        D: (channels,) skip gains, or None.
        delta_bias: (channels,) added to delta, or None.
        delta_softplus: apply softplus to delta + delta_bias.

    Returns:
        (batch, channels, L) in float64 for float64 input, else float32.
    """
    dtype = compute_dtype(u, delta, A, B, C, D, delta_bias)
    u, delta, A = u.to(dtype), delta.to(dtype), A.to(dtype)
    channels = u.shape[1]
    B = expand_groups(B.to(dtype), channels)
    C = expand_groups(C.to(dtype), channels)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    decay = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])  # (batch, channels, N, L)
    drive = (delta * u).unsqueeze(2) * B  # (batch, channels, N, L)
    # unbind (not indexing) keeps the backward linear in L: one stack instead of L zero-filled
    # full-size gradients.
    decays, drives, gates = decay.unbind(-1), drive.unbind(-1), C.unbind(-1)
    state = u.new_zeros(decay.shape[:-1])
    outputs = []
    for t in range(u.shape[-1]):
        state = decays[t] * state + drives[t]
        outputs.append((state * gates[t]).sum(-1))
    y = torch.stack(outputs, dim=-1)
    if D is not None:
        y = y + D.to(dtype)[:, None] * u
    return y
