"""Weight import from timm checkpoints: `from_timm(name, checkpoint)`.

The code lives in `keras_spectralkd.models.timm` (below `models.create`, which loads timm
weights too); this is its public name. `weight_map` and `pretrained` are its modules.
"""

from keras_spectralkd.models.timm import (
    ConversionError,
    WeightMap,
    from_timm,
    load_state_dict,
    pretrained,
    register_converter,
    timm_name_map,
    weight_map,
)

__all__ = [
    "ConversionError",
    "WeightMap",
    "from_timm",
    "load_state_dict",
    "pretrained",
    "register_converter",
    "timm_name_map",
    "weight_map",
]
