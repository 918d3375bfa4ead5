"""Backbones with timm's names, each exposing every unit's feature map (SPEC.md 1, 8)."""

from keras_spectralkd.models.backbone import Backbone
from keras_spectralkd.models.registry import create, list_models, model_defaults, model_family
from keras_spectralkd.models import vit  # noqa: F401  (registers deit_*)
from keras_spectralkd.models import cait  # noqa: F401  (registers cait_*)
from keras_spectralkd.models import swin  # noqa: F401  (registers swin_*)
