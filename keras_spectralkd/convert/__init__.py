"""Weight import from timm checkpoints.

Import order is the dependency order: `weight_map` (machinery, imports nothing of convert/),
the family converters on top of it, their registration here, then `timm.from_timm`.
"""

from keras_spectralkd.convert.timm_cait import convert_cait
from keras_spectralkd.convert.timm_swin import convert_swin
from keras_spectralkd.convert.timm_vit import convert_vit
from keras_spectralkd.convert.weight_map import (
    ConversionError,
    WeightMap,
    load_state_dict,
    register_converter,
)

register_converter("vit", convert_vit)
register_converter("cait", convert_cait)
register_converter("swin", convert_swin)

from keras_spectralkd.convert.timm import from_timm, timm_name_map  # noqa: E402

__all__ = [
    "ConversionError",
    "WeightMap",
    "from_timm",
    "load_state_dict",
    "register_converter",
    "timm_name_map",
]
