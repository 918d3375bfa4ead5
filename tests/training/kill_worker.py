"""Kills real training processes with SIGKILL and resumes them (run by test_kill_resume.py).

Process start-up (importing TensorFlow/JAX/torch and Keras) costs seconds, so this worker
imports everything once and then FORKS one child per training attempt, before any backend op
has run in the parent (so every child starts from a clean, fork-safe state). Each child is a
real process that trains from the checkpoints in `output_dir` and is killed with SIGKILL:

- at a random instant after it started training (the parent sends the signal), or
- at a chosen stage of a checkpoint write (the child sends it to itself from the write hook:
  after the weights file, the optimizer file, the state file, the rename, or `latest.json`).

Every write is slowed down by the hook, so random kills also land inside writes. Finally one
child trains to the end, another trains an uninterrupted run in a fresh folder; both save their
final weights, and a JSON report goes to stdout.

    python kill_worker.py OUT_DIR SEED
"""

import json
import os
import random
import signal
import sys
import time

import keras  # noqa: F401  (imported once, before forking)
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from training_helpers import tiny_stream, tiny_vit  # noqa: E402

from keras_spectralkd import Distiller  # noqa: E402
from keras_spectralkd.training import checkpoint, create_optimizer, train  # noqa: E402

EPOCHS, SAVE_EVERY = 5, 2  # 6 steps per epoch: 30 steps, a checkpoint every 2
KILLS = 20
STAGES = ("model", "optimizer", "state", "renamed", "latest")
SLOW_WRITE_S = 0.05


def _record_progress(path):
    """Appends the global step reached after every step, in `fit` and in the rest of an
    interrupted epoch alike (wraps the loop's own step counter; each line reaches the kernel
    at once, so it survives SIGKILL)."""
    count = checkpoint.StepCounter.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        count(self, batch, logs)
        with open(path, "a") as f:
            f.write(f"{self.state['global_step']}\n")

    checkpoint.StepCounter.on_train_batch_end = on_train_batch_end


def _train(output_dir, progress_path=None, kill_stage=None):
    """One attempt: build, resume from `output_dir`, train; returns the result."""
    def hook(stage):
        time.sleep(SLOW_WRITE_S)
        if stage == kill_stage:
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.write_hook = hook
    keras.utils.set_random_seed(0)
    teacher = tiny_vit(embed_dim=16, depth=3)
    # A fresh run starts from seed 1; an attempt that finds a checkpoint starts from another
    # initialisation, so only the checkpoint can carry the weights it ends with.
    fresh = checkpoint.read_state(os.path.join(output_dir, "checkpoints")) is None
    keras.utils.set_random_seed(1 if fresh else os.getpid())
    student = tiny_vit(embed_dim=8, depth=2)
    distiller = Distiller(teacher, student, layer_pairs=[(0, 0), (1, 2)], mode="soft")
    # No XLA: compiling costs more than these few tiny steps.
    distiller.compile(optimizer=create_optimizer(1e-2, model=student, ema_momentum=0.9),
                      jit_compile=keras.backend.backend() == "jax")
    train_data, _, steps = tiny_stream()
    if progress_path:
        _record_progress(progress_path)
    result = train(distiller, train_data, epochs=EPOCHS, steps_per_epoch=steps,
                   output_dir=output_dir, save_every_steps=SAVE_EVERY, verbose=0)
    return distiller, result


def _child(fn):
    """Runs `fn` in a forked child; returns (pid, exit status)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except BaseException as error:  # noqa: BLE001 - report, never return into the parent
            print(f"child {os.getpid()} failed: {type(error).__name__}: {error}",
                  file=sys.stderr, flush=True)
            code = 3
        os._exit(code)
    return pid


def _last_step(path):
    if not os.path.exists(path):
        return 0
    lines = open(path).read().split()
    return int(lines[-1]) if lines else 0


def main(out, seed):
    rng = random.Random(seed)
    run_dir = os.path.join(out, "killed")
    progress = os.path.join(out, "progress.txt")
    # Half the kills at a write stage (each stage twice), half at random instants.
    plan = [("stage", s) for s in STAGES * 2] + [("random", None)] * (KILLS - 2 * len(STAGES))
    rng.shuffle(plan)
    attempts = []
    for kind, stage in plan:
        before = _last_step(progress)
        resumed = (checkpoint.read_state(os.path.join(run_dir, "checkpoints")) or {}).get(
            "global_step", 0)
        pid = _child(lambda: _train(run_dir, progress, kill_stage=stage))
        if kind == "random":
            deadline = time.time() + 120
            while _last_step(progress) == before and time.time() < deadline:
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    break
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
        attempts.append({
            "kind": kind, "stage": stage, "resumed_from": resumed,
            "reached": _last_step(progress), "killed": os.WIFSIGNALED(status),
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        })

    def finish(directory, name):
        distiller, result = _train(directory)
        np.savez(os.path.join(out, f"{name}.npz"),
                 *[keras.ops.convert_to_numpy(v) for v in distiller.student.weights],
                 *[keras.ops.convert_to_numpy(v) for v in distiller.optimizer.variables])
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump({"resumed_from": (result.resumed_from or {}).get("global_step", 0),
                       "global_step": result.state["global_step"]}, f)

    for directory, name in ((run_dir, "resumed"), (os.path.join(out, "reference"), "reference")):
        _, status = os.waitpid(_child(lambda: finish(directory, name)), 0)
        attempts.append({"kind": "final", "name": name, "exit": os.WEXITSTATUS(status)})
    print(json.dumps(attempts))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
