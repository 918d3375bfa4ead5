"""The package's uses of Keras' private API (`keras_spectralkd/_keras_internals.py`): each one
relies on private names and behaviours of the Keras it was checked against; these tests pin
them, so that a Keras upgrade that changes one fails here, not in a user's run, and each one
falls back to Keras' public path with one warning.

- the version gate and its one warning per feature;
- building without initial values (`_keras_internals.deferred_variables`);
- the graph runner that frees intermediates (`models.backbone.ReleasingGraph`);
- the multi-worker fixes of Keras' TensorFlow trainer (`training.distribute`), scoped to one
  model's training (tests/training/test_multiprocess.py runs them for real).
"""

import inspect
import warnings

import keras
import numpy as np
import pytest
from keras import ops
from tiny_backbone import TinyBackbone

from keras_spectralkd import _keras_internals
from keras_spectralkd.models import backbone
from keras_spectralkd.training import distribute

Warning_ = _keras_internals.KerasPrivateAPIWarning
tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                     reason="Keras' TensorFlow trainer")


@pytest.fixture
def fresh_warnings(monkeypatch):
    """No feature has warned yet in this test."""
    monkeypatch.setattr(_keras_internals, "_warned", set())


@pytest.fixture
def other_keras(monkeypatch, fresh_warnings):
    """The installed Keras seen as a release no private path was checked against."""
    monkeypatch.setattr(_keras_internals, "keras_version", lambda: (3, 99))


def _private_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, Warning_)]


# === The version gate ===
def test_keras_is_the_release_every_private_use_was_checked_against():
    assert _keras_internals.keras_version() == _keras_internals.CHECKED_KERAS, (
        f"Keras {keras.version()} is installed: check every private use listed in "
        "keras_spectralkd/_keras_internals.py against it (these tests), then update CHECKED_KERAS."
    )


def test_another_keras_falls_back_with_one_warning_per_feature(other_keras):
    def missing():
        raise AssertionError("not asked on another Keras")

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            assert not _keras_internals.private_api_usable("feature a", missing, "a's fallback")
        assert not _keras_internals.private_api_usable("feature b", missing, "b's fallback")
    messages = _private_warnings(record)
    assert len(messages) == 2, messages
    assert "feature a" in messages[0] and "3.15" in messages[0] and "a's fallback" in messages[0]


def test_missing_private_names_fall_back_with_one_warning(fresh_warnings):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert _keras_internals.private_api_usable("present", lambda: None, "-")
        for _ in range(2):
            assert not _keras_internals.private_api_usable("absent", lambda: "Thing._x", "-")
    (message,) = _private_warnings(record)
    assert "lacks Thing._x" in message


# === Building without initial values ===
class _CountingInitializer(keras.initializers.Initializer):
    def __init__(self):
        self.calls = 0

    def __call__(self, shape, dtype=None):
        self.calls += 1
        return ops.ones(shape, dtype=dtype)


def test_deferred_initialization_names_are_there():
    assert _keras_internals._missing_deferred_initialization() is None
    assert _keras_internals._keras_deferred_initialization() is not None


def test_variables_made_in_a_deferred_block_run_no_initializer():
    """What `deferred_variables` relies on: a variable made inside
    `StatelessScope(initialize_variables=False)` joins Keras' global list without a value, and
    `_deferred_initialize` with a replaced `_initializer` gives it exactly that value."""
    initializer = _CountingInitializer()
    layer = keras.layers.Dense(3, kernel_initializer=initializer, bias_initializer="zeros")
    with _keras_internals.deferred_variables() as deferred:
        layer.build((None, 2))
    assert initializer.calls == 0
    assert set(deferred.variables) == {id(layer.kernel), id(layer.bias)}
    value = np.arange(6, dtype="float32").reshape(2, 3)
    _keras_internals.give_values(deferred, [(layer.kernel, value)])
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.kernel), value)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.bias), np.zeros(3, "float32"))
    assert initializer.calls == 0 and deferred.variables == {}
    from keras.src.backend.common import global_state

    assert not global_state.get_global_attribute("uninitialized_variables")


def test_deferred_build_falls_back_with_one_warning_on_another_keras(other_keras):
    _keras_internals._keras_deferred_initialization.cache_clear()
    try:
        initializer = _CountingInitializer()
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            for _ in range(2):
                layer = keras.layers.Dense(3, kernel_initializer=initializer)
                with _keras_internals.deferred_variables() as deferred:
                    layer.build((None, 2))
                _keras_internals.give_values(deferred, [(layer.kernel, np.zeros((2, 3)))])
        (message,) = _private_warnings(record)
        assert "without initial values" in message
        assert initializer.calls == 2  # the ordinary build ran the initializer, then assigned
        np.testing.assert_array_equal(ops.convert_to_numpy(layer.kernel), np.zeros((2, 3)))
    finally:
        _keras_internals._keras_deferred_initialization.cache_clear()


# === The graph runner that frees intermediates ===
def test_functional_models_run_through_the_method_releasing_graph_overrides(monkeypatch):
    """Keras' Functional model runs its graph through `_run_through_graph(inputs,
    operation_fn=..., call_fn=None)`; the releasing runner replaces exactly that and reads the
    private fields `_missing_graph_internals` lists."""
    from keras.src.ops.function import Function

    assert list(inspect.signature(Function._run_through_graph).parameters) == [
        "self", "inputs", "operation_fn", "call_fn"
    ]
    model = TinyBackbone()
    assert backbone._missing_graph_internals(model) is None
    calls = []
    releasing = backbone._run_graph_releasing
    monkeypatch.setattr(backbone, "_run_graph_releasing",
                        lambda *args: calls.append(1) or releasing(*args))
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    logits, maps = model.forward_intermediates(images, [0, 2])
    assert len(calls) == 1
    monkeypatch.setattr(backbone, "_keras_graph_internals_known", lambda model: False)
    keras_logits, keras_maps = model.forward_intermediates(images, [0, 2])
    for ours, theirs in zip([logits] + maps, [keras_logits] + keras_maps):
        np.testing.assert_array_equal(ops.convert_to_numpy(ours), ops.convert_to_numpy(theirs))


def test_the_releasing_runner_frees_a_tensor_after_its_last_reader():
    """On an eager backend a freed intermediate is garbage: the layers' outputs still alive when
    each layer starts are counted through weak references (without autograd, which would keep
    what backward needs). Keras' own runner keeps them all to the end."""
    if keras.backend.backend() != "torch":
        pytest.skip("freeing is observable on the eager torch backend")
    import gc
    import weakref

    import torch
    from keras.src.ops.function import Function

    model = TinyBackbone(depth=4)  # a chain of residual units: 11 layers
    images = np.zeros((1, 8, 8, 3), "float32")

    def most_alive_at_once(run):
        outputs, most = [], 0

        def watching(operation):
            def call(*args, **kwargs):
                nonlocal most
                gc.collect()
                most = max(most, sum(ref() is not None for ref in outputs))
                result = operation(*args, **kwargs)
                outputs.append(weakref.ref(result))
                return result
            return call

        with torch.no_grad():
            run(watching)
        return most

    releasing = most_alive_at_once(
        lambda watching: backbone._run_graph_releasing(model, images, watching))
    keras_runner = most_alive_at_once(
        lambda watching: Function._run_through_graph(model, images, operation_fn=watching))
    assert releasing <= 2 and keras_runner == 10, (releasing, keras_runner)


def test_the_graph_runner_falls_back_with_one_warning_on_another_keras(other_keras):
    model = TinyBackbone()
    images = np.ones((1, 8, 8, 3), "float32")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first, second = model(images), model(images)
    (message,) = _private_warnings(record)
    assert "intermediate tensors" in message
    np.testing.assert_array_equal(ops.convert_to_numpy(first), ops.convert_to_numpy(second))


# === The multi-worker fixes of Keras' TensorFlow trainer ===
def _tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _tiny_data():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


@tensorflow_only
def test_trainer_names_the_multi_worker_fixes_replace_are_there():
    assert distribute._missing_trainer_internals() is None


@tensorflow_only
def test_fit_builds_and_reduces_through_the_names_the_fixes_replace(monkeypatch):
    """Under a strategy, Keras' `fit` builds the model through `self._maybe_symbolic_build(
    iterator=...)` (an iterator whose `data_adapter.get_tf_dataset()` has the element spec the
    fix builds from) and its traced step averages the logs with the trainer module's
    `reduce_per_replica(values, strategy, reduction="auto")`, looked up when it traces."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = _tiny_model()
    builds, reductions = [], []
    own_build = type(model)._maybe_symbolic_build

    def watching_build(iterator=None, data_batch=None):
        builds.append(iterator.data_adapter.get_tf_dataset().element_spec)
        return own_build(model, iterator=iterator, data_batch=data_batch)

    own_reduce = tf_trainer.reduce_per_replica

    def watching_reduce(values, strategy, reduction):
        reductions.append(reduction)
        return own_reduce(values, strategy, reduction)

    object.__setattr__(model, "_maybe_symbolic_build", watching_build)
    monkeypatch.setattr(tf_trainer, "reduce_per_replica", watching_reduce)
    model.fit(_tiny_data(), epochs=1, verbose=0, shuffle=False)
    assert [tuple(spec.shape) for spec in builds[0]] == [(None, 3), (None, 2)]
    assert "auto" in reductions


@tensorflow_only
def test_multi_worker_fixes_are_scoped_to_one_model_and_the_block(monkeypatch):
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    own_build, own_reduce = tf_trainer.TensorFlowTrainer._maybe_symbolic_build, \
        tf_trainer.reduce_per_replica
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model, other = _tiny_model(), _tiny_model()
    with distribute.keras_multi_worker_fixes(model):  # not multi-worker: nothing changes
        assert "_maybe_symbolic_build" not in vars(model)
        assert tf_trainer.reduce_per_replica is own_reduce
    monkeypatch.setattr(distribute, "_multi_worker", lambda m: m is model)
    with distribute.keras_multi_worker_fixes(model):
        assert "_maybe_symbolic_build" in vars(model)
        assert "_maybe_symbolic_build" not in vars(other)
        assert tf_trainer.TensorFlowTrainer._maybe_symbolic_build is own_build
        assert tf_trainer.reduce_per_replica is not own_reduce
        logs = {"loss": tf.constant(2.0)}  # another strategy: Keras' own reduction
        assert tf_trainer.reduce_per_replica(logs, tf.distribute.get_strategy(), "auto") == \
            own_reduce(logs, tf.distribute.get_strategy(), "auto")
        history = model.fit(_tiny_data(), epochs=1, verbose=0, shuffle=False)  # from the spec
        assert np.isfinite(history.history["loss"][-1])
        inner = vars(model)["_maybe_symbolic_build"]
        with distribute.keras_multi_worker_fixes(model):  # nested: the outer block's come back
            assert vars(model)["_maybe_symbolic_build"] is not inner
        assert vars(model)["_maybe_symbolic_build"] is inner
        assert tf_trainer.reduce_per_replica is not own_reduce
    assert "_maybe_symbolic_build" not in vars(model)
    assert tf_trainer.reduce_per_replica is own_reduce


@tensorflow_only
def test_multi_worker_fixes_fall_back_with_one_warning_on_another_keras(other_keras,
                                                                        monkeypatch):
    from keras.src.backend.tensorflow import trainer as tf_trainer

    own_reduce = tf_trainer.reduce_per_replica
    model = _tiny_model()
    monkeypatch.setattr(distribute, "_multi_worker", lambda m: True)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2):
            with distribute.keras_multi_worker_fixes(model):
                assert "_maybe_symbolic_build" not in vars(model)
                assert tf_trainer.reduce_per_replica is own_reduce
    (message,) = _private_warnings(record)
    assert "multi-worker" in message
