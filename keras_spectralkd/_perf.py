"""Speed and memory helpers: models built without initial values, a low-precision teacher.

`deferred_variables()` / `give_values(...)`: build a model whose weights are about to be
overwritten (from a checkpoint, or from another model) without running its initializers, then
give each variable its final value; no initial value is ever computed or copied
(`convert.from_timm` and `in_dtype` below use it; docs/performance.md has the memory it saves).

`in_dtype(model, "bfloat16")` rebuilds `model` under the dtype policy "bfloat16" (or
"float16") and copies its weights, cast, into the copy. The copy's variables are stored in that
dtype and every layer computes in it, so its matmuls, convolutions and attention really run in
low precision (a "mixed_*" policy would keep float32 variables and cast them on every call) and
its weights take half the memory. Layers that need float32 keep it inside (LayerNorm's
statistics, the softmax of our attention layers). The model must rebuild itself from its config
with a top-level `dtype` (every keras_spectralkd backbone does, whether made by
`models.create` or `convert.from_timm`).
"""

import contextlib
import functools

import keras
from keras import ops

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


# === Models built without initial values ===
class DeferredVariables:
    """The variables a `deferred_variables()` block created without values, by id (empty when
    the block built the ordinary way, every initializer run)."""

    def __init__(self):
        self.variables = {}  # id -> variable, filled when the block ends


@contextlib.contextmanager
def deferred_variables():
    """Variables created inside get no value: their initializers are recorded, not run.

    Yields a `DeferredVariables`; after the block, `give_values(deferred, pairs)` gives every
    variable its value. Inside the block nothing may read a variable's value (building a
    functional model does not). Where Keras lacks the private API this needs, or inside another
    stateless scope (a JAX trace), the block builds the ordinary way and `give_values` assigns.
    """
    private = _keras_deferred_initialization()
    if private is None or private.in_stateless_scope():
        yield DeferredVariables()
        return
    deferred = DeferredVariables()
    earlier = private.take_uninitialized()
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield deferred
    finally:
        # Ours leave Keras' global list (no later scope may run their initializers); any that
        # were there before are put back.
        created = private.take_uninitialized()
        private.put_uninitialized(earlier)
    deferred.variables = {id(variable): variable for variable in created}


def give_values(deferred, pairs, complete=True):
    """Gives each `(variable, value)` of `pairs` its value (an array or tensor of the variable's
    shape; it becomes the variable's storage where the backend can, so pass a value nobody else
    will write to): a variable still waiting in `deferred` is initialised with it, any other
    is assigned. `pairs` may be a generator: each value is dropped once given, so a caller that
    does not keep them frees them one by one.

    `complete`: the variables of `deferred` not given a value get their own initial value, so
    none is ever left without one (False: they keep waiting for a later call)."""
    initialize = _keras_deferred_initialization()
    for variable, value in pairs:
        if deferred.variables.pop(id(variable), None) is not None:
            initialize.with_value(variable, value)
        else:
            variable.assign(value)
        del value
    if complete:
        while deferred.variables:
            initialize.with_own_initializer(deferred.variables.popitem()[1])


@functools.cache
def _keras_deferred_initialization():
    """Keras' private deferred-initialisation API (checked against Keras 3.15), or None.

    Private names used, all here: the global list "uninitialized_variables" (in
    `keras.src.backend.common.global_state`) that variables made inside a
    `keras.StatelessScope` join, `in_stateless_scope`, and `Variable._initializer` /
    `Variable._deferred_initialize()`, which initialise such a variable on every backend (TF
    inside `tf.init_scope`, JAX with the variable's layout). tests/convert/test_deferred_build.py
    pins the behaviour, so a Keras upgrade that changes it fails there, not in users' runs.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.backend.common.stateless_scope import in_stateless_scope
    except ImportError:
        return None
    if not hasattr(keras.Variable, "_deferred_initialize"):
        return None

    class Private:
        @staticmethod
        def take_uninitialized():
            variables = list(global_state.get_global_attribute("uninitialized_variables") or [])
            global_state.set_global_attribute("uninitialized_variables", [])
            return variables

        @staticmethod
        def put_uninitialized(variables):
            global_state.set_global_attribute("uninitialized_variables", list(variables))

        @staticmethod
        def with_value(variable, value):
            variable._initializer = lambda shape, dtype: value
            try:
                variable._deferred_initialize()
            finally:
                variable._initializer = None  # drop the closure's reference to the value

        @staticmethod
        def with_own_initializer(variable):
            variable._deferred_initialize()

    Private.in_stateless_scope = staticmethod(in_stateless_scope)
    return Private
