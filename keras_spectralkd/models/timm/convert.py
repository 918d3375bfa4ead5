"""timm checkpoints -> our models: `from_timm(name, state_dict)`.

Builds the registered model and fills it through the family converter that this folder's
`__init__.py` registered for it (`weight_map.converter_for`); the loading, the strict
bookkeeping and the copy helpers live in `weight_map.py`, each family's name map in
`convert_vit.py`, `convert_cait.py`, `convert_swin.py`.
"""

from keras_spectralkd import _keras_internals
from keras_spectralkd.models.timm.weight_map import (
    ConversionError,
    WeightMap,
    checkpoint_family,
    converter_for,
    infer_num_classes,
    load_state_dict,
)
from keras_spectralkd.models.timm import pretrained
from keras_spectralkd.models import registry


def timm_name_map(name, model, state_dict):
    """`{our variable path: timm tensor name}` for `model` (a built model `name`) and a state dict.

    Runs the family's converter without writing anything: the name map that tests use to hold
    our weights against timm's (initialisation, no-decay set).
    """
    state = load_state_dict(state_dict)
    weight_map = WeightMap(model, state)
    converter_for(registry.model_family(name))(weight_map, model)
    return dict(weight_map.sources)


def from_timm(name, state_dict=None, model=None, **create_kwargs):
    """Builds model `name` and loads a timm checkpoint into it, strictly.

    Args:
        name: a registered timm name, e.g. "cait_s24_224", optionally with timm's pretrained
            tag ("swin_small_patch4_window7_224.ms_in1k").
        state_dict: dict of timm parameter names -> arrays (numpy or torch), or a path to a
            `.safetensors`, `.pth` or `.bin` file. None: timm's pretrained weights for `name`
            (from timm's cache, downloaded if the host answers; offline it fails at once with
            `pretrained.PretrainedWeightsUnavailable` naming the file to fetch).
        model: an already built model to fill instead of creating one.
        **create_kwargs: forwarded to `models.create` (e.g. `dtype`, `image_size`, overrides);
            `num_classes` defaults to the checkpoint's head size.
    Returns:
        the Keras model with the checkpoint's weights.
    """
    if state_dict is None:
        state_dict = pretrained.load_pretrained_state_dict(name)
    name = name.partition(".")[0]  # timm's "arch.tag": the tag names weights, not a model
    state = load_state_dict(state_dict)
    family = registry.model_family(name)
    found, evidence = checkpoint_family(state)
    if found is not None and found != family:
        raise ConversionError(
            f"The checkpoint is a {found} model (it has {evidence}), but "
            f"{name!r} is a {family} model; pass the checkpoint of a {family} model or "
            "the matching model name."
        )
    convert = converter_for(family)
    deferred = None
    if model is None:
        create_kwargs.setdefault("num_classes", infer_num_classes(state))
        # Built without running initializers: every value comes from the checkpoint, so none
        # is computed only to be overwritten (for CaiT-S24 that halves the build's memory;
        # docs/performance.md).
        with _keras_internals.deferred_variables() as deferred:
            model = registry.create(name, **create_kwargs)
    weight_map = WeightMap(model, state, deferred)
    convert(weight_map, model)
    return weight_map.finish()
