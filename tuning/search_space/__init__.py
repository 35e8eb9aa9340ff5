"""Search-space YAML files (search_spaces/*.yaml): the document (document.py), the parsed space
and run naming (space.py), loading and validation against ExperimentConfig (loader.py with
checks.py), and the Ray Tune param space they become (tune_space.py, the only Ray import, not
loaded here). The format is documented in search_spaces/README.md.
"""

from tuning.search_space.checks import checkpoints_unchecked
from tuning.search_space.document import (
    BASE_POINT,
    CHECKPOINT_PATH,
    POINT_KEY,
    RESERVED_PATHS,
    SEED_KEY,
    VARIANT_KEY,
    DomainSpec,
    ReseedSpec,
    ResourceSpec,
    SchedulerSpec,
    SearchKind,
    SpaceDocument,
    VariantSpec,
    known_metrics,
)
from tuning.search_space.loader import load_search_space
from tuning.search_space.space import (
    Parameter,
    ResolvedTrial,
    SearchSpace,
    display_label,
    short_parameter_names,
    space_summary,
)

__all__ = [
    "checkpoints_unchecked",
    "BASE_POINT",
    "CHECKPOINT_PATH",
    "POINT_KEY",
    "RESERVED_PATHS",
    "SEED_KEY",
    "VARIANT_KEY",
    "DomainSpec",
    "Parameter",
    "ReseedSpec",
    "ResolvedTrial",
    "ResourceSpec",
    "SchedulerSpec",
    "SearchKind",
    "SearchSpace",
    "SpaceDocument",
    "VariantSpec",
    "display_label",
    "known_metrics",
    "load_search_space",
    "short_parameter_names",
    "space_summary",
]
