"""The matrix route of the SS2D lag profile: readable, O(L^2) memory, and the oracle the fast
walk of dass.py (`scan_lag_profile`, `axis_responses`) is tested against (kept on purpose as
tested public API; the driver does not call it). Shapes and maths: shared/dass_reference
ARCHITECTURE.md section 11, as described in dass.py's docstring.
"""

from __future__ import annotations

import torch


def mixing_matrix(
    delta: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    A: torch.Tensor | float,
    D: torch.Tensor | float,
) -> torch.Tensor:
    """The lower-triangular matrix M with y = M u for a d_state-1 selective scan.

    M[t, s] = C_t exp(A (S_t - S_s)) delta_s B_s for s <= t, 0 above the diagonal, plus D on the
    diagonal, with S the cumulative sum of delta (computed in float64; the upper triangle is
    masked before exp so it cannot overflow).

    Args:
        delta: (..., L) step sizes (after softplus).
        B: (..., L) input gains, broadcastable to delta.
        C: (..., L) output gains, broadcastable to delta.
        A: (...) decay rate (negative), broadcastable to delta's leading dims.
        D: (...) skip gain, same.

    Returns:
        (..., L, L) float64.
    """
    delta = delta.to(torch.float64)
    A = torch.as_tensor(A, dtype=torch.float64, device=delta.device)
    D = torch.as_tensor(D, dtype=torch.float64, device=delta.device)
    length = delta.shape[-1]
    cumulative = delta.cumsum(-1)
    difference = cumulative.unsqueeze(-1) - cumulative.unsqueeze(-2)  # [t, s] = S_t - S_s
    causal = torch.ones(length, length, dtype=torch.bool, device=delta.device).tril()
    decay = torch.exp(A[..., None, None] * difference.masked_fill(~causal, 0.0))
    decay = decay.masked_fill(~causal, 0.0)
    gains_in = (delta * B.to(torch.float64)).unsqueeze(-2)
    matrix = C.to(torch.float64).unsqueeze(-1) * decay * gains_in
    eye = torch.eye(length, dtype=torch.float64, device=delta.device)
    return matrix + D[..., None, None] * eye


def lag_profile(matrices: torch.Tensor) -> torch.Tensor:
    """Mean of each subdiagonal: k[tau] = mean over t >= tau of M[t, t - tau].

    Args:
        matrices: (..., n, n) lower-triangular.

    Returns:
        (..., n) lags 0..n-1.
    """
    n = matrices.shape[-1]
    rows = torch.arange(n, device=matrices.device).view(n, 1)
    lags = torch.arange(n, device=matrices.device).view(1, n)
    columns = (rows - lags).clamp(min=0)  # [t, tau] -> t - tau
    gathered = matrices.gather(-1, columns.expand(*matrices.shape[:-2], n, n))
    valid = (rows >= lags).to(matrices.dtype)
    counts = torch.arange(n, 0, -1, dtype=matrices.dtype, device=matrices.device)
    return (gathered * valid).sum(-2) / counts
