"""Named settings the config refers to: DASS presets, AST sizes, evaluation protocols, and the
constants the sections' defaults and checks use."""

from __future__ import annotations

from typing import Any

# P(N(0, 1) <= 1): the reference applies its SpecAugment when `1.0 >= torch.randn(1)`.
REFERENCE_SPECAUGMENT_PROBABILITY = 0.8413447460685429

# Evaluation protocols (train.protocol). 'paper' selects the epoch on the test split (as the
# Lung-SRAD paper does); the others select it on a patient-disjoint validation carve-out of their
# training patients, so no test number picks an epoch.
PROTOCOLS: tuple[str, ...] = ("paper", "validated", "foldwise", "disjoint")
VALIDATION_PROTOCOLS: tuple[str, ...] = ("validated", "foldwise", "disjoint")
# Folds of RespireNet's patient split (train.protocol foldwise, data.fold).
NUM_FOLDS = 5

# The fewest classes a classifier may have (ICBHI has 4; a 2-class task is the smallest).
MIN_NUM_CLASSES = 2

# DASS presets as in the reference code (Saurabhbhati/DASS, src/models/ast_models.py).
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "small": {"dims": (96, 192, 384, 768), "depths": (2, 2, 8, 2), "drop_path_rate": 0.2},
    "medium": {"dims": (96, 192, 384, 768), "depths": (2, 2, 20, 2), "drop_path_rate": 0.3},
}
# AST sizes: base is the AudioSet model of YuanGongND/ast (DeiT-base distilled: width 768, 12
# blocks, 12 heads); tiny is the golden-test size, for CPU tests and smoke runs.
AST_SIZES: dict[str, dict[str, int]] = {
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "tiny": {"embed_dim": 64, "depth": 2, "num_heads": 4},
}
AST_PATCH_SIZE = 16  # AST's square patches (16 x 16 mel bins x frames)


# model.checkpoint value that asks for a random initialisation on purpose (a sweep whose search
# space says `requires_pretrained: true` refuses an unset checkpoint, never this).
RANDOM_INIT_CHECKPOINT = "none"
