"""Inference speed of our backbones against timm's, side by side in one run (issue 3 item 6).

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 \
        python benchmarks/forward.py --model cait_s24_224 --batch_size 8

Times one forward pass (eval mode, batch `--batch_size`, the model's native size, float32,
CPU) of timm's model (torch, eager, `inference_mode`; the reference) and of ours on each Keras
backend with jit on: `jax.jit` of `stateless_call`, `tf.function(jit_compile=True)` (XLA), and
for torch plain eager under `inference_mode` (Keras' torch backend does not jit by itself;
`--backends=...,torch-compile` adds `torch.compile`, which took 8 minutes to compile on a
loaded 2-core machine and was not faster).
A Keras backend is fixed per process, so every measurement runs in its own subprocess; the
timm model's random weights are saved once and converted by every worker, which also reports
its max abs logit difference to timm (a speed number of a wrong model is worthless).

timm runs first and again last, so drift of a shared, noisy machine shows up in the table;
the ratio is ours / the mean of the two timm runs (lower is better; < 1 is faster than timm).
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
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls first (compilation included).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls; the table reports their median.")
_BACKENDS = flags.DEFINE_list(
    "backends", ["jax", "tensorflow", "torch"],
    "Which of ours to time: jax, tensorflow, torch (eager), torch-compile (minutes to compile "
    "on 2 cores, and not faster than eager there, so not run by default).",
)
_WORKER = flags.DEFINE_string("worker", None, "Internal: run one measurement and print JSON.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Internal: where the reference files lie.")


# === Workers (one per process) ===
def _time_calls(fn, inputs, warmup, repeats):
    """Median and min seconds per call of `fn(inputs)`; `fn` must block until done."""
    for _ in range(warmup):
        fn(inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(inputs)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2], times[0]


def _timm_worker(workdir, model_name, batch_size, warmup, repeats):
    import numpy as np
    import timm
    import torch
    from safetensors.numpy import save_file

    from keras_spectralkd.models import registry

    torch.manual_seed(0)
    defaults = registry.model_defaults(model_name)
    timm_name = "cait_xs24_384" if model_name == "cait_xs24_224" else model_name
    model = timm.create_model(
        timm_name, pretrained=False, img_size=defaults.get("image_size", 224)
    ).eval()
    size = defaults.get("image_size", 224)
    weights_path = os.path.join(workdir, "weights.safetensors")
    images_path = os.path.join(workdir, "images.npy")
    if not os.path.exists(weights_path):
        save_file({k: v.numpy() for k, v in model.state_dict().items()}, weights_path)
        images = np.random.default_rng(0).normal(size=(batch_size, size, size, 3))
        np.save(images_path, images.astype("float32"))
    images = torch.from_numpy(np.load(images_path)).permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        np.save(os.path.join(workdir, "logits.npy"), model(images).numpy())
        median, best = _time_calls(model, images, warmup, repeats)
    return {"median_s": median, "min_s": best, "max_abs_err": 0.0}


def _keras_worker(workdir, model_name, backend, warmup, repeats):
    import numpy as np

    compile_torch = backend == "torch-compile"
    os.environ["KERAS_BACKEND"] = "torch" if compile_torch else backend
    import keras

    from keras_spectralkd.convert import from_timm

    model = from_timm(model_name, os.path.join(workdir, "weights.safetensors"))
    images = np.load(os.path.join(workdir, "images.npy"))
    reference = np.load(os.path.join(workdir, "logits.npy"))

    if backend == "jax":
        import jax

        state = (model.trainable_variables, model.non_trainable_variables)
        state = jax.tree_util.tree_map(lambda v: v.value, state)
        call = jax.jit(lambda s, x: model.stateless_call(s[0], s[1], x, training=False)[0])
        inputs = jax.numpy.asarray(images)

        def forward(x):
            return call(state, x).block_until_ready()

    elif backend == "tensorflow":
        import tensorflow as tf

        call = tf.function(lambda x: model(x, training=False), jit_compile=True)
        inputs = tf.constant(images)

        def forward(x):
            return call(x).numpy()

    else:
        import torch

        inputs = torch.from_numpy(images)
        call = torch.compile(model) if compile_torch else model

        def forward(x):
            with torch.inference_mode():
                return call(x, training=False)

    logits = keras.ops.convert_to_numpy(forward(inputs))
    error = float(np.abs(logits - reference).max())
    median, best = _time_calls(forward, inputs, warmup, repeats)
    return {"median_s": median, "min_s": best, "max_abs_err": error}


# === Driver ===
def _run_worker(worker, workdir):
    command = [
        sys.executable, os.path.abspath(__file__), f"--worker={worker}", f"--workdir={workdir}",
        f"--model={_MODEL.value}", f"--batch_size={_BATCH_SIZE.value}",
        f"--warmup={_WARMUP.value}", f"--repeats={_REPEATS.value}",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    started = time.perf_counter()
    print(f"[{worker}] running ...", flush=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        print(f"[{worker}] FAILED:\n{done.stderr[-3000:]}", flush=True)
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"[{worker}] {result['median_s']:.3f} s/batch (median), "
        f"worker wall {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return result


def main(argv):
    del argv
    if _WORKER.value:
        args = (_WORKDIR.value, _MODEL.value)
        if _WORKER.value.startswith("timm"):
            result = _timm_worker(*args, _BATCH_SIZE.value, _WARMUP.value, _REPEATS.value)
        else:
            result = _keras_worker(*args, _WORKER.value, _WARMUP.value, _REPEATS.value)
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as workdir:
        results = {"timm (first)": _run_worker("timm", workdir)}
        if results["timm (first)"] is None:
            raise SystemExit("The timm reference run failed; nothing to compare against.")
        for backend in _BACKENDS.value:
            results[f"ours, {backend}"] = _run_worker(backend, workdir)
        results["timm (last)"] = _run_worker("timm-last", workdir)

    timm_runs = [r["median_s"] for k, r in results.items() if k.startswith("timm") and r]
    timm_s = sum(timm_runs) / len(timm_runs)
    batch = _BATCH_SIZE.value
    print(
        f"\n{_MODEL.value}, batch {batch}, float32, CPU ({os.cpu_count()} cores), "
        f"median of {_REPEATS.value} after {_WARMUP.value} warm-up calls\n"
    )
    header = f"| {'run':<22} | {'s/batch':>8} | {'min s':>7} | {'img/s':>7} | {'vs timm':>7} |"
    print(header + f" {'max abs err':>11} |")
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|" + "-" * 13 + "|")
    for key, result in results.items():
        if result is None:
            print(f"| {key:<22} | {'failed':>8} |")
            continue
        median = result["median_s"]
        print(
            f"| {key:<22} | {median:8.3f} | {result['min_s']:7.3f} | {batch / median:7.2f} | "
            f"{median / timm_s:6.2f}x | {result['max_abs_err']:11.2e} |"
        )


if __name__ == "__main__":
    # Running from a checkout without installing: make the package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
