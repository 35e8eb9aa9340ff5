"""DASS, the VMamba-based audio backbone (`model.py`), and its weights loader (`weights.py`)."""

from lungsrad.models.dass.model import DASS, SS2D, DropPath, cross_merge, cross_scan
from lungsrad.models.dass.weights import load_dass_checkpoint

__all__ = ["DASS", "SS2D", "DropPath", "cross_merge", "cross_scan", "load_dass_checkpoint"]
