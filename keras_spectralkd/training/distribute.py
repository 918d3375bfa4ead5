"""Data parallelism on every backend, through Keras' own mechanisms.

- TensorFlow backend: `tf.distribute.MirroredStrategy` over all local GPUs when there are two or
  more, `tf.distribute.MultiWorkerMirroredStrategy` when `TF_CONFIG` is set (multi-machine;
  create it at program start, before any other TensorFlow work). Build and compile the models
  inside `distribution.scope()`; `fit` then splits each global batch across the replicas. The
  Distiller divides its loss by the replica count (SPEC.md 9), so the summed gradient is the
  global mean's.
- JAX backend: `keras.distribution.DataParallel` over all local devices (set globally); `fit`
  shards each global batch across them and the variables are replicated.
- Several processes (machines): on TensorFlow, `TF_CONFIG` (the standard cluster description);
  on JAX, `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` (read by
  `initialize_multi_process`, which calls `jax.distributed.initialize`, gloo collectives on CPU).
  Call `initialize_multi_process()` at program start, before any other TensorFlow/JAX work; the
  runner does. Process 0 is the chief: it alone writes TensorBoard logs and final files
  (docs/distributed.md). On TensorFlow, `training.loop.train` runs its `fit` inside
  `keras_multi_worker_fixes(model)` (two Keras trainer bugs worked around for that model's
  training only).
- PyTorch backend, or a single device: one device (Keras' torch trainer has no data
  parallelism; use the TensorFlow or JAX backend for multi-GPU runs).

In every case the input pipeline yields GLOBAL batches; the batch size must divide evenly by the
number of replicas.
"""

import contextlib
import dataclasses
import json
import os

import keras

from keras_spectralkd import _keras_internals

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "data_parallel")
JAX_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")

# The MultiWorkerMirroredStrategy made by `initialize_multi_process` (TensorFlow allows one per
# program, created before any other TensorFlow work).
_MULTI_WORKER_STRATEGY = None


@dataclasses.dataclass
class Distribution:
    """How training is spread over devices.

    Attributes:
        kind: one of "one_device", "mirrored", "multi_worker_mirrored", "data_parallel".
        num_replicas: how many replicas share each global batch.
        strategy: the `tf.distribute.Strategy` (TensorFlow backend), else None.
        distribution: the `keras.distribution.Distribution` (JAX backend), else None.
        devices: the device names used.
        process_index: this process's index among the workers (0: the chief).
        num_processes: how many processes train together.
    """

    kind: str
    num_replicas: int
    strategy: object = None
    distribution: object = None
    devices: tuple = ()
    process_index: int = 0
    num_processes: int = 1

    @property
    def is_chief(self):
        """Whether this process writes the run's shared outputs (logs, TensorBoard, finals)."""
        return self.process_index == 0

    def scope(self):
        """The context to build and compile the models in."""
        if self.strategy is not None:
            return self.strategy.scope()
        return contextlib.nullcontext()

    def run_dir(self, output_dir):
        """Where this process keeps its checkpoints and logs: `output_dir` on the chief,
        `output_dir/worker-<i>` on worker i (its own copy, so a shared filesystem sees no
        two writers of one file and a worker on another machine can resume from its own)."""
        if self.is_chief:
            return output_dir
        return os.path.join(output_dir, f"worker-{self.process_index}")

    def check_batch_size(self, global_batch_size):
        if global_batch_size % self.num_replicas:
            raise ValueError(
                f"The global batch size {global_batch_size} does not divide evenly over "
                f"{self.num_replicas} replicas ({self.kind}); pick a multiple of "
                f"{self.num_replicas}."
            )

    def evaluation_images_left_out(self, num_examples, global_batch_size):
        """How many images of an evaluation set of `num_examples` in batches of
        `global_batch_size` are not evaluated: under JAX data parallelism the last, partial batch
        is cut to a multiple of the device count (`_EvenSplitDataParallel`); elsewhere 0."""
        if self.kind != "data_parallel" or not num_examples:
            return 0
        return (num_examples % global_batch_size) % self.num_replicas

    def describe(self):
        devices = ", ".join(self.devices) if self.devices else "default device"
        processes = (f", process {self.process_index} of {self.num_processes}"
                     if self.num_processes > 1 else "")
        return (f"{self.kind} x{self.num_replicas} ({keras.backend.backend()}: {devices}"
                f"{processes})")


def _tf_config():
    """The parsed `TF_CONFIG`, or None; a clear error when it is not valid JSON."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        return None
    try:
        tf_config = json.loads(text)
        workers = tf_config["cluster"]["worker"]
        task = tf_config["task"]
        if task["type"] != "worker" or not 0 <= int(task["index"]) < len(workers):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            f"TF_CONFIG={text!r} is not a valid cluster description; expected JSON like "
            '{"cluster": {"worker": ["host0:port", "host1:port"]}, '
            '"task": {"type": "worker", "index": 0}}.'
        ) from None
    return tf_config


def _jax_env():
    """(coordinator, num_processes, process_id) from the JAX_* variables, or None."""
    values = {name: os.environ.get(name) for name in JAX_ENV}
    if not any(values.values()):
        return None
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ValueError(
            f"Multi-process JAX needs all of {', '.join(JAX_ENV)}; {', '.join(missing)} "
            "not set."
        )
    try:
        num, index = int(values["JAX_NUM_PROCESSES"]), int(values["JAX_PROCESS_ID"])
    except ValueError:
        num = index = -1
    if not 0 <= index < num:
        raise ValueError(
            f"JAX_NUM_PROCESSES={values['JAX_NUM_PROCESSES']!r} and JAX_PROCESS_ID="
            f"{values['JAX_PROCESS_ID']!r} must be integers with 0 <= JAX_PROCESS_ID < "
            "JAX_NUM_PROCESSES."
        )
    return values["JAX_COORDINATOR_ADDRESS"], num, index


def initialize_multi_process():
    """Joins the other processes of a multi-machine run; a no-op for a single process.

    TensorFlow backend with `TF_CONFIG` set: creates the `MultiWorkerMirroredStrategy` (it must
    exist before any other TensorFlow work, so call this first). JAX backend with the `JAX_ENV`
    variables set: `jax.distributed.initialize` (gloo collectives on CPU). Idempotent.

    Returns:
        (process_index, num_processes).
    """
    global _MULTI_WORKER_STRATEGY
    backend = keras.backend.backend()
    if backend == "tensorflow":
        tf_config = _tf_config()
        if tf_config is None:
            return 0, 1
        if _MULTI_WORKER_STRATEGY is None:
            import tensorflow as tf

            _MULTI_WORKER_STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
        return int(tf_config["task"]["index"]), len(tf_config["cluster"]["worker"])
    if backend == "jax":
        env = _jax_env()
        if env is None:
            return 0, 1
        import jax

        if not jax.distributed.is_initialized():
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
            coordinator, num, index = env
            jax.distributed.initialize(coordinator, num_processes=num, process_id=index)
        return jax.process_index(), jax.process_count()
    if os.environ.get("TF_CONFIG") or _jax_env() is not None:
        raise ValueError(
            f"Multi-process training is not available on the {backend} backend; use the "
            "tensorflow (TF_CONFIG) or jax (JAX_COORDINATOR_ADDRESS, ...) backend."
        )
    return 0, 1


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


class _EvenSplitDataParallel(keras.distribution.DataParallel):
    """`keras.distribution.DataParallel` whose tf.data batches split evenly over every device.

    Keras' own split (`DataParallel.distribute_tf_dataset`) rebatches to the per-process size and
    deals the pieces out round-robin: a partial last batch (evaluation sets keep theirs) then
    gives the processes pieces of different sizes, so each one evaluates a different batch and
    the chief's `val_*` numbers cover only its own piece (tests/training/test_multiprocess.py
    compares them with one process's). Here every global batch is cut to a multiple of the
    device count (only a partial last batch can lose rows: fewer than the device count, reported
    by `Distribution.evaluation_images_left_out`) and process p takes the p-th equal slice, so
    the global array the step sees is the global batch itself, on one process or many.
    """

    def distribute_dataset(self, dataset):
        import tensorflow as tf

        if not isinstance(dataset, tf.data.Dataset):
            return super().distribute_dataset(dataset)
        num_devices = int(self.device_mesh.devices.size)
        num_processes, process = self.num_processes, self._process_id
        per_process = num_devices // num_processes

        def take_slice(*batch):
            rows = tf.shape(tf.nest.flatten(batch)[0])[0]
            size = rows // num_devices * per_process
            piece = tf.nest.map_structure(lambda t: t[process * size:(process + 1) * size], batch)
            return piece if len(piece) > 1 else piece[0]

        def not_empty(*batch):
            return tf.shape(tf.nest.flatten(batch)[0])[0] > 0

        return dataset.map(take_slice).filter(not_empty).prefetch(tf.data.AUTOTUNE)


@contextlib.contextmanager
def keras_multi_worker_fixes(model):
    """Works around two bugs of Keras 3.15's TensorFlow trainer under MultiWorkerMirroredStrategy,
    for `model`'s `fit`/`evaluate`/`train_on_batch` calls inside the block (`training.loop.train`
    opens it around its training). Does nothing unless `model` trains under that strategy.

    1. Before its first `fit`/`evaluate` it builds the model from one input batch, which it
    pulls from the dataset and averages with `strategy.reduce("MEAN", (x, y))` over the whole
    tuple; the multi-worker strategy reduces single values only, so every `fit` fails ("Attempt
    to convert a value (PerReplica ...) to a Tensor"). Building needs shapes only, so `model`
    builds from the dataset's element spec instead: no collective, and no batch pulled (pulling
    one advances the random state of a stateful augmentation, so the first step would see other
    images than a one-process run). An attribute of `model` alone, removed after the block.
    2. It averages each step's logs over the workers with `strategy.reduce("MEAN", v, axis=0)`,
    which fails on scalar logs ("Invalid reduction dimension 0 for input with 0 dimensions");
    the mean over replicas (`axis=None`) is what it computes on one machine, so that is used.
    Keras looks the reducer up in its trainer module when it traces a step, so it is replaced
    there for the block only; the replacement changes nothing for other strategies.

    Private Keras API (`_keras_internals`): where it is off, Keras' own code runs, after one
    `KerasPrivateAPIWarning`.
    """
    if keras.backend.backend() != "tensorflow" or not _multi_worker(model):
        yield
        return
    if not _keras_internals.private_api_usable(
        "the multi-worker fixes of Keras' TensorFlow trainer (training.distribute)",
        _missing_trainer_internals,
        "Keras' own build and log averaging run, which fail under MultiWorkerMirroredStrategy "
        "in Keras 3.15 (docs/distributed.md)",
    ):
        yield
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_build = type(model)._maybe_symbolic_build
    original_reduce = tf_trainer.reduce_per_replica

    def build_from_spec(iterator=None, data_batch=None):
        if iterator is not None:
            data_batch = tf.nest.map_structure(
                lambda spec: keras.KerasTensor(tuple(spec.shape), spec.dtype.name),
                iterator.data_adapter.get_tf_dataset().element_spec,
            )
            iterator = None
        return original_build(model, iterator=iterator, data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
            strategy
        ):
            return tf.nest.map_structure(
                lambda v: None if v is None else strategy.reduce("MEAN", v, axis=None), values
            )
        return original_reduce(values, strategy, reduction)

    # object.__setattr__: a plain attribute, out of Keras' tracking of the model's state; what
    # was there before (an enclosing block's) comes back after.
    earlier_build = vars(model).get("_maybe_symbolic_build")
    object.__setattr__(model, "_maybe_symbolic_build", build_from_spec)
    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original_reduce
        if earlier_build is None:
            object.__delattr__(model, "_maybe_symbolic_build")
        else:
            object.__setattr__(model, "_maybe_symbolic_build", earlier_build)


def _multi_worker(model):
    import tensorflow as tf

    strategy = getattr(model, "distribute_strategy", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _missing_trainer_internals():
    """What of the private Keras names `keras_multi_worker_fixes` uses is absent, or None."""
    import inspect

    try:
        from keras.src.backend.tensorflow import trainer as tf_trainer
    except ImportError:
        return "keras.src.backend.tensorflow.trainer"
    absent = [name for name in ("reduce_per_replica", "_collective_all_reduce_multi_worker")
              if not callable(getattr(tf_trainer, name, None))]
    if absent:
        return f"{absent} in its TensorFlow trainer module"
    build = getattr(tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build", None)
    if build is None or list(inspect.signature(build).parameters) != [
        "self", "iterator", "data_batch"
    ]:
        return "TensorFlowTrainer._maybe_symbolic_build(self, iterator, data_batch)"
    return None


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
    process_index, num_processes = 0, 1
    if strategy == "multi_worker_mirrored":
        process_index, num_processes = initialize_multi_process()
        tf_strategy = _MULTI_WORKER_STRATEGY or tf.distribute.MultiWorkerMirroredStrategy()
    elif strategy == "mirrored":
        tf_strategy = tf.distribute.MirroredStrategy(devices=devices)
    else:
        return Distribution("one_device", 1, devices=tuple(devices or ()))
    return Distribution(
        strategy,
        int(tf_strategy.num_replicas_in_sync),
        strategy=tf_strategy,
        devices=tuple(getattr(tf_strategy.extended, "worker_devices", ()) or ()),
        process_index=process_index,
        num_processes=num_processes,
    )


def _setup_jax(strategy, devices):
    import jax

    if strategy in ("mirrored", "multi_worker_mirrored"):
        raise ValueError(f"strategy={strategy!r} is TensorFlow's; on JAX use 'data_parallel'.")
    process_index, num_processes = initialize_multi_process()
    # Over several processes, jax.devices() lists every process's devices (a global mesh).
    devices = list(devices) if devices is not None else jax.devices()
    if strategy == "one_device" or (strategy == "auto" and len(devices) < 2):
        if num_processes > 1:
            raise ValueError(
                f"strategy={strategy!r} with {num_processes} JAX processes: every process "
                "would train alone; use 'auto' or 'data_parallel'."
            )
        return Distribution("one_device", 1, devices=(str(devices[0]),))
    distribution = _EvenSplitDataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    return Distribution(
        "data_parallel",
        len(devices),
        distribution=distribution,
        devices=tuple(str(d) for d in devices),
        process_index=process_index,
        num_processes=num_processes,
    )
