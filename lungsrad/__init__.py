"""Lung-SRAD: DASS fine-tuning with spectral-aware layer regularization and dual-axis patch-mix
contrastive learning for ICBHI 2017 respiratory sound classification."""

__version__ = "0.1.0"
