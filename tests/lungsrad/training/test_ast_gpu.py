"""AST on CUDA: the golden logits through the fused attention kernels, bf16 autocast close to
float32, and a captured (CUDA-graph) training step of the tiny AST with patch-mix CL that matches
the eager step. Needs a GPU; skipped elsewhere (the CPU golden tests are in models/test_ast.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lungsrad.data.loaders import split_indices
from lungsrad.metrics import TRAIN_CAPTURE_SECONDS, TRAIN_SAMPLES_PER_SECOND
from lungsrad.models import AST, load_ast_checkpoint
from lungsrad.training.loop import train_one_epoch
from lungsrad.training.optimization import learning_rate_factor
from lungsrad.training.setup import build_training_parts
from lungsrad.training.train_step import EpochData, TrainStep
from tests.golden import shared_folder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = torch.device("cuda")


@pytest.fixture
def golden() -> dict:
    path = shared_folder("ast_reference", "ast_tiny.pt") / "ast_tiny.pt"
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture
def full_float32():
    """No TF32 in convolutions or matmuls, so float32 means float32."""
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


def test_golden_logits_on_cuda(golden, full_float32):
    adapted = golden["adapted"]
    model = AST(num_classes=4, embed_dim=64, depth=2, num_heads=4, input_frames=798)
    load_ast_checkpoint(model, adapted["state_dict"])
    model = model.to(CUDA).eval()
    inputs = adapted["input"].to(CUDA)
    with torch.no_grad():
        logits = model(inputs).cpu()
        explicit, _ = model.forward_with_attention(inputs)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(inputs).float().cpu()
    # other kernels sum in another order than the CPU: a little looser than the CPU's 1e-5
    torch.testing.assert_close(logits, adapted["logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(explicit.cpu(), adapted["logits"], atol=1e-4, rtol=0)
    # bf16 keeps 8 bits of mantissa: logits of magnitude ~1 agree to a few hundredths
    torch.testing.assert_close(half, adapted["logits"], atol=0.1, rtol=0)


def _train_step(config, features, *, capture: bool) -> TrainStep:
    """The run's TrainStep with capture_step's capturable Adam in both modes (same update)."""
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, capture_step=True))
    parts = build_training_parts(config, CUDA)
    splits = split_indices(features, protocol="paper", validation_fraction=0.2, seed=0)
    data = EpochData(
        features=features.features.to(CUDA),
        labels=features.labels.to(CUDA),
        train_indices=torch.as_tensor(splits["train"]).to(CUDA),
    )
    return parts.train_step(data, capture=capture)


@pytest.mark.filterwarnings("ignore:model.dims, model.depths")  # the tiny fixture's DASS keys
def test_captured_ast_step_matches_the_eager_step(make_tiny_config, tiny_features, full_float32):
    config = make_tiny_config(
        model__backbone="ast",
        model__ast_size="tiny",
        method__patch_mix__mode="ast_style",
        train__device="cuda",
        train__max_steps_per_epoch=None,
        train__amp="off",
    )
    eager = _train_step(config, tiny_features, capture=False)
    captured = _train_step(config, tiny_features, capture=True)
    steps = -(-eager.data.train_indices.shape[0] // config.train.batch_size)
    assert steps > TrainStep.WARMUP_STEPS + 1, "too few steps to replay the graph"
    histories = []
    for step in (eager, captured):
        history = []
        for epoch in (1, 2):
            for group in step.optimizer.param_groups:
                group["lr"].fill_(
                    config.train.learning_rate * learning_rate_factor(epoch - 1, config.train)
                )
            metrics = train_one_epoch(
                step_function=step,
                data=step.data,
                train=config.train,
                seed=config.train.seed,
                epoch=epoch,
                show_progress=False,
            )
            metrics.pop(TRAIN_SAMPLES_PER_SECOND)
            metrics.pop(TRAIN_CAPTURE_SECONDS, None)
            history.append(metrics)
        histories.append(history)
    assert captured._graph is not None and captured.capture_seconds > 0
    for (name, want), got in zip(
        eager.model.state_dict().items(), captured.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)
    for want, got in zip(*histories, strict=True):
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-3), key
