"""Backbones (DASS, AST) with their weights loaders, selective-scan backends and
`build_model(config)`."""

from lungsrad.models.ast import AST, load_ast_checkpoint
from lungsrad.models.backbone_state import read_backbone_state
from lungsrad.models.build import Backbone, InitialWeights, build_model, read_initial_weights
from lungsrad.models.dass import DASS, load_dass_checkpoint
from lungsrad.models.selective_scan import available_backends, selective_scan

__all__ = [
    "AST",
    "Backbone",
    "DASS",
    "InitialWeights",
    "available_backends",
    "build_model",
    "load_ast_checkpoint",
    "load_dass_checkpoint",
    "read_initial_weights",
    "read_backbone_state",
    "selective_scan",
]
