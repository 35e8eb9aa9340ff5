"""Backbones (DASS, AST), selective-scan backends, checkpoint loading and `build_model(config)`."""

from lungsrad.models.ast import AST, load_ast_checkpoint
from lungsrad.models.build import Backbone, build_model
from lungsrad.models.checkpoint import load_dass_checkpoint
from lungsrad.models.dass import DASS
from lungsrad.models.selective_scan import available_backends, selective_scan

__all__ = [
    "AST",
    "Backbone",
    "DASS",
    "available_backends",
    "build_model",
    "load_ast_checkpoint",
    "load_dass_checkpoint",
    "selective_scan",
]
