"""Hugging Face transformers-DASS weights: the tiny reference DASS written in that format by
the test, loaded back through load_dass_checkpoint / build_model (equal logits), the conversion
both ways on the state dict, and files that are no DASS checkpoint refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lungsrad.config import ModelConfig
from lungsrad.errors import UserError
from lungsrad.models import DASS, build_model, load_dass_checkpoint
from lungsrad.models.dass.hf_format import (
    from_hf_state,
    is_hf_dass_state,
    save_hf_dass,
    to_hf_state,
)
from tests.golden import shared_folder

TINY = {"dims": (32, 64, 128, 256), "depths": (1, 1, 2, 1)}


@pytest.fixture(scope="module")
def golden() -> dict:
    path = shared_folder("dass_reference", "dass_tiny.pt") / "dass_tiny.pt"
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def release_state(golden) -> dict[str, torch.Tensor]:
    """The release file's state dict without its `module.v.` prefix (this DASS's names)."""
    return {key.removeprefix("module.v."): value for key, value in golden["state_dict"].items()}


def test_hf_layout_matches_transformers_dass(release_state):
    hf = to_hf_state(release_state)
    # Names and shapes of DASSForAudioClassification (transformers-DASS modeling_dass.py).
    assert hf["dass.patch_embeddings.projection.0.weight"].shape == (16, 1, 3, 3)
    assert hf["dass.patch_embeddings.projection.1.weight"].shape == (16,)
    assert hf["dass.patch_embeddings.projection.3.weight"].shape == (32, 16, 3, 3)
    assert hf["dass.patch_embeddings.projection.4.bias"].shape == (32,)
    block = "dass.layers.1.blocks.0.op."
    assert hf[block + "x_proj.weight"].shape == (4 * (4 + 2), 64)  # R = 4, N = 1
    assert hf[block + "dt_projs.weight"].shape == (4 * 64, 4)
    assert hf[block + "dt_projs_bias"].shape == (4, 64)
    assert hf[block + "A_logs"].shape == (4 * 64, 1)
    assert hf[block + "Ds"].shape == (4 * 64,)
    assert hf["dass.layers.0.downsample.down.weight"].shape == (64, 32, 3, 3)
    assert hf["dass.layers.0.downsample.norm.weight"].shape == (64,)
    assert hf["dass.norm.weight"].shape == (256,) and hf["head.weight"].shape == (4, 256)
    assert all(key.startswith(("dass.", "head.")) for key in hf)
    assert len(hf) == len(release_state) and is_hf_dass_state(hf)
    assert not is_hf_dass_state(release_state)
    # Group k of x_proj's (4, R+2N, D) is rows k*(R+2N) .. of the Linear weight.
    x_proj = release_state["layers.1.blocks.0.op.x_proj_weight"]
    assert torch.equal(hf[block + "x_proj.weight"][6:12], x_proj[1])


def test_state_dict_round_trips_both_ways(release_state):
    hf = to_hf_state(release_state)
    back = from_hf_state(hf)
    assert list(back) == list(release_state)
    assert all(torch.equal(back[key], release_state[key]) for key in release_state)
    again = to_hf_state(from_hf_state(hf))
    assert list(again) == list(hf) and all(torch.equal(again[k], hf[k]) for k in hf)


def _logits(model: torch.nn.Module, golden: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(golden["input"])


def test_hf_files_and_folders_load_with_equal_logits(golden, release_state, tmp_path):
    safetensors_folder, bin_folder = tmp_path / "DASS_tiny_st", tmp_path / "DASS_tiny_bin"
    save_hf_dass(release_state, safetensors_folder / "model.safetensors")
    save_hf_dass(release_state, bin_folder / "pytorch_model.bin")
    model = DASS(num_classes=4, **TINY)
    load_dass_checkpoint(model, safetensors_folder / "model.safetensors")
    torch.testing.assert_close(_logits(model, golden), golden["logits"], atol=1e-5, rtol=0)
    # model.checkpoint may name the file or the model folder holding it.
    for folder in (safetensors_folder, bin_folder):
        config = ModelConfig(
            preset="custom", dims=TINY["dims"], depths=TINY["depths"], checkpoint=str(folder)
        )
        logits = _logits(build_model(config), golden)
        torch.testing.assert_close(logits, golden["logits"], atol=1e-5, rtol=0)


def test_save_never_overwrites(release_state, tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        save_hf_dass(release_state, target)
    assert target.read_bytes() == b"keep"


def _refused(source: Path) -> str:
    with pytest.raises(UserError) as caught:
        load_dass_checkpoint(DASS(num_classes=4, **TINY), source)
    message = str(caught.value)
    assert "\n" not in message and str(source) in message, message
    return message


def test_files_that_are_no_dass_checkpoint_are_refused_in_one_line(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "model.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2), "decoder.bias": torch.zeros(2)}, foreign)
    message = _refused(foreign)
    assert "not a DASS checkpoint" in message and "Hugging Face DASS" in message

    foreign_bin = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, foreign_bin)
    assert "accepted: a DASS release file" in _refused(foreign_bin)

    text = tmp_path / "notes" / "model.safetensors"
    text.parent.mkdir()
    text.write_text("<html>not weights</html>\n")
    assert "not a safetensors file" in _refused(text)
    assert "not a safetensors file" in _refused(text.parent)  # the folder holding it

    empty = tmp_path / "empty_model"
    empty.mkdir()
    assert "model.safetensors or pytorch_model.bin" in _refused(empty)
