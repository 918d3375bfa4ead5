"""A model's low-precision copy, for a frozen teacher (`Distiller(teacher_dtype=...)`).

`in_dtype(model, "bfloat16")` rebuilds `model` under the dtype policy "bfloat16" (or
"float16") and copies its weights, cast, into the copy. The copy's variables are stored in that
dtype and every layer computes in it, so its matmuls, convolutions and attention really run in
low precision (a "mixed_*" policy would keep float32 variables and cast them on every call) and
its weights take half the memory. Layers that need float32 keep it inside (LayerNorm's
statistics, the softmax of our attention layers). The model must rebuild itself from its config
with a top-level `dtype` (every keras_spectralkd backbone does, whether made by
`models.create` or `convert.from_timm`). The copy is built without initial values
(`_keras_internals.deferred_variables`): they would be overwritten.
"""

from keras import ops

from keras_spectralkd._keras_internals import deferred_variables, give_values

LOW_PRECISION_DTYPES = ("bfloat16", "float16")


def check_teacher_dtype(value):
    """None, "bfloat16" or "float16" (also from a `keras.DTypePolicy` of that name)."""
    if value is None:
        return None
    name = getattr(value, "name", value)
    if name == "float32":
        return None
    if name not in LOW_PRECISION_DTYPES:
        raise ValueError(
            f"`teacher_dtype` must be None, 'float32', 'bfloat16' or 'float16'; got {value!r}."
        )
    return name


def in_dtype(model, dtype):
    """`model` computing and storing its weights in `dtype`: itself if it already does, else a
    rebuilt copy with the same weights, cast. Raises ValueError if the model cannot be rebuilt
    under another policy."""
    if all(w.dtype == dtype for w in model.weights) and model.compute_dtype == dtype:
        return model
    config = model.get_config()
    if not isinstance(config, dict) or "dtype" not in config:
        raise ValueError(
            f"teacher_dtype={dtype!r} needs a teacher that rebuilds from its config with a "
            f"`dtype` (keras_spectralkd backbones do); {model.name!r} ({type(model).__name__}) "
            "has none in its config."
        )
    config["dtype"] = dtype
    with deferred_variables() as deferred:  # the copy's initial values would be overwritten
        copy = type(model).from_config(config)
        if not copy.built and model.built:
            copy.build(model.inputs[0].shape if model.inputs else None)
    source, target = model.weights, copy.weights
    mismatch = len(source) != len(target) or any(
        tuple(s.shape) != tuple(t.shape) for s, t in zip(source, target)
    )
    if mismatch or any(t.dtype != dtype for t in target if "float" in str(t.dtype)):
        raise ValueError(
            f"Rebuilding {model.name!r} under dtype {dtype!r} did not give the same weights in "
            f"{dtype} ({len(source)} vs {len(target)} weights); teacher_dtype needs a model "
            "whose config's `dtype` sets every layer's policy."
        )
    # A cast to the same dtype may return the source's own tensor (torch): copy it, so the two
    # models never share a buffer.
    give_values(deferred, (
        (t, ops.cast(s.value, t.dtype) if s.dtype != t.dtype else ops.copy(s.value))
        for s, t in zip(source, target)
    ))
    copy.trainable = model.trainable
    return copy
