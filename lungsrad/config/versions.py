"""Config versions: the current one and, for each older one, the values its keys had before
they were added or changed (so an old config means what it meant when it ran)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

# Bumped whenever a key is renamed or its meaning changes. A config of an older version is read
# with that version's meaning (`LEGACY_DEFAULTS`); a newer one is refused.
CONFIG_VERSION = 2

# Version 2 made the library defaults follow the authors' shared pipeline (raymin0223/
# patch-mix_contrastive_learning `util/icbhi_util.py`, `util/augmentation.py`): fades, truncated
# cuts with torchaudio's Resample, centred zero padding, and its SpecAugment. A version-1 config
# means what it meant when it ran: these are the values version 1 used, for keys it did not have.
LEGACY_DEFAULTS: dict[int, dict[str, Any]] = {
    1: {
        "data.fade": "none",
        "data.cycle_slicing": "rounded",
        "data.zero_padding": "end",
        "train.num_time_masks": 1,
        "train.num_freq_masks": 1,
        "train.mask_fill": "zero",
        "train.specaugment_probability": 1.0,
        "train.mask_sampling": "torchaudio",
    },
}


def upgrade(values: Mapping[str, Any], version: int) -> dict[str, Any]:
    """A version-`version` config as the current version, meaning what it meant when it ran."""
    legacy: dict[str, Any] = {}
    for old in range(version, CONFIG_VERSION):
        for path, value in LEGACY_DEFAULTS.get(old, {}).items():
            legacy.setdefault(path, value)
    upgraded = copy.deepcopy(dict(values))
    for path, value in legacy.items():
        *parents, leaf = path.split(".")
        node = upgraded
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                break  # not a mapping: parse_typed names the key and its type
            node = child
        else:
            node.setdefault(leaf, value)  # a key the file sets keeps its value
    upgraded["config_version"] = CONFIG_VERSION
    return upgraded
