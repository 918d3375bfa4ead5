"""Backbones with timm's names, each exposing every unit's feature map (SPEC.md 1, 8).

`create(name, weights=None, ...)` builds one with random weights or loads its weights (timm's
pretrained ones, a `.keras` or `.weights.h5` file, a timm checkpoint); see loader.py.
"""

from keras_spectralkd.models.backbone import Backbone
from keras_spectralkd.models.cait import CaiT  # registers cait_*
from keras_spectralkd.models.loader import create
from keras_spectralkd.models.registry import list_models, model_defaults, model_family
from keras_spectralkd.models.swin import SwinTransformer  # registers swin_*
from keras_spectralkd.models.vit import VisionTransformer  # registers deit_*

__all__ = [
    "Backbone",
    "CaiT",
    "SwinTransformer",
    "VisionTransformer",
    "create",
    "list_models",
    "model_defaults",
    "model_family",
]
