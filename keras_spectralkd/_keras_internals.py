"""Keras' private API where the package uses it, behind a version gate, and the build without
initial values that it makes possible.

Every use of a private Keras name in the package asks `private_api_usable` first: the private
path runs only on the Keras version it was written and tested against (`CHECKED_KERAS`) and only
when the names it reads are there; otherwise the caller takes Keras' public path and one
`KerasPrivateAPIWarning` per feature says what that costs. The uses, each scoped to the call
that needs it and pinned by tests/test_keras_internals.py:

- here: `deferred_variables()` / `give_values(...)` build a model whose weights are about to be
  overwritten (from a checkpoint, or from another model) without running its initializers
  (`convert.from_timm` and `_low_precision.in_dtype` use it);
- `models.backbone.ReleasingGraph`: a functional model's graph run that frees each intermediate
  after its last reader;
- `training.distribute.keras_multi_worker_fixes`: two fixes of Keras' TensorFlow trainer under
  `MultiWorkerMirroredStrategy`, active during `training.loop.train`'s fit only.
"""

import contextlib
import functools
import types
import warnings

import keras

# The Keras release (major, minor) every private use was written and tested against.
CHECKED_KERAS = (3, 15)


class KerasPrivateAPIWarning(UserWarning):
    """A private-Keras fast path of the package is off, and Keras' public path runs instead."""


_warned = set()  # the features that have warned in this process


@functools.cache
def keras_version():
    """The installed Keras' (major, minor)."""
    major, minor = keras.version().split(".")[:2]
    return int(major), int(minor)


def private_api_usable(feature, missing, fallback):
    """Whether `feature`'s private path may run; warns once per feature when it may not.

    Args:
        feature: what the private path does, for the warning ("building models without
            initial values").
        missing: a callable returning what of the private API is absent (a short phrase), or
            None when everything the private path reads is there; not called on another Keras
            version.
        fallback: what runs instead and what that costs, for the warning.
    """
    if keras_version() != CHECKED_KERAS:
        reason = (f"it was checked against Keras {'.'.join(map(str, CHECKED_KERAS))}, and "
                  f"Keras {keras.version()} is installed")
    else:
        reason = missing()
        if reason is None:
            return True
        reason = f"Keras {keras.version()} lacks {reason}"
    if feature not in _warned:
        _warned.add(feature)
        warnings.warn(
            f"keras_spectralkd: {feature} uses Keras' private API, turned off because {reason}; "
            f"{fallback}.", KerasPrivateAPIWarning, stacklevel=3,
        )
    return False


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
    functional model does not). Where the private API this needs is off (see the module doc), or
    inside another stateless scope (a JAX trace), the block builds the ordinary way and
    `give_values` assigns.
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


def _missing_deferred_initialization():
    try:
        from keras.src.backend.common import global_state  # noqa: F401
        from keras.src.backend.common.stateless_scope import in_stateless_scope  # noqa: F401
    except ImportError as error:
        return f"a module it reads ({error.name})"
    if not hasattr(keras.Variable, "_deferred_initialize"):
        return "Variable._deferred_initialize"
    return None


@functools.cache
def _keras_deferred_initialization():
    """Keras' private deferred-initialisation API, or None where it is off (with one warning).

    Private names used, all here: the global list "uninitialized_variables" (in
    `keras.src.backend.common.global_state`) that variables made inside a
    `keras.StatelessScope` join, `in_stateless_scope`, and `Variable._initializer` /
    `Variable._deferred_initialize()`, which initialise such a variable on every backend (TF
    inside `tf.init_scope`, JAX with the variable's layout).
    """
    if not private_api_usable(
        "building models without initial values (convert.from_timm, a low-precision teacher)",
        _missing_deferred_initialization,
        "every initializer runs before its value is overwritten, which costs a model's worth "
        "of memory and time",
    ):
        return None
    from keras.src.backend.common import global_state
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    def take_uninitialized():
        variables = list(global_state.get_global_attribute("uninitialized_variables") or [])
        global_state.set_global_attribute("uninitialized_variables", [])
        return variables

    def with_value(variable, value):
        variable._initializer = lambda shape, dtype: value
        try:
            variable._deferred_initialize()
        finally:
            variable._initializer = None  # drop the closure's reference to the value

    return types.SimpleNamespace(
        in_stateless_scope=in_stateless_scope,
        take_uninitialized=take_uninitialized,
        put_uninitialized=lambda variables: global_state.set_global_attribute(
            "uninitialized_variables", list(variables)),
        with_value=with_value,
        with_own_initializer=lambda variable: variable._deferred_initialize(),
    )
