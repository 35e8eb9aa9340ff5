"""`fetch:NAME` in configs: model.checkpoint and data.root resolve to the fetched asset, a missing
asset is one line with the `lungsrad fetch` command; hub names download their files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lungsrad.assets.fetch import FetchOptions, fetch_asset
from lungsrad.assets.registry import find_asset, hf_asset
from lungsrad.config import ModelConfig, checkpoint_file
from lungsrad.data.icbhi import scan_dataset
from lungsrad.errors import UserError
from tests.http_files import Route


def test_a_missing_asset_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGSRAD_ASSETS", str(tmp_path))
    with pytest.raises(UserError, match="run `lungsrad fetch dass-medium-v2`") as error:
        checkpoint_file(ModelConfig(checkpoint="fetch:dass-medium-v2"))
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError, match="data.root: fetch:icbhi .*`lungsrad fetch icbhi`"):
        scan_dataset("fetch:icbhi")
    with pytest.raises(UserError, match="names weights"):
        scan_dataset("fetch:dass-medium-v2")
    with pytest.raises(UserError, match="unknown asset 'dass-huge'"):
        checkpoint_file(ModelConfig(checkpoint="fetch:dass-huge"))
    assert checkpoint_file(ModelConfig(checkpoint="none")) is None
    assert checkpoint_file(ModelConfig(checkpoint="a/b.pth")) == "a/b.pth"


def test_a_fetched_checkpoint_resolves(tmp_path, monkeypatch):
    weights = tmp_path / "dass-medium-v2" / "DASS_medium_v2.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"x")
    monkeypatch.setenv("LUNGSRAD_ASSETS", str(tmp_path))
    assert checkpoint_file(ModelConfig(checkpoint="fetch:dass-medium-v2")) == str(weights)


def test_hub_names_and_their_download(server, tmp_path):
    asset = find_asset("hf:saurabhati/DASS_small_AudioSet_50.1@abc123")
    assert asset.folder == "hf/saurabhati/DASS_small_AudioSet_50.1@abc123"
    assert asset.files[0].sources[0].url == (
        "https://huggingface.co/saurabhati/DASS_small_AudioSet_50.1/resolve/abc123/model.safetensors"
    )
    assert asset.model == {"backbone": "dass", "preset": "small"}
    with pytest.raises(UserError, match="expected hf:saurabhati/DASS_<size>"):
        hf_asset("hf:someone/else")
    # The download part, without the load check (load_dass_checkpoint reads hub files once
    # the conversion lands): safetensors missing, so the pytorch_model.bin fallback is taken.
    served = hf_asset("hf:saurabhati/DASS_medium_AudioSet_50.2")
    weights, config = served.files
    base = "/saurabhati/DASS_medium_AudioSet_50.2/resolve/main"
    server.routes[f"{base}/pytorch_model.bin"] = Route(body=b"\x80" * 4096)
    server.routes[f"{base}/config.json"] = Route(body=b'{"model_type": "dass"}')
    local = dataclasses.replace(
        served,
        model=None,
        files=tuple(
            dataclasses.replace(
                spec,
                sources=tuple(
                    dataclasses.replace(
                        s, url=server.url(s.url.removeprefix("https://huggingface.co"))
                    )
                    for s in spec.sources
                ),
            )
            for spec in served.files
        ),
    )
    path = fetch_asset(local, FetchOptions(directory=tmp_path, show_progress=False), say=print)
    assert path == tmp_path / served.folder / "pytorch_model.bin"
    assert (tmp_path / served.folder / "config.json").is_file()
    assert [r.path for r in server.requests] == [
        f"{base}/model.safetensors",
        f"{base}/pytorch_model.bin",
        f"{base}/config.json",
    ]


def test_a_search_space_keeps_a_fetch_name_once_it_resolves(tmp_path, monkeypatch):
    from tuning.search_space import load_search_space

    monkeypatch.setenv("LUNGSRAD_ASSETS", str(tmp_path / "assets"))
    space_file = tmp_path / "space.yaml"
    space_file.write_text(
        "name: fetched\n"
        f"base: {Path(__file__).resolve().parents[3] / 'configs' / 'synthetic_tiny.yaml'}\n"
        "base_overrides:\n"
        "  model.checkpoint: fetch:dass-medium-v2\n"
        "  data.root: fetch:icbhi\n"
        "parameters:\n"
        "  method.regularization.sigma: {grid: [0.5, 1.0]}\n"
        "search: grid\n",
        encoding="utf-8",
    )
    with pytest.raises(UserError, match=r"space\.yaml.*run `lungsrad fetch dass-medium-v2`"):
        load_search_space(space_file)
    weights = tmp_path / "assets" / "dass-medium-v2" / "DASS_medium_v2.pth"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"x")
    space = load_search_space(space_file)
    (config,) = space.variants.values()
    assert (config.model.checkpoint, config.data.root) == ("fetch:dass-medium-v2", "fetch:icbhi")


def test_sweep_data_flag_takes_the_fetch_name(tmp_path, monkeypatch):
    from tuning.settings import data_root_for

    monkeypatch.setenv("LUNGSRAD_ASSETS", str(tmp_path))
    with pytest.raises(UserError, match="`lungsrad fetch icbhi`"):
        data_root_for([], "fetch:icbhi", tmp_path)
    folder = tmp_path / "ICBHI_final_database"
    folder.mkdir()
    (folder / "ICBHI_challenge_train_test.txt").write_text("")
    assert data_root_for([], "fetch:icbhi", tmp_path) == folder


def test_hub_weights_are_load_checked(server, tmp_path):
    # Runs once load_dass_checkpoint reads the transformers format (models/dass/hf_format.py).
    hf_format = pytest.importorskip("lungsrad.models.dass.hf_format")
    import torch

    from tests.golden import shared_folder
    from tests.lungsrad.assets.conftest import TINY_DASS_MODEL

    golden = shared_folder("dass_reference", "dass_tiny.pt") / "dass_tiny.pt"
    state = torch.load(golden, map_location="cpu", weights_only=True)["state_dict"]
    state = {key.removeprefix("module.v."): value for key, value in state.items()}
    hf_format.save_hf_dass(state, tmp_path / "model.safetensors")
    server.routes["/hub/model.safetensors"] = Route(
        body=(tmp_path / "model.safetensors").read_bytes()
    )
    server.routes["/hub/config.json"] = Route(body=b'{"model_type": "dass"}')
    hub = hf_asset("hf:saurabhati/DASS_small_AudioSet_50.1")
    tiny = dataclasses.replace(hub, model=TINY_DASS_MODEL)
    options = FetchOptions(directory=tmp_path / "assets", show_progress=False)
    urls = (server.url("/hub/model.safetensors"), server.url("/hub/config.json"))
    path = fetch_asset(tiny, dataclasses.replace(options, urls=urls), say=print)
    assert path.name == "model.safetensors"
    # The same file under the small model's name does not load: DASS-small's keys differ.
    with pytest.raises(UserError, match="hf:saurabhati/DASS_small_AudioSet_50.1: "):
        fetch_asset(hub, dataclasses.replace(options, urls=urls, force=True), say=print)
