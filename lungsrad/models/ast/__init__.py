"""AST, the Audio Spectrogram Transformer (`model.py`), and its weights loader with the
positional-embedding adaptation (`weights.py`)."""

from lungsrad.models.ast.model import AST, NUM_PREFIX_TOKENS, patch_grid
from lungsrad.models.ast.weights import (
    POS_EMBED_MODES,
    PosEmbedMode,
    adapt_pos_embed_grid,
    adapted_pos_embed,
    load_ast_checkpoint,
)

__all__ = [
    "AST",
    "NUM_PREFIX_TOKENS",
    "POS_EMBED_MODES",
    "PosEmbedMode",
    "adapt_pos_embed_grid",
    "adapted_pos_embed",
    "load_ast_checkpoint",
    "patch_grid",
]
