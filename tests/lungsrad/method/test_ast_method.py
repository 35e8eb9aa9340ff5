"""The Lung-SRAD method on AST: patch mixes on AST's (frequency, time) patch grid and spectral
regularization of chosen AST blocks, with the tiny AST on CPU."""

from __future__ import annotations

import pytest
import torch
import yaml

from lungsrad.cli import main
from lungsrad.config import PatchMixConfig, config_from_dict, regularized_blocks
from lungsrad.errors import UserError
from lungsrad.method.patch_mix import (
    MODE_MIXES,
    PatchMixObjective,
    mix_from_draw,
    random_patch_mix,
    sample_mix_draws,
    segment_mix,
    unpack_mix_draws,
)
from lungsrad.method.spectral_regularization import (
    GaussianSmoothing2d,
    attach_spectral_regularization,
    gaussian_kernel1d,
)
from lungsrad.models import AST, build_model
from lungsrad.models.ast import NUM_PREFIX_TOKENS
from tests.cli_errors import assert_one_line_error

FRAMES = 96  # 12 frequency x 9 time patches with 128 mel bins, strides 10
GRID = (12, 9)


def tiny_ast(**kwargs) -> AST:
    torch.manual_seed(0)
    return AST(num_classes=4, embed_dim=16, depth=2, num_heads=2, input_frames=FRAMES, **kwargs)


def features(batch: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, FRAMES, 128, generator=torch.Generator().manual_seed(seed))


def token_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, 2 + F * T, D) -> patch tokens as (B, F, T, D)."""
    return tokens[:, NUM_PREFIX_TOKENS:].reshape(tokens.shape[0], *GRID, tokens.shape[-1])


def test_the_patch_map_axes_are_the_inputs_frequency_and_time():
    model = tiny_ast().eval()
    assert model.grid_shape == GRID
    x = features(1)
    clean = model.embed(x)
    assert clean.shape == (1, 16, *GRID)
    later = x.clone()
    later[:, 50:56] += 3.0  # frames 50..55: time patches starting at 40 and 50 (16 wide)
    changed = (model.embed(later) - clean).abs().amax(dim=1)[0] > 0
    assert changed.any(dim=0).nonzero().flatten().tolist() == [4, 5]
    assert changed[:, 4:6].all()
    higher = x.clone()
    higher[:, :, 120:] += 3.0  # mel bins 120..127: only the last frequency row (110..125)
    changed = (model.embed(higher) - clean).abs().amax(dim=1)[0] > 0
    assert changed.any(dim=1).nonzero().flatten().tolist() == [11]


@pytest.mark.parametrize("axis", ["time", "freq"])
def test_axis_mix_replaces_whole_time_columns_or_frequency_rows_of_ast_tokens(axis):
    model = tiny_ast().eval()
    with torch.no_grad():
        embedding = model.embed(features())
        mixed = segment_mix(
            embedding, axis=axis, lam=0.6, generator=torch.Generator().manual_seed(3)
        )
        clean = token_grid(model.tokens_from_embedding(embedding))
        got = model.tokens_from_embedding(mixed.mixed)
    partner = clean[mixed.permutation]
    assert not torch.equal(mixed.permutation, torch.arange(4))
    from_partner = (token_grid(got) - partner).abs().amax(-1) == 0  # (B, F, T)
    own = (token_grid(got) - clean).abs().amax(-1) == 0
    cells = mixed.replaced  # (F, T)
    assert from_partner[:, cells].all() and own[:, ~cells].all()
    size = GRID[1] if axis == "time" else GRID[0]
    width = round(0.4 * size)
    band = cells.any(dim=0 if axis == "time" else 1).nonzero().flatten().tolist()
    assert len(band) == width and band == list(range(band[0], band[0] + width))
    if axis == "time":
        assert cells[:, band].all() and not cells[:, [t for t in range(9) if t not in band]].any()
    else:
        assert cells[band].all() and not cells[[f for f in range(12) if f not in band]].any()
    assert mixed.lam == pytest.approx(1 - width / size)
    # The cls and dist tokens are the model's own, never mixed.
    with torch.no_grad():
        own_prefix = model.tokens_from_embedding(embedding)[:, :NUM_PREFIX_TOKENS]
    torch.testing.assert_close(got[:, :NUM_PREFIX_TOKENS], own_prefix)


def test_ast_style_mix_replaces_random_patches_of_the_token_grid():
    model = tiny_ast().eval()
    with torch.no_grad():
        embedding = model.embed(features())
        mixed = random_patch_mix(embedding, lam=0.7, generator=torch.Generator().manual_seed(4))
        clean = token_grid(model.tokens_from_embedding(embedding))
        got = token_grid(model.tokens_from_embedding(mixed.mixed))
    count = round(0.3 * GRID[0] * GRID[1])
    assert int(mixed.replaced.sum()) == count
    # Not a band: the replaced patches are spread over several rows and columns.
    assert mixed.replaced.any(1).sum() > 1 and mixed.replaced.any(0).sum() > 1
    partner = clean[mixed.permutation]
    assert ((got - partner).abs().amax(-1) == 0)[:, mixed.replaced].all()
    assert ((got - clean).abs().amax(-1) == 0)[:, ~mixed.replaced].all()


@pytest.mark.parametrize("kind", ["time", "freq", "ast_style"])
def test_mixes_from_training_draws_on_the_ast_grid(kind):
    model = tiny_ast().eval()
    cells = GRID[0] * GRID[1]
    rows = sample_mix_draws(
        (kind,), alpha=1.0, num_steps=1, batch_size=4, cells=cells,
        generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    (draw,) = unpack_mix_draws(rows[0], (kind,), batch_size=4, cells=cells)
    with torch.no_grad():
        embedding = model.embed(features())
        mixed = mix_from_draw(embedding, kind=kind, draw=draw)
    replaced = mixed.replaced
    assert replaced.shape == GRID
    if kind == "time":
        assert torch.equal(replaced, replaced[:1].expand(GRID))  # same columns in every row
    if kind == "freq":
        assert torch.equal(replaced, replaced[:, :1].expand(GRID))  # same rows at every time
    kept = 1 - replaced.float().mean()
    torch.testing.assert_close(torch.as_tensor(mixed.lam, dtype=torch.float32), kept)


@pytest.mark.parametrize("mode", ["ast_style", "time", "freq", "dual"])
def test_patch_mix_objective_trains_an_ast(mode):
    model = tiny_ast().train()
    objective = PatchMixObjective(
        num_features=model.num_features,
        config=PatchMixConfig(mode=mode, projection_dim=8, gradient_block="target"),
    )
    labels = torch.tensor([0, 1, 2, 3])
    total, logits, parts = objective(
        model, features(), labels, generator=torch.Generator().manual_seed(6)
    )
    assert logits.shape == (4, 4) and torch.isfinite(total)
    used = {"ast_style": "ast_mix", "time": "time_mix", "freq": "freq_mix", "dual": "freq_mix"}
    assert parts[used[mode]] > 0
    total.backward()
    # "target" blocking: contrastive gradients reach the backbone through the mixed pass,
    # which starts at the patch embedding.
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    assert all(kind in ("time", "freq", "ast_style") for kind in MODE_MIXES[mode])


# ---------------------------------------------------------------------------------------------
# Spectral regularization: the token sequence seen as its frequency x time grid


def test_map_block_grid_smooths_on_the_grid_and_leaves_cls_and_dist_alone():
    model = tiny_ast()
    freq, time = GRID
    output = torch.zeros(1, 2 + freq * time, 3)
    output[:, :2] = 7.0  # cls and dist
    f0, t0 = 5, 8  # last time patch of row 5: its flat neighbour is row 6's first patch
    output[0, 2 + f0 * time + t0, 0] = 1.0
    smoothed = model.map_block_grid(output, GaussianSmoothing2d(3, 1.0))
    assert torch.equal(smoothed[:, :2], output[:, :2])
    grid = token_grid(smoothed)[0, :, :, 0]
    kernel = gaussian_kernel1d(3, 1.0)
    # Reflect padding mirrors about the last column (no copy of the edge cell): the impulse
    # there keeps the centre weight and spreads only to the left.
    along_time = torch.tensor([kernel[0], kernel[1]])
    expected = torch.zeros(freq, time)
    expected[f0 - 1 : f0 + 2, t0 - 1 : t0 + 1] = kernel.view(3, 1) * along_time.view(1, 2)
    torch.testing.assert_close(grid, expected)
    assert grid[f0 + 1, 0] == 0  # the next token in the flat order is not a grid neighbour
    for channel in (1, 2):
        assert token_grid(smoothed)[0, :, :, channel].abs().sum() == 0


def test_map_block_grid_is_the_identity_for_the_identity():
    model = tiny_ast()
    output = torch.randn(2, 2 + GRID[0] * GRID[1], 16)
    assert torch.equal(model.map_block_grid(output, lambda grid: grid), output)


def ast_config(**regularization):
    """A validated config for the tiny AST on 1 s of 64 mel bins (98 frames: a 5 x 9 grid)."""
    return config_from_dict(
        {
            "data": {"segment_seconds": 1.0, "num_mel_bins": 64},
            "model": {"backbone": "ast", "ast_size": "tiny"},
            "method": {"regularization": {"enabled": True, "stage": 0, **regularization}},
        }
    )


def test_regularization_smooths_the_chosen_ast_blocks_through_the_config():
    config = ast_config(blocks=[0], sigma=0.8, kernel_size=3)
    torch.manual_seed(0)
    model = build_model(config).eval()
    assert model.grid_shape == (5, 9)
    x = torch.randn(2, 98, 64, generator=torch.Generator().manual_seed(2))
    smoothing = GaussianSmoothing2d(3, 0.8)
    with torch.no_grad():
        tokens = model.map_block_grid(model.blocks[0](model.token_sequence(x)), smoothing)
        expected = model.forward_head(model.pool(model.blocks[1](tokens)))
        plain = model(x)
        handles = attach_spectral_regularization(model, config)
        got = model(x)
    assert len(handles) == 1
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, plain)
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain)


def test_smoothing_the_last_ast_block_leaves_the_logits_alone():
    # AST pools the cls and dist tokens only, and smoothing never touches them: regularizing
    # the last block changes nothing (docs/ast.md says so).
    config = ast_config(blocks=[1])
    model = build_model(config).eval()
    x = torch.randn(2, 98, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = model(x)
        attach_spectral_regularization(model, config)
        torch.testing.assert_close(model(x), plain)


def test_regularization_on_all_ast_blocks():
    config = ast_config(blocks="all")
    model = build_model(config)
    assert regularized_blocks(config) == [0, 1]
    assert len(attach_spectral_regularization(model, config)) == 2


@pytest.mark.parametrize(
    ("regularization", "match"),
    [
        ({"stage": 1, "blocks": [0]}, r"method\.regularization\.stage must be in 0\.\.0"),
        ({"blocks": [0, 2]}, r"method\.regularization\.blocks \[0, 2\] not valid: stage 0 has "),
        ({"blocks": [-1]}, r"method\.regularization\.blocks \[-1\] not valid"),
    ],
)
def test_regularization_placement_outside_the_ast_is_one_line_naming_the_key(regularization, match):
    with pytest.raises(UserError, match=match) as error:
        ast_config(**regularization)
    assert "\n" not in str(error.value)


def test_base_ast_has_twelve_blocks_to_regularize():
    values = {
        "model": {"backbone": "ast", "ast_size": "base"},
        "method": {"regularization": {"enabled": True, "stage": 0, "blocks": [10, 11]}},
    }
    assert regularized_blocks(config_from_dict(values)) == [10, 11]
    values["method"]["regularization"]["blocks"] = [12]
    with pytest.raises(UserError, match=r"blocks \[12\] not valid: stage 0 has blocks 0\.\.11"):
        config_from_dict(values)


@pytest.mark.parametrize("placement", [{"stage": 2, "blocks": [0]}, {"blocks": [5]}])
def test_cli_refuses_a_bad_ast_placement_before_training(tmp_path, capsys, placement):
    values = {
        "model": {"backbone": "ast", "ast_size": "tiny"},
        "method": {"regularization": {"enabled": True, "stage": 0, **placement}},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    out = tmp_path / "run"
    status = main(
        ["train", "--config", str(path), "--data", str(tmp_path / "none"), "--out", str(out)]
    )
    assert_one_line_error((status, capsys.readouterr().err), "method.regularization.", str(path))
    assert not out.exists()  # refused before any training output


def test_lung_srad_method_trains_an_ast_end_to_end(tmp_path):
    """Dual patch-mix and regularized blocks on a tiny AST through run_experiment (real wavs)."""
    from lungsrad.data.synthetic import write_synthetic_dataset
    from lungsrad.metrics import REPORT_SCORE, TRAIN_FREQ_LOSS, TRAIN_TIME_LOSS
    from lungsrad.training.run import run_experiment

    write_synthetic_dataset(tmp_path / "data", num_recordings=8, seed=2)
    config = config_from_dict(
        {
            "data": {
                "root": str(tmp_path / "data"),
                "segment_seconds": 1.0,
                "num_mel_bins": 32,
                "cache_dir": str(tmp_path / "cache"),
            },
            "model": {"backbone": "ast", "ast_size": "tiny"},
            "method": {
                "regularization": {"enabled": True, "stage": 0, "blocks": [0]},
                "patch_mix": {"mode": "dual", "projection_dim": 16},
            },
            "train": {
                "num_epochs": 1,
                "batch_size": 4,
                "max_steps_per_epoch": 2,
                "learning_rate": 1e-3,
                "time_mask": 20,
                "freq_mask": 8,
                "device": "cpu",
                "num_threads": 1,
            },
        }
    )
    result = run_experiment(config, output_dir=tmp_path / "run", show_progress=False)
    (epoch,) = result.history
    assert epoch[TRAIN_TIME_LOSS] > 0 and epoch[TRAIN_FREQ_LOSS] > 0
    assert 0 <= result.report[REPORT_SCORE] <= 100
