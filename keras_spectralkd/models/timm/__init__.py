"""Weight import from timm checkpoints (public as `keras_spectralkd.convert`).

It lives under `models` so that `models.create(name, weights=...)` can load timm weights without
reaching up a layer. Import order is the dependency order: `weight_map` (machinery, imports
nothing else of this folder), the family converters on top of it, their registration here, then
`convert.from_timm`; `pretrained` finds timm's own pretrained weights. What this imports is the
API that `keras_spectralkd.convert` re-exports (and lists in its `__all__`).
"""

from keras_spectralkd.models.timm import pretrained  # noqa: F401
from keras_spectralkd.models.timm.convert_cait import convert_cait
from keras_spectralkd.models.timm.convert_swin import convert_swin
from keras_spectralkd.models.timm.convert_vit import convert_vit
from keras_spectralkd.models.timm.weight_map import (  # noqa: F401
    ConversionError,
    WeightMap,
    load_state_dict,
    register_converter,
)

register_converter("vit", convert_vit)
register_converter("cait", convert_cait)
register_converter("swin", convert_swin)

from keras_spectralkd.models.timm.convert import from_timm, timm_name_map  # noqa: E402, F401
