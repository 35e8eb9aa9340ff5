"""Spectral response of each block of a trained backbone along time and frequency (Lung-SRAD
Fig. 1/2, `lungsrad spectral`), in three layers, each importing only from below:

1. `curves` (the shared curve types) and `capture` (block inputs through forward hooks);
2. one module per backbone: `dass` (SS2D maths; its matrix-route oracle in `dass_reference`)
   and `ast` (self-attention);
3. `tables` and `figures`, then `registry` (what each backbone contributes) and `driver`
   (checkpoint -> curves -> CSV, figure, text).
"""
