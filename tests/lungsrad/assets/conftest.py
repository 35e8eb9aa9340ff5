"""Fixtures of the fetch tests: the local file server, weight files made from the tiny reference
DASS (release format) and a tiny AST (the wrong backbone), and assets that point at them."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch

from lungsrad.assets.registry import Asset, AssetFile, Source
from tests.golden import shared_folder
from tests.http_files import FileServer

TINY_DASS_MODEL = {
    "backbone": "dass",
    "preset": "custom",
    "dims": (32, 64, 128, 256),
    "depths": (1, 1, 2, 1),
}


@pytest.fixture(scope="module")
def server():
    with FileServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_routes(request):
    """Each test starts with no routes and an empty request log on the module's server."""
    if "server" in request.fixturenames:
        running = request.getfixturevalue("server")
        running.routes.clear()
        running.requests.clear()


@pytest.fixture(scope="session")
def release_bytes() -> bytes:
    """The tiny reference DASS in the release format (flat state dict, `module.v.` keys)."""
    path = shared_folder("dass_reference", "dass_tiny.pt") / "dass_tiny.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def ast_bytes() -> bytes:
    """A tiny AST's state dict: weights of the other backbone."""
    from lungsrad.config import ModelConfig
    from lungsrad.models.build import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="ast", ast_size="tiny"))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def weights_asset(url: str, *, name: str = "dass-tiny", **pins) -> Asset:
    """A weights asset of the tiny DASS served at `url` (pins: size=, sha256=)."""
    file_name = url.split("?", 1)[0].rsplit("/", 1)[-1]
    spec = AssetFile(key="weights", sources=(Source(url, file_name),), **pins)
    return Asset(name=name, kind="weights", files=(spec,), folder=name, model=TINY_DASS_MODEL)


def icbhi_asset(zip_url: str, split_url: str) -> Asset:
    """The icbhi asset with the test server's URLs and no pins (the real size and MD5 are the
    published zip's)."""
    from lungsrad.assets.registry import known_assets

    real = known_assets()["icbhi"]
    zip_spec, split_spec = real.files
    return Asset(
        name="icbhi",
        kind="icbhi",
        files=(
            AssetFile("zip", (Source(zip_url, zip_spec.file_names[0]),), content="zip"),
            AssetFile("split", (Source(split_url, split_spec.file_names[0]),), content="text"),
        ),
        folder=real.folder,
    )


@pytest.fixture(scope="session")
def icbhi_files(tmp_path_factory) -> dict[str, bytes]:
    """A small synthetic database as the publisher ships it: the zip (recordings under
    ICBHI_final_database/), the split file apart, and a zip without that layout (wavs and
    annotations in different folders)."""
    from lungsrad.data.layout import SPLIT_FILE_NAME
    from lungsrad.data.synthetic import write_synthetic_dataset

    folder = tmp_path_factory.mktemp("icbhi") / "synthetic"
    write_synthetic_dataset(folder, num_recordings=6, seed=0)
    good, split_apart = io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(good, "w") as archive, zipfile.ZipFile(split_apart, "w") as wrong:
        for path in sorted(folder.iterdir()):
            if path.name == SPLIT_FILE_NAME:
                continue
            archive.write(path, f"ICBHI_final_database/{path.name}")
            wrong.write(path, f"{'audio' if path.suffix == '.wav' else 'labels'}/{path.name}")
    return {
        "zip": good.getvalue(),
        "split": (folder / SPLIT_FILE_NAME).read_bytes(),
        "wrong_zip": split_apart.getvalue(),
    }


def files_under(folder: Path) -> list[str]:
    """Every file below `folder` but the hidden lock files of concurrent fetches, relative and
    sorted (what a failed fetch may have left)."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".lock"))
    )
