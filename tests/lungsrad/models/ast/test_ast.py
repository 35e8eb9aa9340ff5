"""AST: golden conformance with the reference code (both pos-embed layouts), surface, attention."""

from __future__ import annotations

import pytest
import torch

from lungsrad.models import AST, load_ast_checkpoint
from lungsrad.models.ast import adapt_pos_embed_grid, patch_grid
from tests.golden import shared_folder

REFERENCE = "ast_reference"  # shared/ast_reference: the reference implementation's outputs
TINY = {"embed_dim": 64, "depth": 2, "num_heads": 4}


@pytest.fixture(scope="module")
def golden() -> dict:
    path = shared_folder(REFERENCE, "ast_tiny.pt") / "ast_tiny.pt"
    return torch.load(path, map_location="cpu", weights_only=True)


def tiny(frames: int, *, dtype: torch.dtype = torch.float32) -> AST:
    return AST(num_classes=4, input_frames=frames, **TINY).to(dtype).eval()


def head_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefix = "mlp_head."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def test_golden_config_is_the_tiny_model(golden):
    config = golden["config"]
    assert (config["embed_dim"], config["depth"], config["num_heads"]) == (64, 2, 4)
    assert tuple(config["grid"]) == patch_grid(128, 1024) == tiny(1024).grid_shape
    assert tuple(golden["adapted"]["grid"]) == patch_grid(128, 798) == (12, 79)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_golden_release_logits(golden, dtype):
    model = tiny(1024, dtype=dtype)
    load_ast_checkpoint(model, golden["state_dict"])  # module.v.* / module.mlp_head.*
    with torch.no_grad():
        logits = model(golden["input"].to(dtype))
    if dtype == torch.float32:
        torch.testing.assert_close(logits, golden["logits"], atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(logits, golden["logits_float64"], atol=1e-7, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_golden_adapted_logits(golden, dtype):
    adapted = golden["adapted"]
    model = tiny(adapted["input_frames"], dtype=dtype)
    load_ast_checkpoint(model, adapted["state_dict"])  # v.* / mlp_head.*, no module.
    with torch.no_grad():
        logits = model(adapted["input"].to(dtype))
    if dtype == torch.float32:
        torch.testing.assert_close(logits, adapted["logits"], atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(logits, adapted["logits_float64"], atol=1e-7, rtol=0)


def test_golden_adaptation_reproduces_the_reference_bit_for_bit(golden, caplog):
    adapted = golden["adapted"]
    model = tiny(798)
    with caplog.at_level("INFO", logger="lungsrad.models.ast"):
        load_ast_checkpoint(model, golden["state_dict"])  # 12 x 101 -> 12 x 79
    assert not any("new mlp_head" in r.getMessage() for r in caplog.records)  # 4 classes: kept
    ours = model.state_dict()
    for key, value in adapted["state_dict"].items():
        name = key.removeprefix("v.")
        if name.startswith(("head.", "head_dist.", "mlp_head.")):
            continue  # timm heads are dropped; the reference drew a new mlp_head
        assert torch.equal(ours[name], value), key
    # with the reference's head the whole model is the reference's fine-tuning start
    model.mlp_head.load_state_dict(head_of(adapted["state_dict"]))
    with torch.no_grad():
        logits = model(adapted["input"])
    torch.testing.assert_close(logits, adapted["logits"], atol=1e-5, rtol=0)


def test_golden_patchmix_code_layout(golden):
    patchmix, adapted = golden["patchmix"], golden["adapted"]
    model = tiny(798)
    load_ast_checkpoint(model, golden["state_dict"], pos_embed_mode="patchmix_code")
    assert torch.equal(model.pos_embed.detach(), patchmix["pos_embed"])
    model.mlp_head.load_state_dict(head_of(adapted["state_dict"]))
    with torch.no_grad():
        features = model.forward_features(adapted["input"])
        logits = model.forward_head(features)
    torch.testing.assert_close(features, patchmix["features"], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, patchmix["logits"], atol=1e-5, rtol=0)
    # the swapped layout really differs from the reference one (the test could fail)
    assert (logits - adapted["logits"]).abs().max() > 1e-2


def test_explicit_attention_path_matches_the_fused_one(golden):
    adapted = golden["adapted"]
    model = tiny(798)
    load_ast_checkpoint(model, adapted["state_dict"])
    with torch.no_grad():
        logits, attentions = model.forward_with_attention(adapted["input"])
    torch.testing.assert_close(logits, adapted["logits"], atol=1e-5, rtol=0)
    assert len(attentions) == 2
    for attention in attentions:
        assert attention.shape == (2, 4, 950, 950)
        torch.testing.assert_close(attention.sum(-1), torch.ones(2, 4, 950))


def test_surface_shapes_and_token_order():
    torch.manual_seed(0)
    model = AST(num_classes=3, embed_dim=32, depth=3, num_heads=2, input_frames=120)
    assert model.grid_shape == (12, 11) and model.num_patches == 132
    assert (
        model.depths == (3,) and model.num_features == 32 and model.block(0, 2) is model.blocks[2]
    )
    x = torch.randn(2, 120, 128)
    patch_map = model.embed(x)
    assert patch_map.shape == (2, 32, 12, 11)
    tokens = model.token_sequence(x)
    assert tokens.shape == (2, 2 + 132, 32)
    # frequency-major: token 2 + f * T + t is patch (f, t) plus its positional row
    f, t = 5, 7
    expected = patch_map[:, :, f, t] + model.pos_embed[0, 2 + f * 11 + t]
    torch.testing.assert_close(tokens[:, 2 + f * 11 + t], expected)
    torch.testing.assert_close(
        tokens[:, 0], model.cls_token[0].expand(2, -1) + model.pos_embed[0, 0]
    )
    prefix, grid = model.split_tokens(tokens)
    assert prefix.shape == (2, 2, 32) and grid.shape == (2, 32, 12, 11)
    torch.testing.assert_close(grid[:, :, f, t], tokens[:, 2 + f * 11 + t])
    assert torch.equal(model.merge_tokens(prefix, grid), tokens)
    logits = model(x)
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, model.forward_head(model.forward_from_embedding(patch_map)))
    with pytest.raises(ValueError, match="no block"):
        model.block(1, 0)
    with pytest.raises(ValueError, match="120 frames"):
        model(torch.randn(2, 100, 128))


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match=r"num_heads \(5\) must divide embed_dim \(64\)"):
        AST(embed_dim=64, depth=1, num_heads=5, input_frames=100)


def test_adaptation_rules_on_a_numbered_grid():
    # entry (f, t) = 1000 f + t, so crops show which rows and columns were kept
    rows, cols = torch.meshgrid(torch.arange(12.0), torch.arange(101.0), indexing="ij")
    numbered = (1000 * rows + cols).reshape(1, -1, 1)
    cropped = adapt_pos_embed_grid(numbered, (12, 101), (12, 79)).reshape(12, 79)
    assert cropped[0, 0] == 11 and cropped[0, -1] == 89 and cropped[11, 0] == 11011
    rows_kept = adapt_pos_embed_grid(numbered, (12, 101), (5, 12)).reshape(5, 12)
    assert rows_kept[0, 0] == 4044 and rows_kept[-1, -1] == 8055
    same = adapt_pos_embed_grid(numbered, (12, 101), (12, 101))
    assert torch.equal(same, numbered)
    longer = adapt_pos_embed_grid(numbered, (12, 101), (12, 140)).reshape(12, 140)
    assert longer[3, 0] == pytest.approx(3000, abs=0.5) and longer[3, -1] == pytest.approx(
        3100, abs=0.5
    )


def test_training_step_reaches_every_parameter():
    torch.manual_seed(0)
    model = AST(num_classes=4, embed_dim=16, depth=2, num_heads=2, input_frames=40).train()
    loss = torch.nn.functional.cross_entropy(
        model(torch.randn(3, 40, 128)), torch.tensor([0, 1, 2])
    )
    loss.backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not no_grad
