"""Lung-SRAD's additions to DASS fine-tuning: spectral-aware layer regularization and dual-axis
patch-mix contrastive learning (the spectral response analysis: lungsrad/analysis/spectral/)."""

from lungsrad.method.patch_mix import (
    MixedBatch,
    PatchMixObjective,
    ProjectionHead,
    mix_batch,
    patch_mix_contrastive_loss,
    random_patch_mix,
    sample_mix_lambda,
    segment_mix,
)
from lungsrad.method.spectral_regularization import (
    GaussianSmoothing2d,
    attach_spectral_regularization,
    gaussian_kernel1d,
)

__all__ = [
    "GaussianSmoothing2d",
    "MixedBatch",
    "PatchMixObjective",
    "ProjectionHead",
    "attach_spectral_regularization",
    "gaussian_kernel1d",
    "mix_batch",
    "patch_mix_contrastive_loss",
    "random_patch_mix",
    "sample_mix_lambda",
    "segment_mix",
]
