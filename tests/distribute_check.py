"""Run in a subprocess by test_distiller: one Distiller step under MirroredStrategy (2 logical
CPUs) vs one device, same data and initial weights. Prints MATCH or raises."""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_spectralkd import Distiller  # noqa: E402
from tiny_backbone import TinyBackbone  # noqa: E402

rng = np.random.default_rng(0)
x = rng.standard_normal((8, 8, 8, 3)).astype("float32")
y = np.arange(8) % 4


def build(initial=None):
    keras.utils.set_random_seed(0)
    teacher = TinyBackbone(width=12, depth=4, name="teacher")
    student = TinyBackbone(width=6, depth=3, name="student")
    distiller = Distiller(teacher, student, layer_pairs=[(0, 0), (2, 3)], mode="soft")
    distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    if initial is not None:
        for w, v in zip(distiller.teacher.weights + distiller.student.weights, initial):
            w.assign(v)
    return distiller


single = build()
initial = [w.numpy() for w in single.teacher.weights + single.student.weights]
single_logs = single.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
    mirrored = build(initial)
dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
mirrored_logs = mirrored.fit(dataset, epochs=1, verbose=0).history

for key in ("loss", "ce_loss", "kd_loss", "spectral_loss", "spectral_loss_pair_1"):
    a, b = single_logs[key][0], mirrored_logs[key][0]
    print(key, a, b)
    np.testing.assert_allclose(b, a, rtol=1e-5, err_msg=key)
for w_single, w_mirrored in zip(single.student.weights, mirrored.student.weights):
    np.testing.assert_allclose(
        w_mirrored.numpy(), w_single.numpy(), rtol=1e-5, atol=1e-6, err_msg=w_single.path
    )
# The update is not trivially zero.
assert any(
    np.abs(w.numpy() - i).max() > 1e-4
    for w, i in zip(single.student.weights, initial[len(single.teacher.weights):])
)
print("MATCH")
