"""Data parallelism on every backend, through Keras' own mechanisms.

- TensorFlow backend: `tf.distribute.MirroredStrategy` over all local GPUs when there are two or
  more, `tf.distribute.MultiWorkerMirroredStrategy` when `TF_CONFIG` is set (multi-machine;
  create it at program start, before any other TensorFlow work). Build and compile the models
  inside `distribution.scope()`; `fit` then splits each global batch across the replicas. The
  Distiller divides its loss by the replica count (SPEC.md 9), so the summed gradient is the
  global mean's.
- JAX backend: `keras.distribution.DataParallel` over all local devices (set globally); `fit`
  shards each global batch across them and the variables are replicated.
- PyTorch backend, or a single device: one device (Keras' torch trainer has no data
  parallelism; use the TensorFlow or JAX backend for multi-GPU runs).

In every case the input pipeline yields GLOBAL batches; the batch size must divide evenly by the
number of replicas.
"""

import contextlib
import dataclasses
import os

import keras

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "data_parallel")


@dataclasses.dataclass
class Distribution:
    """How training is spread over devices.

    Attributes:
        kind: one of "one_device", "mirrored", "multi_worker_mirrored", "data_parallel".
        num_replicas: how many replicas share each global batch.
        strategy: the `tf.distribute.Strategy` (TensorFlow backend), else None.
        distribution: the `keras.distribution.Distribution` (JAX backend), else None.
        devices: the device names used.
    """

    kind: str
    num_replicas: int
    strategy: object = None
    distribution: object = None
    devices: tuple = ()

    def scope(self):
        """The context to build and compile the models in."""
        if self.strategy is not None:
            return self.strategy.scope()
        return contextlib.nullcontext()

    def check_batch_size(self, global_batch_size):
        if global_batch_size % self.num_replicas:
            raise ValueError(
                f"The global batch size {global_batch_size} does not divide evenly over "
                f"{self.num_replicas} replicas ({self.kind}); pick a multiple of "
                f"{self.num_replicas}."
            )

    def describe(self):
        devices = ", ".join(self.devices) if self.devices else "default device"
        return f"{self.kind} x{self.num_replicas} ({keras.backend.backend()}: {devices})"


def setup_distribution(strategy="auto", devices=None):
    """Chooses and activates the data-parallel setup for the current backend.

    Args:
        strategy: "auto" (the rules in the module docstring), "one_device", "mirrored" (TF),
            "multi_worker_mirrored" (TF) or "data_parallel" (JAX).
        devices: explicit device names (e.g. `["/cpu:0", "/cpu:1"]` for TF, or a list of JAX
            devices); None for all local accelerators.
    Returns:
        a `Distribution`.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; expected one of {STRATEGIES}.")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _setup_tensorflow(strategy, devices)
    if backend == "jax":
        return _setup_jax(strategy, devices)
    if strategy not in ("auto", "one_device"):
        raise ValueError(
            f"strategy={strategy!r} is not available on the {backend} backend (Keras' {backend} "
            "trainer runs on one device); use the tensorflow or jax backend for data "
            "parallelism."
        )
    return Distribution("one_device", 1)


def _setup_tensorflow(strategy, devices):
    import tensorflow as tf

    if strategy in ("data_parallel",):
        raise ValueError("strategy='data_parallel' is the JAX backend's; on TensorFlow use "
                         "'mirrored' or 'multi_worker_mirrored'.")
    if strategy == "auto":
        if os.environ.get("TF_CONFIG"):
            strategy = "multi_worker_mirrored"
        elif devices is not None and len(devices) > 1:
            strategy = "mirrored"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            strategy = "mirrored"
        else:
            strategy = "one_device"
    if strategy == "multi_worker_mirrored":
        tf_strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif strategy == "mirrored":
        tf_strategy = tf.distribute.MirroredStrategy(devices=devices)
    else:
        return Distribution("one_device", 1, devices=tuple(devices or ()))
    return Distribution(
        strategy,
        int(tf_strategy.num_replicas_in_sync),
        strategy=tf_strategy,
        devices=tuple(getattr(tf_strategy.extended, "worker_devices", ()) or ()),
    )


def _setup_jax(strategy, devices):
    import jax

    if strategy in ("mirrored", "multi_worker_mirrored"):
        raise ValueError(f"strategy={strategy!r} is TensorFlow's; on JAX use 'data_parallel'.")
    devices = list(devices) if devices is not None else jax.devices()
    if strategy == "one_device" or (strategy == "auto" and len(devices) < 2):
        return Distribution("one_device", 1, devices=(str(devices[0]),))
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    return Distribution(
        "data_parallel",
        len(devices),
        distribution=distribution,
        devices=tuple(str(d) for d in devices),
    )
