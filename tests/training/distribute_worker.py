"""Run in a subprocess by test_distribute.py (devices must be split before the backend starts).

Usage: python distribute_worker.py BACKEND OUTPUT_DIR. Trains one step of a tiny Distiller on
one device and on two logical CPU devices through `setup_distribution` (TF: MirroredStrategy,
JAX: keras.distribution.DataParallel), with SGD (checks the gradient) and with our AdamW (checks
the no-decay set and the checkpoint under the strategy), and prints the largest differences.
"""

import json
import os
import sys

backend, output_dir = sys.argv[1], sys.argv[2]
os.environ["KERAS_BACKEND"] = backend
if backend == "jax":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    devices = None
else:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    devices = ["/cpu:0", "/cpu:1"]

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from training_helpers import tiny_stream, tiny_vit  # noqa: E402

from keras_spectralkd import Distiller  # noqa: E402
from keras_spectralkd.training import create_optimizer, setup_distribution, train  # noqa: E402

train_data, _, steps = tiny_stream(num_examples=16, batch_size=8)


def build(optimizer_name, initial=None):
    keras.utils.set_random_seed(0)
    teacher = tiny_vit(embed_dim=16, depth=3)
    student = tiny_vit(embed_dim=8, depth=2)
    distiller = Distiller(teacher, student, layer_pairs=[(0, 0), (1, 2)], mode="soft")
    if optimizer_name == "sgd":
        optimizer = keras.optimizers.SGD(0.5)
    else:
        optimizer = create_optimizer(1e-2, model=student, weight_decay=0.5)
    distiller.compile(optimizer=optimizer)
    if initial is not None:
        for variable, value in zip(distiller.weights, initial):
            variable.assign(value)
    return distiller


def values(model):
    return [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights]


def run(optimizer_name, distribution=None, initial=None, tag=""):
    scope = distribution.scope() if distribution is not None else None
    if scope is not None:
        with scope:
            model = build(optimizer_name, initial)
    else:
        model = build(optimizer_name, initial)
    start = values(model)
    result = train(model, train_data, epochs=1, steps_per_epoch=steps,
                   output_dir=os.path.join(output_dir, f"{optimizer_name}{tag}"), verbose=0)
    return start, values(model), result.history[-1]["loss"]


report = {}
single = {name: run(name) for name in ("sgd", "adamw")}
distribution = setup_distribution("auto", devices=devices)
report["kind"], report["replicas"] = distribution.kind, distribution.num_replicas
for name in ("sgd", "adamw"):
    start, end, loss = single[name]
    _, end_2, loss_2 = run(name, distribution, initial=start, tag="_2")
    report[name] = {
        "max_weight_difference": max(float(np.abs(a - b).max()) for a, b in zip(end, end_2)),
        "max_update": max(float(np.abs(a - b).max()) for a, b in zip(end, start)),
        "loss_1": float(loss),
        "loss_2": float(loss_2),
    }
print("REPORT " + json.dumps(report))
