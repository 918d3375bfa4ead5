"""Inference speed of our backbones against timm's, side by side in one run.

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        python benchmarks/forward.py --model cait_s24_224 --batch_size 8

Times one forward pass (eval mode, batch `--batch_size`, the model's native size, float32,
CPU) of timm's model (torch eager under `inference_mode`: the reference) and of ours on each
Keras backend with jit on: `jax.jit` of `stateless_call`, `tf.function(jit_compile=True)`
(XLA), and for torch plain eager under `inference_mode` (Keras' torch backend does not jit by
itself; `--backends=...,torch-compile` adds `torch.compile`, which took 8 minutes to compile on
a loaded 2-core machine and was not faster there).

A Keras backend is fixed per process, so each contender lives in its own worker process. The
workers start (and compile, and warm up) one after the other, then the driver times them in
interleaved ROUNDS (timm, jax, tensorflow, torch, timm, jax, ...), one call each per round, so
that the load of a shared, noisy machine hits every contender alike. The table reports the
median and the minimum over the rounds; the ratio is ours / timm on the median (< 1: faster).
timm's random weights are saved once and converted by every Keras worker, which also reports
its max abs logit difference to timm (a speed number of a wrong model is worthless).
"""

import os
import sys
import tempfile

from absl import app, flags

# Running from a checkout without installing: the package and the worker harness importable.
sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                os.path.dirname(os.path.abspath(__file__))]
from _workers import interleave, serve, start_all  # noqa: E402

_MODEL = flags.DEFINE_string("model", "cait_s24_224", "A registered model name (timm's).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per forward pass.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls per worker (compilation included).")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Interleaved timing rounds (one call each).")
_BACKENDS = flags.DEFINE_list(
    "backends", ["jax", "tensorflow", "torch"],
    "Which of ours to time: jax, tensorflow, torch (eager), torch-compile.",
)
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", None,
    "torch.set_num_threads for timm and ours-on-torch (default: torch's, one per core). On a "
    "machine whose cores are busy with other work, torch's OpenMP waits for its threads at "
    "every op; 1 thread then runs faster.",
)
_WORKER = flags.DEFINE_string("worker", None, "Internal: serve one contender over stdin/stdout.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Internal: where the reference files lie.")


# === Workers (one per process) ===
def _timm_forward(workdir, model_name, batch_size):
    """timm's model with fresh random weights; writes them, the images and the logits."""
    import numpy as np
    import timm
    import torch
    from safetensors.numpy import save_file

    torch.manual_seed(0)
    # timm's names end in the native size ("..._224"); not importing our package here keeps
    # Keras and TensorFlow (and their thread pools) out of the reference's process.
    suffix = model_name.rsplit("_", 1)[-1]
    size = int(suffix) if suffix.isdigit() else 224
    timm_name = "cait_xs24_384" if model_name == "cait_xs24_224" else model_name
    model = timm.create_model(timm_name, pretrained=False, img_size=size).eval()
    save_file({k: v.numpy() for k, v in model.state_dict().items()},
              os.path.join(workdir, "weights.safetensors"))
    images = np.random.default_rng(0).normal(size=(batch_size, size, size, 3)).astype("float32")
    np.save(os.path.join(workdir, "images.npy"), images)
    inputs = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())

    def forward():
        with torch.inference_mode():
            return model(inputs).numpy()

    np.save(os.path.join(workdir, "logits.npy"), forward())
    return forward, 0.0


def _keras_forward(workdir, model_name, backend):
    """Our model converted from the timm weights, jitted for `backend`; and its logit error."""
    import numpy as np

    compile_torch = backend == "torch-compile"
    os.environ["KERAS_BACKEND"] = "torch" if compile_torch else backend
    import keras

    from keras_spectralkd.convert import from_timm

    model = from_timm(model_name, os.path.join(workdir, "weights.safetensors"))
    images = np.load(os.path.join(workdir, "images.npy"))

    if backend == "jax":
        import jax

        state = (model.trainable_variables, model.non_trainable_variables)
        state = jax.tree_util.tree_map(lambda v: v.value, state)
        call = jax.jit(lambda s, x: model.stateless_call(s[0], s[1], x, training=False)[0])
        inputs = jax.numpy.asarray(images)

        def forward():
            return np.asarray(call(state, inputs))

    elif backend == "tensorflow":
        import tensorflow as tf

        call = tf.function(lambda x: model(x, training=False), jit_compile=True)
        inputs = tf.constant(images)

        def forward():
            return call(inputs).numpy()

    else:
        import torch

        inputs = torch.from_numpy(images)
        call = torch.compile(model) if compile_torch else model

        def forward():
            with torch.inference_mode():
                return call(inputs, training=False).numpy()

    reference = np.load(os.path.join(workdir, "logits.npy"))
    error = float(np.abs(keras.ops.convert_to_numpy(forward()) - reference).max())
    return forward, error


def _setup(worker, workdir):
    """One contender, warmed up: (forward, ready info, no extras) for `_workers.serve`."""
    if _TORCH_THREADS.value and worker in ("timm", "torch", "torch-compile"):
        import torch

        torch.set_num_threads(_TORCH_THREADS.value)
    if worker == "timm":
        forward, error = _timm_forward(workdir, _MODEL.value, _BATCH_SIZE.value)
    else:
        forward, error = _keras_forward(workdir, _MODEL.value, worker)
    for _ in range(_WARMUP.value):
        forward()
    return forward, {"max_abs_err": error}, None


# === Driver ===
def _worker_spec(name, workdir):
    command = [
        sys.executable, os.path.abspath(__file__), f"--worker={name}",
        f"--workdir={workdir}", f"--model={_MODEL.value}",
        f"--batch_size={_BATCH_SIZE.value}", f"--warmup={_WARMUP.value}",
    ]
    if _TORCH_THREADS.value:
        command.append(f"--torch_threads={_TORCH_THREADS.value}")
    return name, command, dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")


def main(argv):
    del argv
    if _WORKER.value:
        serve(lambda: _setup(_WORKER.value, _WORKDIR.value))
        return

    names = ["timm"] + list(_BACKENDS.value)
    with tempfile.TemporaryDirectory() as workdir:
        # One at a time (start_all waits for each): timm writes the weights the others read.
        workers = start_all([_worker_spec(name, workdir) for name in names])
        try:
            if [w.name for w in workers][:1] != ["timm"]:
                raise SystemExit("the timm reference failed to start; see above")
            interleave(workers, _ROUNDS.value)
        finally:
            for worker in workers:
                worker.close()
    _print_table(workers)


def _print_table(workers):
    batch = _BATCH_SIZE.value
    timm_median = workers[0].median
    print(
        f"\n{_MODEL.value}, batch {batch}, float32, CPU ({os.cpu_count()} cores), "
        f"{_ROUNDS.value} interleaved rounds after {_WARMUP.value} warm-up calls each, "
        f"torch threads: {_TORCH_THREADS.value or 'default'}\n"
    )
    print(f"| {'run':<19} | {'median s':>8} | {'min s':>6} | {'img/s':>6} | {'vs timm':>7} | "
          f"{'max abs err':>11} |")
    print(f"|{'-' * 21}|{'-' * 10}|{'-' * 8}|{'-' * 8}|{'-' * 9}|{'-' * 13}|")
    for worker in workers:
        label = "timm (torch eager)" if worker.name == "timm" else f"ours, {worker.name}"
        value = worker.median
        print(
            f"| {label:<19} | {value:8.3f} | {min(worker.times):6.3f} | {batch / value:6.2f} | "
            f"{value / timm_median:6.2f}x | {worker.info['max_abs_err']:11.2e} |"
        )


if __name__ == "__main__":
    app.run(main)
