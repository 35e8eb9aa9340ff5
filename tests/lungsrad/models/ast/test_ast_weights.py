"""load_ast_checkpoint: layouts, timm heads, head replacement, strict errors, wrong backbone."""

from __future__ import annotations

import logging

import pytest
import torch

from lungsrad.config import ExperimentConfig, ModelConfig, apply_overrides
from lungsrad.errors import UserError
from lungsrad.models import AST, DASS, build_model, load_ast_checkpoint, load_dass_checkpoint

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


def test_a_release_grid_is_read_as_12_x_101_whatever_the_model_grid():
    # 66 mel bins: 6 frequency rows, which also divide 1212; the release grid is still 12 x 101
    source = make_model(frames=1024, seed=1)
    target = make_model(frames=1024, seed=2, num_mel_bins=66)
    assert target.grid_shape == (6, 101)
    load_ast_checkpoint(target, release_state(source))
    grid = source.pos_embed.detach()[0, 2:].reshape(12, 101, 16)
    assert torch.equal(target.pos_embed.detach()[0, 2:], grid[3:9].reshape(-1, 16))


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


def test_a_checkpoint_without_pos_embed_is_refused():
    state = release_state(make_model(seed=1))
    del state["module.v.pos_embed"]
    with pytest.raises(UserError, match=r"1 missing \(pos_embed\)"):
        load_ast_checkpoint(make_model(frames=798), state)


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


def ast_config(**model_overrides) -> ExperimentConfig:
    overrides = {
        "data.segment_seconds": 2.0,  # 198 frames
        "data.num_mel_bins": 64,  # grid 5 x 19
        "model.backbone": "ast",
        "model.ast_size": "custom",
        "model.ast_embed_dim": 16,
        "model.ast_depth": 2,
        "model.ast_num_heads": 2,
    }
    overrides.update({f"model.{k}": v for k, v in model_overrides.items()})
    return apply_overrides(ExperimentConfig(), overrides)


def test_build_model_makes_the_configured_ast():
    model = build_model(ast_config(num_classes=2))
    assert isinstance(model, AST)
    assert (model.embed_dim, model.depth, model.num_heads) == (16, 2, 2)
    assert (model.input_frames, model.num_mel_bins, model.grid_shape) == (198, 64, (5, 19))
    assert model.num_classes == 2
    with torch.device("meta"):
        base = build_model(ExperimentConfig(model=ModelConfig(backbone="ast")))
    assert (base.embed_dim, base.depth, base.num_heads, base.grid_shape) == (768, 12, 12, (12, 79))
    width, tokens = 768, 2 + 12 * 79
    per_block = 2 * 2 * width + (width * 3 * width + 3 * width) + (width * width + width)
    per_block += (width * 4 * width + 4 * width) + (4 * width * width + width)
    expected = (tokens + 2) * width + (width * 256 + width) + 12 * per_block + 2 * width
    expected += 2 * width + width * 4 + 4  # mlp_head
    assert sum(p.numel() for p in base.parameters()) == expected == 85_989_124


def test_build_model_loads_and_adapts_the_release_file(tmp_path):
    source = make_model(frames=1024, num_classes=527, seed=1)  # AudioSet-like: 12 x 101, 527
    path = tmp_path / "audioset_10_10_0.4593.pth"
    torch.save(release_state(source), path)
    config = ast_config(checkpoint=str(path))
    model = build_model(config)
    # 64 mel bins: rows 4..8 of 12; 198 frames: columns 41..59 of 101
    grid = source.pos_embed.detach()[0, 2:].reshape(12, 101, 16)
    assert torch.equal(model.pos_embed.detach()[0, 2:], grid[4:9, 41:60].reshape(-1, 16))
    assert same_weights(source, model, skip=("pos_embed", "mlp_head."))
    swapped = build_model(ast_config(checkpoint=str(path), ast_pos_embed="patchmix_code"))
    assert not torch.equal(swapped.pos_embed, model.pos_embed)
    assert torch.equal(swapped.pos_embed[0, :2], model.pos_embed[0, :2])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        pytest.param(
            {"model.ast_num_heads": 3},
            r"model\.ast_num_heads \(3\) must divide model\.ast_embed_dim \(16\)",
            id="heads",
        ),
        pytest.param(
            {"model.ast_size": "custom", "model.ast_depth": None},
            r"model\.ast_size is 'custom': set model\.ast_depth",
            id="custom-size",
        ),
        pytest.param(
            {"data.segment_seconds": 0.1},
            r"data\.segment_seconds \(0\.1\) gives 8 frames",
            id="too-short",
        ),
        pytest.param(
            {"method.regularization.enabled": True, "method.regularization.stage": 2},
            r"method\.regularization\.stage must be in 0\.\.0 \(the model has 1 stage\)",
            id="stage",
        ),
        pytest.param(
            {"model.ast_pos_embed": "swapped"},
            r"model\.ast_pos_embed' must be one of 'reference' \| 'patchmix_code'",
            id="pos-embed-mode",
        ),
    ],
)
def test_bad_ast_config_names_the_key(overrides, match):
    with pytest.raises(UserError, match=match):
        apply_overrides(ast_config(), overrides)


def test_dass_settings_on_an_ast_are_warned_about():
    with pytest.warns(UserWarning, match=r"model\.dims, model\.depths: DASS settings, ignored"):
        apply_overrides(ast_config(), {"model.dims": [8, 16], "model.depths": [1, 1]})


def test_build_model_names_the_key_and_the_backbone_of_a_wrong_file(tmp_path):
    dass = DASS(num_classes=4, dims=(8, 16), depths=(1, 1))
    path = tmp_path / "DASS_small.pth"
    torch.save({f"module.v.{k}": v for k, v in dass.state_dict().items()}, path)
    with pytest.raises(UserError, match=r"^model\.checkpoint .*DASS_small\.pth: this is a DASS"):
        build_model(ast_config(checkpoint=str(path)))
    with pytest.raises(FileNotFoundError, match=r"audioset_10_10_0\.4593\.pth\) or a lungsrad"):
        build_model(ast_config(checkpoint=str(tmp_path / "absent.pth")))
