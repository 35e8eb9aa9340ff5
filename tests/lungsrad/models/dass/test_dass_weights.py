"""load_dass_checkpoint and build_model: formats, head replacement, strict errors."""

from __future__ import annotations

import logging

import pytest
import torch

from lungsrad.config import ExperimentConfig, ModelConfig, apply_overrides
from lungsrad.models import DASS, build_model, load_dass_checkpoint

ARCH = {"dims": (8, 16), "depths": (1, 2)}


def make_model(num_classes: int = 4, seed: int = 0, **arch) -> DASS:
    torch.manual_seed(seed)
    return DASS(num_classes=num_classes, **(arch or ARCH))


def release_state(model: DASS) -> dict[str, torch.Tensor]:
    """The model's weights under release-file keys (DataParallel(DASS).state_dict())."""
    return {f"module.v.{key}": value.clone() for key, value in model.state_dict().items()}


def assert_same_weights(a: DASS, b: DASS, *, skip_head: bool = False) -> None:
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        if skip_head and key.startswith("classifier.head."):
            continue
        assert torch.equal(x, y), key


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda s: s, id="flat-release"),
        pytest.param(lambda s: {"model": s}, id="model-wrapper"),
        pytest.param(lambda s: {"state_dict": s}, id="state-dict-wrapper"),
    ],
)
def test_release_file_round_trip(tmp_path, wrap):
    source = make_model(seed=1)
    path = tmp_path / "DASS_tiny.pth"
    torch.save(wrap(release_state(source)), path)
    target = make_model(seed=2)
    load_dass_checkpoint(target, path)
    assert_same_weights(source, target)


def test_plain_and_lungsrad_checkpoints(tmp_path):
    source = make_model(seed=1)
    target = make_model(seed=2)
    load_dass_checkpoint(target, source.state_dict())
    assert_same_weights(source, target)

    checkpoint = {
        "format": "lungsrad-checkpoint",
        "format_version": 1,
        "config": "name: test\n",
        "model": source.state_dict(),
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
        "epoch": 3,
    }
    path = tmp_path / "checkpoint.pt"
    torch.save(checkpoint, path)
    target = make_model(seed=3)
    load_dass_checkpoint(target, str(path))
    assert_same_weights(source, target)


def test_head_is_dropped_when_class_count_differs(caplog):
    source = make_model(num_classes=527, seed=1)
    target = make_model(num_classes=4, seed=2)
    own_head = target.classifier.head.weight.clone()
    with caplog.at_level(logging.INFO, logger="lungsrad.models.dass.weights"):
        load_dass_checkpoint(target, release_state(source))
    assert_same_weights(source, target, skip_head=True)
    assert torch.equal(target.classifier.head.weight, own_head)
    assert any("527 classes" in r.getMessage() for r in caplog.records)


def test_head_is_loaded_when_class_count_matches():
    source = make_model(num_classes=4, seed=1)
    target = make_model(num_classes=4, seed=2)
    load_dass_checkpoint(target, release_state(source))
    assert torch.equal(target.classifier.head.weight, source.classifier.head.weight)


def test_mis_shaped_keys_are_listed():
    state = release_state(make_model(dims=(16, 32), depths=(1, 2)))
    with pytest.raises(ValueError, match=r"mis-shaped \(patch_embed\.0\.weight \(8, 1, 3, 3\) vs "):
        load_dass_checkpoint(make_model(), state)


def test_missing_and_unexpected_keys_are_listed():
    state = release_state(make_model())
    del state["module.v.layers.1.blocks.1.op.A_logs"]
    state["module.v.layers.1.blocks.9.norm.weight"] = torch.ones(16)
    with pytest.raises(ValueError) as error:
        load_dass_checkpoint(make_model(), state)
    message = str(error.value)
    assert "1 missing (layers.1.blocks.1.op.A_logs)" in message
    assert "1 unexpected (layers.1.blocks.9.norm.weight)" in message
    assert "\n" not in message


def test_many_missing_keys_are_counted(tmp_path):
    state = release_state(make_model(depths=(1, 1), dims=(8, 16)))
    path = tmp_path / "short.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as error:
        load_dass_checkpoint(make_model(), path)
    message = str(error.value)
    assert message.startswith(f"{path}: checkpoint does not match the model: 18 missing (")
    assert "layers.1.blocks.1.norm.weight, " in message and ", ...)" in message


def test_failed_load_leaves_the_model_untouched():
    target = make_model(seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = release_state(make_model(seed=1))
    state.pop("module.v.classifier.norm.bias")
    with pytest.raises(ValueError, match="missing"):
        load_dass_checkpoint(target, state)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


@pytest.mark.parametrize(
    ("content", "match"),
    [
        pytest.param(torch.zeros(3), "not a state dict", id="tensor"),
        pytest.param([torch.zeros(3)], "not a state dict", id="list"),
        pytest.param({"epoch": 3}, "not a state dict", id="dict-without-tensors"),
        pytest.param(
            {"format": "lungsrad-checkpoint", "format_version": 1},
            "without a 'model'",
            id="lungsrad-no-model",
        ),
        pytest.param(
            {"format": "lungsrad-checkpoint", "format_version": 0, "model": {}},
            "format version 0",
            id="lungsrad-other-version",
        ),
    ],
)
def test_not_a_state_dict(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match=match) as error:
        load_dass_checkpoint(make_model(), path)
    assert str(path) in str(error.value)


def test_foreign_file_is_rejected(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="not a PyTorch state dict"):
        load_dass_checkpoint(make_model(), path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_dass_checkpoint(make_model(), tmp_path / "nowhere.pth")


def custom_config(**model_overrides) -> ExperimentConfig:
    overrides = {
        "model.preset": "custom",
        "model.dims": [8, 16],
        "model.depths": [1, 2],
        "method.regularization.stage": 1,
        "method.regularization.blocks": [0],
    }
    overrides.update({f"model.{k}": v for k, v in model_overrides.items()})
    return apply_overrides(ExperimentConfig(), overrides)


def test_build_model_from_config(tmp_path):
    config = custom_config(num_classes=3, drop_path_rate=0.1, scan_backend="reference")
    model = build_model(config)
    assert model.dims == (8, 16) and model.depths == (1, 2) and model.num_classes == 3
    assert model.scan_backend == "reference"
    assert model.block(1, 1).drop_path.rate == pytest.approx(0.1)

    source = make_model(num_classes=527, seed=5)
    path = tmp_path / "DASS_custom.pth"
    torch.save(release_state(source), path)
    loaded = build_model(custom_config(checkpoint=str(path)))
    assert_same_weights(source, loaded, skip_head=True)
    assert loaded.num_classes == 4


def test_build_model_missing_checkpoint_names_the_path(tmp_path):
    path = tmp_path / "DASS_small.pth"
    with pytest.raises(FileNotFoundError, match=r"model\.checkpoint not found: .*DASS_small\.pth"):
        build_model(custom_config(checkpoint=str(path)))


def test_build_model_presets_on_meta():
    with torch.device("meta"):
        small = build_model(ModelConfig(preset="small"))
        medium = build_model(ExperimentConfig(model=ModelConfig(preset="medium")))
    assert small.depths == (2, 2, 8, 2) and medium.depths == (2, 2, 20, 2)
    assert small.block(3, 1).drop_path.rate == pytest.approx(0.2)
    assert medium.block(3, 1).drop_path.rate == pytest.approx(0.3)
