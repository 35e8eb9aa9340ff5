"""The optimiser, schedule and weight averaging against the reference's formulas (ICBHI_HADES
util/misc.py `set_optimizer`, `adjust_learning_rate`, `update_moving_average`; main.py)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lungsrad.config import TrainConfig
from lungsrad.training.optimization import WeightAveraging, build_optimizer
from lungsrad.training.setup import build_training_parts
from lungsrad.training.train_step import conform_optimizer


# The scheduler is stepped without training steps between (only the lr sequence is read).
@pytest.mark.filterwarnings("ignore:Detected call of")
def test_learning_rates_per_epoch_equal_the_reference_schedule(make_tiny_config):
    config = make_tiny_config(
        train__num_epochs=50,
        train__learning_rate=5e-5,
        train__optimizer="adamw",
        train__schedule="cosine_from_epoch_1",
        train__min_learning_rate_factor=1e-3,
    )
    parts = build_training_parts(config, torch.device("cpu"))
    assert type(parts.optimizer) is torch.optim.AdamW
    assert parts.optimizer.param_groups[0]["weight_decay"] == config.train.weight_decay
    rates = []
    for _ in range(50):  # the lr epoch e trains with; the run steps the scheduler after it
        rates.append(parts.optimizer.param_groups[0]["lr"])
        parts.scheduler.step()
    lr, epochs = 5e-5, 50
    eta_min = lr * 0.1**3  # lr_decay_rate 0.1 cubed
    reference = [
        eta_min + (lr - eta_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2
        for epoch in range(1, epochs + 1)
    ]
    assert rates == pytest.approx(reference, rel=1e-12, abs=0)
    assert rates[-1] == pytest.approx(5e-8, rel=1e-12)  # the last epoch at the floor
    # Our own cosine (the library default) starts at the peak and ends near 0, with Adam.
    parts = build_training_parts(make_tiny_config(train__num_epochs=50), torch.device("cpu"))
    assert type(parts.optimizer) is torch.optim.Adam
    assert parts.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # the tiny peak


def test_adamw_decays_decoupled_and_adam_adds_l2_to_the_gradient():
    lr, decay, weight, gradient = 0.1, 0.1, 2.0, 0.5

    def one_step(kind: str) -> float:
        parameter = nn.Parameter(torch.tensor([weight], dtype=torch.float64))
        train = TrainConfig(optimizer=kind, learning_rate=lr, weight_decay=decay)
        optimizer = build_optimizer([parameter], train, capturable=False)
        parameter.grad = torch.tensor([gradient], dtype=torch.float64)
        optimizer.step()
        return float(parameter.detach())

    # Adam's first step moves by lr * m / sqrt(v) = lr * sign(g') for any g'.
    adam_gradient = gradient + decay * weight
    adam = weight - lr * adam_gradient / (abs(adam_gradient) + 1e-8)
    adamw = weight * (1 - lr * decay) - lr * gradient / (abs(gradient) + 1e-8)
    assert one_step("adam") == pytest.approx(adam, abs=1e-12)  # 1.9
    assert one_step("adamw") == pytest.approx(adamw, abs=1e-12)  # 1.88
    assert abs(adam - adamw) > 0.01


def test_adamw_conforms_to_the_captured_and_eager_forms():
    parameter = nn.Parameter(torch.ones(3))
    optimizer = build_optimizer([parameter], TrainConfig(optimizer="adamw"), capturable=False)
    parameter.grad = torch.ones(3)
    optimizer.step()
    cpu = torch.device("cpu")
    conform_optimizer(optimizer, capturable=True, device=cpu)
    group = optimizer.param_groups[0]
    assert group["capturable"] and isinstance(group["lr"], torch.Tensor)
    conform_optimizer(optimizer, capturable=False, device=cpu)
    before = parameter.detach().clone()
    optimizer.step()
    assert not torch.equal(parameter.detach(), before)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.norm = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.linear(x))))


def _reference_step(model, optimizer, x, y, beta):
    """The reference's loop body: deepcopy the state_dict, forward, step, average, load."""
    before = copy.deepcopy(model.state_dict())
    loss = nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    averaged = {
        key: before[key] * beta + (1 - beta) * value for key, value in model.state_dict().items()
    }
    model.load_state_dict(averaged)


def test_weight_averaging_equals_the_reference_update():
    torch.manual_seed(0)
    ours = _Tiny()
    reference = copy.deepcopy(ours)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    train = TrainConfig(optimizer="adamw", learning_rate=0.05)
    optimizers = [
        build_optimizer(m.parameters(), train, capturable=False) for m in (ours, reference)
    ]
    averaging = WeightAveraging(ours, beta=0.5)
    unaveraged = copy.deepcopy(ours)
    for _ in range(3):
        _reference_step(reference, optimizers[1], x, y, beta=0.5)
        averaging.snapshot()
        loss = nn.functional.cross_entropy(ours(x), y)
        optimizers[0].zero_grad()
        loss.backward()
        optimizers[0].step()
        averaging.blend()
    state, expected = ours.state_dict(), reference.state_dict()
    for key in expected:
        assert state[key].dtype == expected[key].dtype, key
        torch.testing.assert_close(state[key], expected[key], rtol=1e-6, atol=1e-7, msg=key)
    # Averaging moved every float entry: the BatchNorm statistics and the weights alike.
    for key, value in unaveraged.state_dict().items():
        if value.is_floating_point():
            assert not torch.equal(value, state[key]), key
    # The reference's n + 0.5 truncates: num_batches_tracked never advances under averaging.
    assert int(state["norm.num_batches_tracked"]) == 0
