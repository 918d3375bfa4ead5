"""The EMA callback: the average it keeps, and its evaluation beside the raw weights."""

import keras
import numpy as np
from training_helpers import tiny_stream, tiny_vit

from keras_spectralkd import Distiller
from keras_spectralkd.training.ema import ModelEMA, clone_model


class _Recorder(keras.callbacks.Callback):
    """Records the source's weights after every step (runs after the EMA callback)."""

    def __init__(self, source):
        super().__init__()
        self.source = source
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        _ = self.model  # sync JAX state
        self.steps.append([keras.ops.convert_to_numpy(w) for w in self.source.weights])


def test_ema_is_the_exponential_average_of_the_steps():
    train, validation, steps = tiny_stream()
    student = tiny_vit()
    initial = [keras.ops.convert_to_numpy(w) for w in student.weights]
    distiller = Distiller(None, student, mode="none")
    distiller.compile(optimizer=keras.optimizers.SGD(0.5),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    decay = 0.7
    ema = ModelEMA(student, decay=decay, validation_data=validation)
    recorder = _Recorder(student)
    history = distiller.fit(train(0), epochs=1, steps_per_epoch=steps,
                            callbacks=[ema, recorder], verbose=0, shuffle=False)
    expected = initial
    for weights in recorder.steps:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights)]
    assert len(recorder.steps) == steps
    for average, value, raw in zip(ema.ema_model.weights, expected, recorder.steps[-1]):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(average), value, rtol=1e-5,
                                   atol=1e-6, err_msg=average.path)
    # The average really differs from the raw weights, and is evaluated beside them.
    assert max(np.abs(keras.ops.convert_to_numpy(a) - r).max()
               for a, r in zip(ema.ema_model.weights, recorder.steps[-1])) > 1e-4
    logs = history.history
    assert {"ema_val_loss", "ema_val_accuracy"} <= set(logs)
    direct = ema.ema_model.evaluate(validation, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["ema_val_accuracy"][0], direct["accuracy"], rtol=1e-6)


def test_clone_model_copies_weights_into_a_new_instance():
    model = tiny_vit()
    clone = clone_model(model)
    assert clone is not model and len(clone.weights) == len(model.weights)
    for a, b in zip(clone.weights, model.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b))
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-6)


def test_bad_decay():
    import pytest

    with pytest.raises(ValueError, match="decay"):
        ModelEMA(tiny_vit(), decay=1.0)
