"""`from_timm` builds without running initializers (issue 13 section 2, memory).

The model is built with deferred initialisation (`_keras_internals.deferred_variables`): no initial
value is computed, and every variable is initialised straight from its checkpoint array. Held
against the old path (`models.create` runs every initializer, then the arrays are assigned):
exactly the same outputs and weights, no variable keeping an initializer's value, the caller's
arrays never aliased, the strict errors unchanged and nothing left in Keras' global list of
uninitialised variables. Also: the private Keras API this uses is present (a Keras upgrade
that removes it fails here), and without it the plain path gives the same model.
"""

import keras
import numpy as np
import pytest
from keras import ops
from test_timm_vit_cait import CASES as PARITY_CASES
from timm_oracle import build_timm, random_images, timm_state_dict

from keras_spectralkd import _keras_internals, _low_precision
from keras_spectralkd.convert import ConversionError, from_timm, timm_name_map
from keras_spectralkd.models.timm.weight_map import WeightMap, converter_for
from keras_spectralkd.models import registry

pytest.importorskip("timm")

# name, our overrides, timm's; tiny configs of each family (Swin: 2 stages, window 2).
CASES = {
    **PARITY_CASES,  # the vit and cait tiny configs of the parity tests
    "swin": ("swin_tiny_patch4_window7_224",
             dict(image_size=16, patch_size=2, embed_dim=16, depths=(2, 2), num_heads=(1, 2),
                  window_size=2),
             dict(img_size=16, patch_size=2, embed_dim=16, depths=(2, 2), num_heads=(1, 2),
                  window_size=2)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    """(name, our overrides, image size, timm state dict) of one family, random weights."""
    name, ours, theirs = CASES[request.param]
    timm_model = build_timm(name, num_classes=5, **theirs)
    return name, ours, ours["image_size"], timm_state_dict(timm_model)


def plain_from_timm(name, state, **overrides):
    """The old path: every initializer runs, then the converter assigns the arrays."""
    model = registry.create(name, num_classes=5, **overrides)
    weight_map = WeightMap(model, state)
    converter_for(registry.model_family(name))(weight_map, model)
    return weight_map.finish()


def uninitialized_keras_variables():
    from keras.src.backend.common import global_state

    return list(global_state.get_global_attribute("uninitialized_variables") or [])


def test_keras_private_api_is_there():
    """The deferred build needs it; without it every build silently pays the initializers."""
    assert _keras_internals._keras_deferred_initialization() is not None


def test_deferred_build_gives_the_same_model_as_the_old_path(case):
    name, ours, size, state = case
    deferred, plain = from_timm(name, state, **ours), plain_from_timm(name, state, **ours)
    images = random_images(2, size, seed=1)
    np.testing.assert_array_equal(ops.convert_to_numpy(deferred(images)),
                                  ops.convert_to_numpy(plain(images)))
    _, deferred_maps = deferred.forward_intermediates(images, [0, 1])
    _, plain_maps = plain.forward_intermediates(images, [0, 1])
    for ours_map, old_map in zip(deferred_maps, plain_maps):
        np.testing.assert_array_equal(ops.convert_to_numpy(ours_map), ops.convert_to_numpy(old_map))
    assert [w.path for w in deferred.weights] == [w.path for w in plain.weights]
    assert [w.trainable for w in deferred.weights] == [w.trainable for w in plain.weights]
    assert uninitialized_keras_variables() == []


def test_every_variable_holds_its_checkpoint_array(case):
    """Each variable is its timm tensor (transposed where torch's layout differs), so no
    initializer's value is left anywhere, and no initializer ran."""
    name, ours, _, state = case
    with _keras_internals.deferred_variables() as deferred:
        probe = registry.create(name, num_classes=5, **ours)
    assert len(deferred.variables) == len(probe.weights)  # all created without values
    assert all(w._value is None for w in probe.weights)  # noqa: SLF001 - nothing computed
    assert uninitialized_keras_variables() == []  # and not queued for a later scope's exit

    model = from_timm(name, state, **ours)
    sources = timm_name_map(name, model, state)
    assert len(sources) == len(model.weights)
    for variable in model.weights:
        expected = state[sources[variable.path]]
        if expected.ndim == 2 and "kernel" in variable.path:  # torch Linear (out, in)
            expected = expected.T
        elif expected.ndim == 4:  # torch Conv2d (O, I, kh, kw)
            expected = expected.transpose(2, 3, 1, 0)
        np.testing.assert_array_equal(ops.convert_to_numpy(variable.value), expected,
                                      err_msg=variable.path)


def test_callers_arrays_are_not_shared(case):
    """Writing the converted model's weights (what training does) leaves the caller's
    state dict alone, on every backend (JAX and torch can alias numpy memory)."""
    name, ours, _, state = case
    state = {key: value.copy() for key, value in state.items()}
    before = {key: value.copy() for key, value in state.items()}
    model = from_timm(name, state, **ours)
    for variable in model.weights:
        variable.assign(ops.zeros(variable.shape, variable.dtype))
    for key, value in state.items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_strict_errors_are_unchanged_and_leave_nothing_behind(case):
    name, ours, _, state = case
    state = dict(state)
    missing = sorted(key for key in state if key.endswith("fc2.weight"))[-1]
    del state[missing]
    state["extra.weight"] = np.zeros((3,), "float32")
    head = state["head.weight"] if "head.weight" in state else state["head.fc.weight"]
    state["head.weight" if "head.weight" in state else "head.fc.weight"] = head[:, :-1]
    with pytest.raises(ConversionError) as error:
        from_timm(name, state, **ours)
    message = str(error.value)
    assert f"missing in checkpoint: {missing}" in message
    assert "unused checkpoint tensor: extra.weight (3,)" in message
    assert "shape mismatch for head/kernel" in message
    assert uninitialized_keras_variables() == []


def test_without_the_private_api_the_plain_path_gives_the_same_model(case, monkeypatch):
    name, ours, size, state = case
    expected = ops.convert_to_numpy(from_timm(name, state, **ours)(random_images(2, size)))
    monkeypatch.setattr(_keras_internals, "_keras_deferred_initialization", lambda: None)
    with _keras_internals.deferred_variables() as deferred:
        model = registry.create(name, num_classes=5, **ours)
    assert deferred.variables == {}  # built the ordinary way
    model = from_timm(name, state, **ours)
    np.testing.assert_array_equal(ops.convert_to_numpy(model(random_images(2, size))), expected)


def test_inside_a_stateless_scope_it_builds_the_ordinary_way():
    with keras.StatelessScope():
        with _keras_internals.deferred_variables() as deferred:
            pass
    assert deferred.variables == {}


def test_variables_not_given_a_value_get_their_own_initial_value():
    with _keras_internals.deferred_variables() as deferred:
        layer = keras.layers.Dense(3, bias_initializer="ones")
        layer.build((None, 2))
    _keras_internals.give_values(deferred, [(layer.kernel, np.full((2, 3), 2.0, "float32"))])
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.kernel.value), np.full((2, 3), 2.0))
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.bias.value), np.ones(3))
    assert uninitialized_keras_variables() == []


def test_low_precision_copy_holds_the_cast_weights_and_shares_nothing():
    """`Distiller(teacher_dtype=...)`'s copy (`_low_precision.in_dtype`) is built without initial
    values too: each weight is the teacher's, cast, and the two models share no storage."""
    name, ours, _ = CASES["cait"]
    teacher = registry.create(name, num_classes=5, **ours)
    copy = _low_precision.in_dtype(teacher, "bfloat16")
    assert uninitialized_keras_variables() == []
    for source, target in zip(teacher.weights, copy.weights):
        assert target.dtype == "bfloat16"
        np.testing.assert_array_equal(
            ops.convert_to_numpy(ops.cast(ops.cast(source.value, "bfloat16"), "float32")),
            ops.convert_to_numpy(ops.cast(target.value, "float32")), err_msg=target.path)
    before = [ops.convert_to_numpy(w.value).copy() for w in teacher.weights]
    for target in copy.weights:
        target.assign(ops.zeros(target.shape, target.dtype))
    for source, value in zip(teacher.weights, before):
        np.testing.assert_array_equal(ops.convert_to_numpy(source.value), value)
