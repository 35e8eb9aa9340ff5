"""Analyses of trained lungsrad checkpoints: `spectral/`, the per-block spectral response of
Lung-SRAD Fig. 1/2 (`lungsrad spectral`)."""
