"""Ray Tune sweep platform for Lung-SRAD (the only package that imports Ray)."""
