"""The trial's device decision as a pure function of Ray's assignment and torch's view: a GPU that
Ray assigned but torch cannot see fails in one line naming the node and CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import pytest

from tuning.trainable import decide_device


def _decide(requested: str = "auto", *, gpu_ids=("1",), visible="1", count=0):
    return decide_device(
        requested,
        gpu_ids=list(gpu_ids),
        visible_devices=visible,
        cuda_device_count=count,
        node="Ray node abc123 (10.0.0.7)",
        torch_build="torch 2.11.0+cpu, CUDA build None",
    )


def test_an_assigned_gpu_torch_cannot_see_is_an_error_naming_node_and_devices():
    with pytest.raises(ValueError) as raised:
        _decide(gpu_ids=("1",), visible="1", count=0)
    message = str(raised.value)
    assert "\n" not in message
    for expected in (
        "Ray assigned GPU 1",
        "Ray node abc123 (10.0.0.7)",
        "CUDA_VISIBLE_DEVICES=1",
        "torch 2.11.0+cpu",
        "--num-gpus 0",
        "train.device: cpu",
    ):
        assert expected in message
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES=<unset>"):
        _decide("cuda", gpu_ids=("0",), visible="<unset>", count=0)


def test_visible_gpu_trains_on_cuda_and_no_gpu_or_cpu_config_trains_on_cpu():
    device, reason = _decide(gpu_ids=("0", "1"), visible="0,1", count=2)
    assert device == "cuda"
    assert reason == "Ray assigned GPU 0,1 (CUDA_VISIBLE_DEVICES=0,1); torch sees 2 device(s)"
    assert _decide(gpu_ids=(), count=0) == (
        "cpu",
        "the trial asked Ray for no GPU (resources.gpu: 0)",
    )
    # No GPU from Ray: a visible device belongs to another trial and is never touched.
    assert _decide(gpu_ids=(), count=4)[0] == "cpu"
    # An explicit CPU config is honoured even with a GPU assigned that torch cannot see.
    assert _decide("cpu", gpu_ids=("1",), count=0) == ("cpu", "train.device is 'cpu' in the config")
