"""The Table 1 AST configs: they load, describe AST-base from the AudioSet release file, and train a
step from a (tiny) release-layout file through the whole pipeline, head replaced and pos_embed
adapted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from lungsrad.assets.registry import ASSETS_DIR_VARIABLE
from lungsrad.config import AST_SIZES, expected_num_frames, load_config
from lungsrad.errors import UserError
from lungsrad.metrics import TRAIN_FREQ_LOSS, TRAIN_LOSS, TRAIN_TIME_LOSS
from lungsrad.models import AST, build_model
from lungsrad.training.run import run_experiment

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
TABLE1_AST = sorted(CONFIGS.glob("table1_ast_*.yaml"))


def test_the_table1_ast_configs_exist():
    assert [path.stem for path in TABLE1_AST] == ["table1_ast_finetune", "table1_ast_patchmix"]


@pytest.mark.parametrize("path", TABLE1_AST, ids=[path.stem for path in TABLE1_AST])
def test_table1_ast_config_is_ast_base_on_798_frames(path, tmp_path, monkeypatch):
    config = load_config(path)
    assert config.model.backbone == "ast" and config.model.ast_size == "base"
    assert config.model.checkpoint == "fetch:ast-audioset"  # audioset_10_10_0.4593.pth
    assert expected_num_frames(config.data) == 798 and config.data.num_mel_bins == 128
    train = config.train
    assert (train.num_epochs, train.batch_size, train.learning_rate) == (50, 8, 5e-5)
    monkeypatch.setenv(ASSETS_DIR_VARIABLE, str(tmp_path))  # nothing fetched there
    with pytest.raises(UserError, match="run `lungsrad fetch ast-audioset`"):
        build_model(config)  # never a random initialisation when the file is absent
    with torch.device("meta"):
        # the model section alone: the data defaults (798 x 128)
        model = build_model(dataclasses.replace(config.model, checkpoint=None))
    assert isinstance(model, AST) and model.grid_shape == (12, 79)
    assert (model.embed_dim, model.depth, model.num_heads) == (768, 12, 12)


@pytest.fixture(scope="module")
def tiny_release_file(tmp_path_factory) -> Path:
    """A tiny AST in the AudioSet release layout: 1024 frames x 128 bins, 527 classes."""
    torch.manual_seed(7)
    model = AST(num_classes=527, embed_dim=64, depth=2, num_heads=4, input_frames=1024)
    state = {
        (f"module.{k}" if k.startswith("mlp_head.") else f"module.v.{k}"): v
        for k, v in model.state_dict().items()
    }
    for head in ("head", "head_dist"):
        state[f"module.v.{head}.weight"] = torch.zeros(1000, 64)
        state[f"module.v.{head}.bias"] = torch.zeros(1000)
    path = tmp_path_factory.mktemp("release") / "audioset_tiny.pth"
    torch.save(state, path)
    return path


@pytest.mark.filterwarnings("ignore:model.dims, model.depths")  # the tiny fixture's DASS keys
@pytest.mark.parametrize("pos_embed", ["reference", "patchmix_code"])
@pytest.mark.parametrize("path", TABLE1_AST, ids=[path.stem for path in TABLE1_AST])
def test_table1_ast_config_trains_a_step_from_a_release_file(
    tmp_path, path, pos_embed, make_tiny_config, tiny_features, tiny_release_file
):
    table_config = load_config(path)
    patch_mix = table_config.method.patch_mix
    # An unprojected target (the reference's grad_block) needs projections as wide as the model.
    width = patch_mix.projection_dim if patch_mix.project_target else AST_SIZES["tiny"]["embed_dim"]
    config = make_tiny_config(
        table_config,
        model__ast_size="tiny",
        model__checkpoint=str(tiny_release_file),
        model__ast_pos_embed=pos_embed,
        train__num_epochs=1,
        train__max_steps_per_epoch=1,
        method__regularization__blocks=list(table_config.method.regularization.blocks),
        method__patch_mix__projection_dim=width,
    )
    expected = dataclasses.replace(
        table_config.method, patch_mix=dataclasses.replace(patch_mix, projection_dim=width)
    )
    assert config.method == expected and config.model.backbone == "ast"
    result = run_experiment(
        config, output_dir=tmp_path, feature_set=tiny_features, show_progress=False
    )
    row = result.history[0]
    assert np.isfinite(row[TRAIN_LOSS])
    assert (row[TRAIN_TIME_LOSS] > 0) == (table_config.method.patch_mix.mode == "ast_style")
    assert row[TRAIN_FREQ_LOSS] == 0
    assert result.info.scan_backend == "none"
