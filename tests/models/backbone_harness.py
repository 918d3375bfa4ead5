"""One backbone test run by every family (keras-hub's `TestCase.run_backbone_test`, our protocol).

    run_backbone_test(make_model, images, logits_shape, map_shapes, tmp_path)

`make_model(**overrides)` builds a tiny model of the family (with `dtype=` for the mixed run).
Checks, in order: the logits and every unit map have the expected shapes; `get_config` holds
every constructor argument and rebuilds an identical model; a `.keras` save and load gives the
same logits and maps; under `mixed_bfloat16` the weights stay float32, logits and maps come out
in bfloat16 and stay within 5% of the float32 model with the same weights.
"""

import inspect

import keras
import numpy as np
from keras import ops


def _numpy(x):
    return ops.convert_to_numpy(ops.cast(x, "float32"))


def run_backbone_test(make_model, images, logits_shape, map_shapes, tmp_path):
    model = make_model()
    cls = type(model)

    # === Shapes ===
    logits, maps = model.forward_intermediates(images)
    assert tuple(logits.shape) == tuple(logits_shape)
    assert [tuple(m.shape) for m in maps] == [tuple(s) for s in map_shapes]

    # === Config ===
    config = model.get_config()
    arguments = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    assert arguments <= set(config), arguments - set(config)
    clone = cls.from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()

    # === Saving ===
    path = str(tmp_path / f"{cls.__name__}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is cls
    loaded_logits, loaded_maps = loaded.forward_intermediates(images)
    np.testing.assert_allclose(_numpy(loaded_logits), _numpy(logits), atol=1e-6)
    for got, expected in zip(loaded_maps, maps):
        np.testing.assert_allclose(_numpy(got), _numpy(expected), atol=1e-6)

    # === Mixed precision ===
    mixed = make_model(dtype="mixed_bfloat16")
    mixed.set_weights(model.get_weights())
    assert all(w.dtype == "float32" for w in mixed.weights)
    mixed_logits, mixed_maps = mixed.forward_intermediates(images)
    assert keras.backend.standardize_dtype(mixed_logits.dtype) == "bfloat16"
    assert {keras.backend.standardize_dtype(m.dtype) for m in mixed_maps} == {"bfloat16"}
    reference, ours = _numpy(logits), _numpy(mixed_logits)
    assert np.isfinite(ours).all()
    # bfloat16 keeps ~3 significant digits; a few blocks of rounding stay within a few percent.
    assert np.abs(ours - reference).max() < 0.05 * max(1.0, np.abs(reference).max())
