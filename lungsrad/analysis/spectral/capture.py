"""Block inputs captured with forward pre-hooks while the model runs: what each backbone's
analysis recomputes its token mixing from."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TypeVar

import torch
from torch import nn

K = TypeVar("K")  # keys of the modules whose inputs `captured_inputs` yields


def captured_inputs(
    model: nn.Module, features: torch.Tensor, modules: Mapping[K, nn.Module], *, batch_size: int
) -> Iterator[dict[K, torch.Tensor]]:
    """Runs the model over `features` (N, frames, mel_bins) in batches, in eval mode without
    gradients, and yields per batch the input each of `modules` received; the model's mode is
    restored and the hooks removed afterwards."""
    captured: dict[K, torch.Tensor] = {}

    def capture(key: K):
        def hook(module: nn.Module, args: tuple) -> None:
            captured[key] = args[0].detach()

        return hook

    handles = [module.register_forward_pre_hook(capture(k)) for k, module in modules.items()]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, features.shape[0], batch_size):
                captured.clear()
                model(features[start : start + batch_size].to(device=device, dtype=torch.float32))
                yield dict(captured)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
