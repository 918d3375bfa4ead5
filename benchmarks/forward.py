"""Inference speed of our backbones against timm's, side by side in one run (issue 3 item 6).

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

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

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


def _serve(worker, workdir):
    """Sets up one contender, warms it up, then times one call per "time" line on stdin."""
    if _TORCH_THREADS.value and worker in ("timm", "torch", "torch-compile"):
        import torch

        torch.set_num_threads(_TORCH_THREADS.value)
    if worker == "timm":
        forward, error = _timm_forward(workdir, _MODEL.value, _BATCH_SIZE.value)
    else:
        forward, error = _keras_forward(workdir, _MODEL.value, worker)
    for _ in range(_WARMUP.value):
        forward()
    print(json.dumps({"ready": True, "max_abs_err": error}), flush=True)
    for line in sys.stdin:
        if line.strip() != "time":
            break
        start = time.perf_counter()
        forward()
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


# === Driver ===
class _Worker:
    """A contender's process: started, then asked to time one call at a time."""

    def __init__(self, name, workdir):
        self.name = name
        command = [
            sys.executable, os.path.abspath(__file__), f"--worker={name}",
            f"--workdir={workdir}", f"--model={_MODEL.value}",
            f"--batch_size={_BATCH_SIZE.value}", f"--warmup={_WARMUP.value}",
        ]
        if _TORCH_THREADS.value:
            command.append(f"--torch_threads={_TORCH_THREADS.value}")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            text=True,
        )
        self.times = []
        self.error = None

    def _reply(self):
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        self.log.seek(0)
        raise RuntimeError(f"worker {self.name} died:\n{self.log.read()[-3000:]}")

    def wait_ready(self):
        self.error = self._reply()["max_abs_err"]

    def time_once(self):
        self.process.stdin.write("time\n")
        self.process.stdin.flush()
        self.times.append(self._reply()["seconds"])

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


def main(argv):
    del argv
    if _WORKER.value:
        _serve(_WORKER.value, _WORKDIR.value)
        return

    names = ["timm"] + list(_BACKENDS.value)
    workers = []
    with tempfile.TemporaryDirectory() as workdir:
        try:
            for name in names:  # one at a time: timm writes the weights the others read
                started = time.perf_counter()
                print(f"[{name}] starting, converting, compiling, warming up ...", flush=True)
                worker = _Worker(name, workdir)
                workers.append(worker)
                worker.wait_ready()
                print(f"[{name}] ready after {time.perf_counter() - started:.0f} s", flush=True)
            for round_index in range(_ROUNDS.value):
                for worker in workers:
                    worker.time_once()
                print(f"round {round_index + 1}/{_ROUNDS.value}: " + ", ".join(
                    f"{w.name} {w.times[-1]:.2f} s" for w in workers), flush=True)
        finally:
            for worker in workers:
                worker.close()
    _print_table(workers)


def _print_table(workers):
    def median(values):
        values = sorted(values)
        return values[len(values) // 2]

    batch = _BATCH_SIZE.value
    timm_median = median(workers[0].times)
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
        value = median(worker.times)
        print(
            f"| {label:<19} | {value:8.3f} | {min(worker.times):6.3f} | {batch / value:6.2f} | "
            f"{value / timm_median:6.2f}x | {worker.error:11.2e} |"
        )


if __name__ == "__main__":
    # Running from a checkout without installing: make the package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
