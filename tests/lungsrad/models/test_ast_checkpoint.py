"""load_ast_checkpoint: layouts, timm heads, head replacement, strict errors, wrong backbone."""

from __future__ import annotations

import logging

import pytest
import torch

from lungsrad.errors import UserError
from lungsrad.models import AST, DASS, load_ast_checkpoint, load_dass_checkpoint

TINY = {"embed_dim": 16, "depth": 2, "num_heads": 2}


def make_model(*, frames: int = 1024, num_classes: int = 4, seed: int = 0, **sizes) -> AST:
    torch.manual_seed(seed)
    return AST(num_classes=num_classes, input_frames=frames, **{**TINY, **sizes})


def release_state(model: AST, *, prefix: str = "module.") -> dict[str, torch.Tensor]:
    """The model's weights as the reference names them (plus timm's unused ImageNet heads)."""
    state = {}
    for key, value in model.state_dict().items():
        name = key if key.startswith("mlp_head.") else f"v.{key}"
        state[prefix + name] = value.clone()
    width = model.embed_dim
    for head in ("head", "head_dist"):
        state[f"{prefix}v.{head}.weight"] = torch.randn(1000, width)
        state[f"{prefix}v.{head}.bias"] = torch.randn(1000)
    return state


def same_weights(a: AST, b: AST, *, skip: tuple[str, ...] = ()) -> bool:
    return all(
        torch.equal(x, b.state_dict()[key])
        for key, x in a.state_dict().items()
        if not key.startswith(skip)
    )


@pytest.mark.parametrize("prefix", ["module.", ""], ids=["release", "no-module"])
def test_release_layouts_round_trip(tmp_path, prefix):
    source = make_model(seed=1)
    path = tmp_path / "audioset_tiny.pth"
    torch.save(release_state(source, prefix=prefix), path)
    target = make_model(seed=2)
    load_ast_checkpoint(target, path)
    assert same_weights(source, target)


def test_own_state_dict_and_lungsrad_checkpoint(tmp_path):
    source = make_model(frames=798, seed=1)
    target = make_model(frames=798, seed=2)
    load_ast_checkpoint(target, source.state_dict())
    assert same_weights(source, target)
    path = tmp_path / "checkpoint.pt"
    torch.save(
        {"format": "lungsrad-checkpoint", "format_version": 1, "model": source.state_dict()}, path
    )
    other = make_model(frames=798, seed=3)
    load_ast_checkpoint(other, str(path))
    assert same_weights(source, other)


def test_new_head_for_another_class_count(caplog):
    source = make_model(num_classes=527, seed=1)
    target = make_model(num_classes=2, seed=2)
    with caplog.at_level(logging.INFO, logger="lungsrad.models.ast"):
        load_ast_checkpoint(target, release_state(source))
    assert same_weights(source, target, skip=("mlp_head.",))
    messages = [r.getMessage() for r in caplog.records if "mlp_head" in r.getMessage()]
    assert len(messages) == 1 and "527 classes" in messages[0] and "model 2" in messages[0]
    # a new head, default-initialised like PyTorch's LayerNorm and Linear
    assert torch.equal(target.mlp_head[0].weight, torch.ones(16))
    assert torch.equal(target.mlp_head[0].bias, torch.zeros(16))
    assert target.mlp_head[1].weight.abs().max() <= 16**-0.5


def test_pos_embed_is_adapted_to_a_shorter_input():
    source = make_model(frames=1024, seed=1)
    target = make_model(frames=798, seed=2)
    load_ast_checkpoint(target, release_state(source))
    assert same_weights(source, target, skip=("pos_embed",))
    grid = source.pos_embed.detach()[0, 2:].reshape(12, 101, 16)
    expected = torch.cat((source.pos_embed.detach()[0, :2], grid[:, 11:90].reshape(-1, 16)), dim=0)
    assert torch.equal(target.pos_embed.detach()[0], expected)


def test_timm_heads_are_the_only_extra_keys_allowed():
    state = release_state(make_model(seed=1))
    state["module.v.fc_norm.weight"] = torch.ones(16)
    with pytest.raises(UserError, match=r"1 unexpected \(fc_norm\.weight\)"):
        load_ast_checkpoint(make_model(), state)


def test_missing_and_mis_shaped_keys_are_listed_and_nothing_loads():
    target = make_model(seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = release_state(make_model(seed=1))
    del state["module.v.blocks.1.attn.proj.bias"]
    state["module.v.norm.weight"] = torch.ones(17)
    with pytest.raises(UserError) as error:
        load_ast_checkpoint(target, state)
    message = str(error.value)
    assert "1 missing (blocks.1.attn.proj.bias)" in message
    assert "1 mis-shaped (norm.weight (17,) vs model (16,))" in message
    assert "\n" not in message
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_a_wider_checkpoint_is_refused():
    state = release_state(make_model(seed=1, embed_dim=32))
    with pytest.raises(UserError, match="mis-shaped"):
        load_ast_checkpoint(make_model(), state)


def test_pos_embed_that_lies_on_no_grid_is_refused():
    state = release_state(make_model(seed=1))
    state["module.v.pos_embed"] = torch.randn(1, 2 + 12 * 101 + 5, 16)
    with pytest.raises(UserError, match=r"pos_embed has 1217 patch rows.*cannot be adapted"):
        load_ast_checkpoint(make_model(frames=798), state)


def test_a_dass_file_given_to_ast_names_dass(tmp_path):
    dass = DASS(num_classes=4, dims=(8, 16), depths=(1, 1))
    path = tmp_path / "DASS_small.pth"
    torch.save({f"module.v.{k}": v for k, v in dass.state_dict().items()}, path)
    with pytest.raises(UserError, match=r"DASS_small\.pth: this is a DASS checkpoint, not an AST"):
        load_ast_checkpoint(make_model(), path)


def test_an_ast_file_given_to_dass_names_ast(tmp_path):
    path = tmp_path / "audioset_10_10_0.4593.pth"
    torch.save(release_state(make_model(seed=1)), path)
    with pytest.raises(UserError, match=r"0\.4593\.pth: this is an AST checkpoint, not a DASS"):
        load_dass_checkpoint(DASS(num_classes=4, dims=(8, 16), depths=(1, 1)), path)


def test_bad_pos_embed_mode():
    with pytest.raises(UserError, match="model.ast_pos_embed must be one of"):
        load_ast_checkpoint(make_model(), {}, pos_embed_mode="swapped")  # type: ignore[arg-type]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="AST checkpoint not found: .*nowhere.pth"):
        load_ast_checkpoint(make_model(), tmp_path / "nowhere.pth")
