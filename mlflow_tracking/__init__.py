"""MLflow tracking for lungsrad runs and sweeps (never imports Ray)."""
