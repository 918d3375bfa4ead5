"""The EMA: Keras' optimizer average (`create_optimizer(..., ema_momentum=...)`), per step, and
its evaluation beside the raw weights."""

import keras
import numpy as np
import pytest
from training_helpers import tiny_stream, tiny_vit

from keras_spectralkd import Distiller
from keras_spectralkd.training import create_optimizer, train
from keras_spectralkd.training.ema import ema_weights


class _Recorder(keras.callbacks.Callback):
    """Records the student's weights after every step."""

    def __init__(self, source):
        super().__init__()
        self.source = source
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        _ = self.model  # sync JAX state
        self.steps.append([keras.ops.convert_to_numpy(w) for w in self.source.weights])


def test_ema_is_the_per_step_average_evaluated_beside_the_raw_weights():
    train_data, validation, steps = tiny_stream()
    student = tiny_vit()
    distiller = Distiller(None, student, mode="none")
    decay = 0.7
    distiller.compile(optimizer=create_optimizer(0.05, model=student, ema_momentum=decay),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    recorder = _Recorder(student)
    result = train(distiller, train_data, epochs=1, steps_per_epoch=steps,
                   validation_data=validation, callbacks=[recorder], verbose=0)
    assert len(recorder.steps) == steps
    # Keras' average: the weights after the first step, then ema = m * ema + (1 - m) * w.
    expected = recorder.steps[0]
    for weights in recorder.steps[1:]:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights)]
    # After `train` the student holds its raw weights (not the average `fit` would leave).
    for variable, raw in zip(student.weights, recorder.steps[-1]):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), raw)
    with ema_weights(distiller):
        averaged = [keras.ops.convert_to_numpy(w) for w in student.weights]
        direct = distiller.evaluate(validation, verbose=0, return_dict=True)
    for value, want, variable in zip(averaged, expected, student.weights):
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6, err_msg=variable.path)
    assert max(np.abs(a - r).max() for a, r in zip(averaged, recorder.steps[-1])) > 1e-4
    # Swapped back on exit.
    for variable, raw in zip(student.weights, recorder.steps[-1]):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), raw)
    logs = result.history[-1]
    np.testing.assert_allclose(logs["ema_val_accuracy"], direct["accuracy"], rtol=1e-6)
    np.testing.assert_allclose(logs["ema_val_loss"], direct["loss"], rtol=1e-5)
    raw = distiller.evaluate(validation, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["val_loss"], raw["loss"], rtol=1e-5)
    assert abs(logs["val_loss"] - logs["ema_val_loss"]) > 1e-6


def test_bad_ema_settings():
    student = tiny_vit()
    with pytest.raises(ValueError, match="ema_momentum must be in"):
        create_optimizer(1e-3, model=student, ema_momentum=1.0)
    distiller = Distiller(None, student, mode="none")
    distiller.compile(optimizer=create_optimizer(1e-3, model=student))
    with pytest.raises(ValueError, match="keeps no EMA"):
        with ema_weights(distiller):
            pass
    with pytest.raises(TypeError, match="ema must be None, True or False"):
        train(distiller, tiny_stream()[0], epochs=1, steps_per_epoch=1, ema=object())


def test_top5_takes_float16_logits():
    """A float16 head (mixed_float16) must not break the top-5 metric (TensorFlow's in_top_k
    takes float32 only)."""
    from keras_spectralkd.training.ema import classification_metrics

    accuracy, top5 = classification_metrics(10)
    logits = keras.ops.cast(np.eye(10)[[3, 1]] * 5.0 + np.arange(10) * 0.1, "float16")
    top5.update_state(np.array([3, 9]), logits)
    assert float(keras.ops.convert_to_numpy(top5.result())) == 1.0
    accuracy.update_state(np.array([3, 9]), logits)
    assert float(keras.ops.convert_to_numpy(accuracy.result())) == 0.5
