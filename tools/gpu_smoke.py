"""GPU smoke test: the `tiny` preset of each recipe for a few steps with `precision=auto` and
data parallelism over every local GPU (`strategy=auto`), on each backend; one line per case.

    python tools/gpu_smoke.py                                    # 3 recipes x 3 backends
    python tools/gpu_smoke.py --recipes=deit_tiny --backends=jax --steps=2

Each (recipe, backend) runs in a subprocess of its own with KERAS_BACKEND set, since Keras fixes
its backend at import (a fresh process also starts from Keras' default dtype policy and
distribution). The data are a synthetic image folder (4 classes of random JPEGs, written with
Pillow) in the work dir; the teacher is the preset's tiny teacher, untrained (a smoke test
checks that the step runs on the devices, not what it learns), saved as a .weights.h5 by one
process on the CPU beforehand, so a case's process does what a user's recipe run does and no
more: the first GPU work in it is the runner's. The global batch is
`--per_device_batch` times the replica count the runner's `strategy=auto` picks, so every GPU
gets the same share. Each line says ok or FAILED, steps/s over steps 2..N (the first step
compiles), the devices, the precision `auto` chose and the data-parallel setup; a failure
gives its error's last line and keeps the work dir with the case's log. On a machine without a
GPU the same runs happen on the CPU, and the line says "no GPU: ran on CPU".

Exit status: 0 when every case ran, 1 when one failed, 2 for a usage error.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from keras_spectralkd.tools import cli  # noqa: E402 - imports no backend

PROG = "gpu_smoke.py"
RECIPES = ("deit_tiny", "deit_small", "swin_tiny")
BACKENDS = ("tensorflow", "jax", "torch")
NUM_CLASSES = 4
# Three tiny models on the CPU: seconds; the limit only stops a hung process.
TEACHERS_TIMEOUT_S = 600


def _names(allowed):
    def parse(text):
        names = [name for name in text.split(",") if name]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a comma-separated list of {', '.join(allowed)}")
        return names
    return parse


def build_parser():
    parser = cli.parser(PROG, __doc__.split("\n\n")[0])
    parser.add_argument("--recipes", type=_names(RECIPES), default=list(RECIPES),
                        help=f"comma-separated recipes (default: {','.join(RECIPES)})")
    parser.add_argument("--backends", type=_names(BACKENDS), default=list(BACKENDS),
                        help=f"comma-separated backends (default: {','.join(BACKENDS)})")
    parser.add_argument("--steps", type=int, default=10,
                        help="training steps per case, at least 2 (default 10)")
    parser.add_argument("--per_device_batch", type=int, default=8,
                        help="images per replica per step (default 8, the tiny preset's)")
    parser.add_argument("--jit_compile", choices=("auto", "true", "false"), default="auto",
                        help="XLA for the step (default auto, the recipes' own)")
    parser.add_argument("--timeout", type=float, default=1200,
                        help="seconds per case before it is killed (default 1200)")
    parser.add_argument("--work_dir", default=None,
                        help="where data, teachers, runs and logs go (default: a temporary "
                             "folder, removed when every case is ok)")
    # One case, run by the parent in a subprocess with KERAS_BACKEND set.
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--teachers", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return parser


# === The parent: one subprocess per case, one line each ===
def main(argv=None):
    return cli.run(build_parser(), _body, argv)


def _body(args):
    if args.steps < 2:
        raise cli.UsageError(f"--steps={args.steps}: at least 2 (the first step compiles)")
    if args.per_device_batch < 1:
        raise cli.UsageError(f"--per_device_batch={args.per_device_batch}: at least 1")
    if args.teachers:
        return _write_teachers(args.recipes, args.work_dir)
    if args.case:
        return _run_case(args)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="gpu_smoke-")
    os.makedirs(work_dir, exist_ok=True)
    print(f"# gpu_smoke {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: tiny presets, "
          f"{args.steps} steps, {args.per_device_batch} images per replica, precision=auto, "
          "strategy=auto", flush=True)
    problem = _write_teachers_on_the_cpu(args.recipes, work_dir)
    if problem:
        print(f"# writing the teachers FAILED: {problem}", flush=True)
        return 1
    failed = 0
    for backend in args.backends:
        for recipe in args.recipes:
            line, ok = _case_line(recipe, backend, args, work_dir)
            failed += not ok
            print(line, flush=True)
    cases = len(args.backends) * len(args.recipes)
    print(f"# {cases - failed} of {cases} cases ok", flush=True)
    if failed:
        print(f"# logs in {work_dir}", flush=True)
    elif not args.work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 1 if failed else 0


def _write_teachers_on_the_cpu(recipes, work_dir):
    """Runs `_write_teachers` in a process that sees no GPU; returns None, or why it failed."""
    log_path = os.path.join(work_dir, "teachers.log")
    # TensorFlow, a package dependency, whatever --backends says.
    env = dict(_env("tensorflow"), CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, os.path.abspath(__file__), "--teachers",
               f"--recipes={','.join(recipes)}", f"--work_dir={work_dir}"]
    try:
        with open(log_path, "w") as log:
            status = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=TEACHERS_TIMEOUT_S).returncode
    except subprocess.TimeoutExpired:
        return f"timed out after {TEACHERS_TIMEOUT_S} s (log: {log_path})"
    if status:
        return f"{_last_line(log_path) or f'exit status {status}'} (log: {log_path})"
    return None


def _case_line(recipe, backend, args, work_dir):
    """Runs one case in a subprocess; returns (its line, whether it ran)."""
    log_path = os.path.join(work_dir, f"{recipe}-{backend}.log")
    result_path = os.path.join(work_dir, f"{recipe}-{backend}.json")
    if os.path.exists(result_path):
        os.remove(result_path)
    env = _env(backend)
    command = [sys.executable, os.path.abspath(__file__), f"--case={recipe}",
               f"--result={result_path}", f"--work_dir={work_dir}", f"--steps={args.steps}",
               f"--per_device_batch={args.per_device_batch}", f"--jit_compile={args.jit_compile}"]
    started = time.time()
    head = f"{recipe:<11} {backend:<11}"
    try:
        with open(log_path, "w") as log:
            status = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        return f"{head} FAILED  timed out after {args.timeout:.0f} s (log: {log_path})", False
    wall = time.time() - started
    result = None
    if os.path.exists(result_path):
        with open(result_path) as f:
            result = json.load(f)
    if status == 0 and result and result.get("ok"):
        devices = (f"{result['gpus']} GPU(s)" if result["gpus"] else "no GPU: ran on CPU")
        return (f"{head} ok      {result['steps_per_s']:8.2f} steps/s  {devices}; "
                f"{result['precision']}; {result['distribution']}; {result['steps']} steps, "
                f"global batch {result['batch_size']}, loss {result['loss']:.4g}; "
                f"{wall:.0f} s"), True
    error = (result or {}).get("error") or _last_line(log_path) or f"exit status {status}"
    return f"{head} FAILED  {error} (log: {log_path})", False


def _env(backend):
    return dict(os.environ, KERAS_BACKEND=backend,
                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _last_line(path):
    with open(path, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1] if lines else ""


# === The teachers, then one case (each in a process of its own) ===
def _teacher_path(work_dir, recipe_name):
    return os.path.join(work_dir, f"{recipe_name}-teacher.weights.h5")


def _write_teachers(recipe_names, work_dir):
    """Each recipe's tiny teacher, seeded and untrained, as a .weights.h5 (the format loads on
    every backend)."""
    import keras

    from keras_spectralkd.models import create
    from keras_spectralkd.recipes import RECIPES

    for name in recipe_names:
        preset = RECIPES[name].config("tiny")
        keras.utils.set_random_seed(0)
        teacher = create(preset.teacher, num_classes=NUM_CLASSES, image_size=preset.image_size,
                         **preset.teacher_overrides)
        teacher.save_weights(_teacher_path(work_dir, name))
    return 0


def _run_case(args):
    try:
        result = _train_case(args.case, args.work_dir, args.steps, args.per_device_batch,
                             {"auto": "auto", "true": True, "false": False}[args.jit_compile])
    except Exception as error:  # noqa: BLE001 - reported on the case's line; traceback in its log
        import traceback

        traceback.print_exc()
        result = {"ok": False, "error": f"{type(error).__name__}: {cli.one_line(error)}"}
    with open(args.result, "w") as f:
        json.dump(result, f)
    return 0 if result["ok"] else 1


def _train_case(recipe_name, work_dir, steps, per_device_batch, jit_compile):
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "torch":
        import torch  # noqa: F401 - before TensorFlow: importing triton after it crashes

    import keras

    from keras_spectralkd.recipes import RECIPES, runner
    from keras_spectralkd.training import distribute

    if keras.backend.backend() != backend:
        raise RuntimeError(f"KERAS_BACKEND={backend} but Keras runs {keras.backend.backend()}")
    recipe = RECIPES[recipe_name]
    teacher_path = _teacher_path(work_dir, recipe_name)
    # The runner makes the same choice again from the same "auto", as its first device work.
    replicas = distribute.setup_distribution("auto").num_replicas
    batch_size = per_device_batch * replicas
    data_dir = _image_folder(work_dir, train=steps * batch_size, val=batch_size)
    output_dir = os.path.join(work_dir, f"{recipe_name}-{backend}")
    shutil.rmtree(output_dir, ignore_errors=True)  # a leftover run would be resumed, not run
    config = recipe.config(
        "tiny", data_dir=data_dir, output_dir=output_dir, teacher_weights=teacher_path,
        precision="auto", strategy="auto", batch_size=batch_size, eval_batch_size=batch_size,
        epochs=1, steps_per_epoch=steps, jit_compile=jit_compile, tensorboard=False, verbose=2)
    timer = _step_timer()
    summary = runner.run(recipe, config, callbacks=[timer])
    final = summary["final"]
    if final.get("global_step") != steps:
        raise RuntimeError(f"ran {final.get('global_step')} steps, expected {steps}")
    # The policy the run set (config.json repeats the "auto" it was given).
    precision = keras.config.dtype_policy().name
    return {
        "ok": True,
        "steps": steps,
        "steps_per_s": timer.steps_per_second(),
        "gpus": _gpu_count(backend),
        "precision": precision,
        "distribution": distribute.setup_distribution("auto").describe(),
        "batch_size": batch_size,
        "loss": float(final["loss"]),
    }


def _step_timer():
    """A callback timing the training steps' ends; it reads the loss back, so each time is a
    finished step's, not its asynchronous dispatch."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            if logs and "loss" in logs:
                float(logs["loss"])
            self.ends.append(time.perf_counter())

        def steps_per_second(self):
            if len(self.ends) < 2:
                raise RuntimeError(f"timed {len(self.ends)} steps; need 2")
            return (len(self.ends) - 1) / (self.ends[-1] - self.ends[0])

    return StepTimer()


def _gpu_count(backend):
    """GPUs the backend sees (what `precision=auto` and `strategy=auto` look at)."""
    if backend == "jax":
        import jax

        return sum(device.platform == "gpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def _image_folder(work_dir, train, val):
    """work_dir/data-<train>-<val>/{train,val}/<class>/<i>.JPEG: random JPEGs of 40-64 px,
    brightness by class; written once, reused by the later cases. Pillow, not TensorFlow: a
    TensorFlow op here would start TensorFlow on the GPUs before the runner does."""
    import numpy as np
    from PIL import Image

    root = os.path.join(work_dir, f"data-{train}-{val}")
    if os.path.isdir(root):
        return root
    partial = root + f".tmp-{os.getpid()}"
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            label = i % NUM_CLASSES
            folder = os.path.join(partial, split, f"n{label:08d}")
            os.makedirs(folder, exist_ok=True)
            shape = (int(rng.integers(40, 65)), int(rng.integers(40, 65)), 3)
            image = np.clip(rng.normal(50 + 50 * label, 30, shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(os.path.join(folder, f"{i}.JPEG"), format="JPEG")
    os.replace(partial, root)
    return root


if __name__ == "__main__":
    sys.exit(main())
