"""Run in a subprocess by test_distribute.py (devices must be split before the backend starts).

Usage: python distribute_worker.py BACKEND OUTPUT_DIR. Trains one step of a tiny Distiller on
one device and on two logical CPU devices through `setup_distribution` (TF: MirroredStrategy,
JAX: keras.distribution.DataParallel) with our AdamW (no-decay set, warmup-cosine schedule,
checkpoint under the strategy) over two steps, and prints the largest differences.
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
from keras_spectralkd.training import (  # noqa: E402
    WarmupCosineDecay,
    create_optimizer,
    setup_distribution,
    train,
)

train_data, _, steps = tiny_stream(num_examples=16, batch_size=8)


def build(initial=None):
    keras.utils.set_random_seed(0)
    teacher = tiny_vit(embed_dim=16, depth=3)
    student = tiny_vit(embed_dim=8, depth=2)
    distiller = Distiller(teacher, student, layer_pairs=[(0, 0), (1, 2)], mode="soft")
    # Adam normalises away a global gradient scale, so the reported loss (compared below)
    # is what shows a wrongly scaled loss; a wrong gradient mix would show in the weights.
    schedule = WarmupCosineDecay(1e-2, total_steps=2, warmup_steps=1, warmup_init_lr=1e-3)
    distiller.compile(optimizer=create_optimizer(schedule, model=student, weight_decay=0.5))
    if initial is not None:
        for variable, value in zip(distiller.weights, initial):
            variable.assign(value)
    return distiller


def values(model):
    return [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights]


def run(distribution=None, initial=None, tag=""):
    if distribution is not None:
        with distribution.scope():
            model = build(initial)
    else:
        model = build(initial)
    start = values(model)
    result = train(model, train_data, epochs=1, steps_per_epoch=steps,
                   output_dir=os.path.join(output_dir, f"run{tag}"), verbose=0)
    return start, values(model), result.history[-1]["loss"]


start, end, loss = run()
distribution = setup_distribution("auto", devices=devices)
_, end_2, loss_2 = run(distribution, initial=start, tag="_2")
report = {
    "kind": distribution.kind,
    "replicas": distribution.num_replicas,
    "max_weight_difference": max(float(np.abs(a - b).max()) for a, b in zip(end, end_2)),
    "max_update": max(float(np.abs(a - b).max()) for a, b in zip(end, start)),
    "loss_1": float(loss),
    "loss_2": float(loss_2),
}
print("REPORT " + json.dumps(report))
