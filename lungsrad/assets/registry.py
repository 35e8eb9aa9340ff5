"""The names `lungsrad fetch` knows: each asset's files, their sources (tried in order), and the
size and digests where a publisher or a third party gave them. Imports nothing local but errors.

Sources were read from public code: ICBHI's URLs, size and MD5 from third-party download scripts
(the publisher gives no checksum); the DASS release file from Saurabhbhati/DASS release v0.2;
the AST AudioSet file from YuanGongND/ast src/models/ast_models.py (its code) and its README.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lungsrad.errors import UserError

# Where `lungsrad fetch` puts assets unless --dir or the environment variable says otherwise.
DEFAULT_ASSETS_DIR = "~/.cache/lungsrad/assets"
ASSETS_DIR_VARIABLE = "LUNGSRAD_ASSETS"
LOCK_FILE_NAME = "assets.lock.json"
ICBHI_FOLDER = "ICBHI_final_database"
ICBHI_SPLIT_FILE = "ICBHI_challenge_train_test.txt"

_ICBHI_SITE = "https://bhichallenge.med.auth.gr/sites/default/files/ICBHI_final_database"
_HF_NAME = re.compile(
    r"^hf:(?P<repo>saurabhati/DASS_(?P<size>small|medium)_AudioSet_[0-9]+(?:\.[0-9]+)?)"
    r"(?:@(?P<revision>[A-Za-z0-9._-]+))?$"
)
HF_NAME_PATTERN = "hf:saurabhati/DASS_<size>_AudioSet_<mAP>[@revision]"


@dataclass(frozen=True)
class Source:
    """One place a file can be downloaded from, and the name it lands under."""

    url: str
    file_name: str


@dataclass(frozen=True)
class AssetFile:
    """One file of an asset: where it comes from and what it must be."""

    key: str  # names the file in the lock file and in messages (e.g. "zip", "weights")
    sources: tuple[Source, ...]
    size: int | None = None  # bytes, when known (pinned)
    sha256: str | None = None  # pinned digest, when known
    md5: str | None = None  # a third party's MD5, checked where given
    content: str = "binary"  # binary | zip | text | json: how the payload is sniffed

    @property
    def file_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(source.file_name for source in self.sources))


@dataclass(frozen=True)
class Asset:
    """A name `lungsrad fetch` knows."""

    name: str
    kind: str  # "weights" (files in <dir>/<folder>) or "icbhi" (a database folder)
    files: tuple[AssetFile, ...]
    folder: str  # where the asset lands, relative to the assets folder
    # How fetched weights are checked: the model section fields they must load into (None: only
    # the digests), e.g. {"backbone": "dass", "preset": "medium"}.
    model: dict[str, object] | None = field(default=None, hash=False)
    weights_format: str = "release"  # release (torch .pth) | hf (transformers files)
    note: str = ""

    def describe_sources(self) -> str:
        return " | ".join(source.url for source in self.files[0].sources)


def _icbhi() -> Asset:
    zip_file = AssetFile(
        key="zip",
        sources=(
            Source(f"{_ICBHI_SITE}/ICBHI_final_database.zip", "ICBHI_final_database.zip"),
            Source(
                "https://dataverse.harvard.edu/api/access/datafile/7127117",
                "ICBHI_final_database.zip",
            ),
        ),
        size=1_978_998_275,
        md5="f6a5d0ea40bbcd25e17754f9d5ddae48",
        content="zip",
    )
    split_file = AssetFile(
        key="split",
        sources=(
            Source(f"{_ICBHI_SITE}/{ICBHI_SPLIT_FILE}", ICBHI_SPLIT_FILE),
            # The same file as raymin0223/patch-mix_contrastive_learning keeps it (fixed commit).
            Source(
                "https://raw.githubusercontent.com/raymin0223/patch-mix_contrastive_learning/"
                "23718c9e40781a151a656d5ea5133b184cd7b0a9/data/icbhi_dataset/official_split.txt",
                ICBHI_SPLIT_FILE,
            ),
        ),
        content="text",
    )
    return Asset(
        name="icbhi",
        kind="icbhi",
        files=(zip_file, split_file),
        folder=ICBHI_FOLDER,
        note="ICBHI 2017 database + official split file; size and MD5 from third-party scripts",
    )


def _release_weights(name: str, url: str, model: dict[str, object], note: str) -> Asset:
    file_name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    return Asset(
        name=name,
        kind="weights",
        files=(AssetFile(key="weights", sources=(Source(url, file_name),)),),
        folder=name,
        model=model,
        note=note,
    )


def _ast_audioset() -> Asset:
    # ast_models.py downloads this link (saved as audioset_10_10_0.4593.pth); the README links a
    # second copy of the 0.4593 model.
    sources = (
        Source(
            "https://www.dropbox.com/s/cv4knew8mvbrnvq/audioset_0.4593.pth?dl=1",
            "audioset_10_10_0.4593.pth",
        ),
        Source(
            "https://www.dropbox.com/s/ca0b1v2nlxzyeb4/audioset_10_10_0.4593.pth?dl=1",
            "audioset_10_10_0.4593.pth",
        ),
    )
    return Asset(
        name="ast-audioset",
        kind="weights",
        files=(AssetFile(key="weights", sources=sources),),
        folder="ast-audioset",
        model={"backbone": "ast", "ast_size": "base"},
        note="AST AudioSet 10/10 (0.4593 mAP); includes the ImageNet-initialised DeiT weights",
    )


def known_assets() -> dict[str, Asset]:
    """Every fixed name, in the order `lungsrad fetch --list` shows them."""
    assets = [
        _icbhi(),
        _release_weights(
            "dass-medium-v2",
            "https://github.com/Saurabhbhati/DASS/releases/download/v0.2/DASS_medium_v2.pth",
            {"backbone": "dass", "preset": "medium"},
            "DASS medium v2 (release v0.2), the file the Lung-SRAD authors fine-tune",
        ),
        _ast_audioset(),
    ]
    return {asset.name: asset for asset in assets}


# Hub names shown in --list; any name of the pattern is accepted.
LISTED_HF_NAMES = ("hf:saurabhati/DASS_medium_AudioSet_50.2",)


def hf_asset(name: str) -> Asset:
    """The asset of a Hugging Face hub name `hf:saurabhati/DASS_<size>_AudioSet_<mAP>[@rev]`."""
    match = _HF_NAME.match(name)
    if match is None:
        raise UserError(f"not a hub name: {name!r}; expected {HF_NAME_PATTERN}")
    repo, revision = match["repo"], match["revision"] or "main"
    base = f"https://huggingface.co/{repo}/resolve/{revision}"
    weights = AssetFile(
        key="weights",
        sources=(
            Source(f"{base}/model.safetensors", "model.safetensors"),
            Source(f"{base}/pytorch_model.bin", "pytorch_model.bin"),
        ),
    )
    config = AssetFile(
        key="config", sources=(Source(f"{base}/config.json", "config.json"),), content="json"
    )
    return Asset(
        name=name,
        kind="weights",
        files=(weights, config),
        folder=f"hf/{repo}@{revision}",
        model={"backbone": "dass", "preset": match["size"]},
        weights_format="hf",
        note=f"DASS {match['size']} from the Hugging Face hub (transformers format), {revision}",
    )


def find_asset(name: str) -> Asset:
    """The asset called `name`; a UserError listing the names otherwise."""
    if name.startswith("hf:"):
        return hf_asset(name)
    assets = known_assets()
    if name not in assets:
        raise UserError(
            f"unknown asset {name!r}; known: {', '.join(assets)}, {HF_NAME_PATTERN} "
            "(lungsrad fetch --list)"
        )
    return assets[name]
