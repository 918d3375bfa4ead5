"""Contenders in their own processes, timed in interleaved rounds.

A Keras backend is fixed per process, so every contender of a side-by-side benchmark (the
PyTorch reference, ours on TensorFlow, JAX, torch) lives in a worker process of its own. The
driver starts the workers one after the other (each builds, compiles and warms up, then says it
is ready), then times them in ROUNDS: one call of each per round (reference, tensorflow, jax,
torch, reference, ...). A shared, noisy machine then slows every contender alike, and the
ratios stay meaningful even when the absolute times drift between rounds; timing the
contenders one after the other for minutes each does not have that property.

Protocol (one JSON object per line on the worker's stdout, lines not starting with "{" are
ignored): the worker prints its `ready` info once; then, for every "time" line on its stdin, it
runs one call and prints {"seconds": ...}; for an "extras" line it prints the dict its setup
returned for that; an empty stdin ends it.
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time


def serve(setup):
    """Runs in the worker: `setup()` -> (call, ready_info, extras_fn); then serves requests.

    A call is timed from outside, unless it returns {"seconds": ...}: its own timing of the work
    (`distill_step.py` times the steps inside `fit`, without `fit`'s start-up and wind-down).
    """
    call, info, extras = setup()
    print(json.dumps({"ready": True, **info}), flush=True)
    for line in sys.stdin:
        request = line.strip()
        if request == "time":
            start = time.perf_counter()
            result = call()
            seconds = time.perf_counter() - start
            if isinstance(result, dict) and "seconds" in result:
                seconds = result["seconds"]  # the call timed its own steps (e.g. inside `fit`)
            print(json.dumps({"seconds": seconds}), flush=True)
        elif request == "extras":
            print(json.dumps(extras() if extras else {}), flush=True)
        else:
            break


class Worker:
    """The driver's handle on one contender's process."""

    def __init__(self, name, command, env):
        self.name = name
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            text=True,
        )
        self.times = []
        self.info = {}

    def _reply(self):
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        self.log.seek(0)
        raise RuntimeError(f"worker {self.name} died:\n{self.log.read()[-3000:]}")

    def _ask(self, request):
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()
        return self._reply()

    def wait_ready(self):
        self.info = self._reply()
        return self.info

    def time_once(self):
        self.times.append(self._ask("time")["seconds"])
        return self.times[-1]

    def extras(self):
        return self._ask("extras")

    @property
    def median(self):
        return statistics.median(self.times)

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_all(specs, log=print):
    """Starts (name, command, env) workers one at a time, each ready before the next starts.

    Returns the ready workers; a worker that dies while starting is reported and left out.
    """
    workers = []
    for name, command, env in specs:
        started = time.perf_counter()
        log(f"[{name}] starting, compiling, warming up ...")
        worker = Worker(name, command, env)
        try:
            worker.wait_ready()
        except RuntimeError as error:
            log(f"[{name}] failed: {error}")
            worker.close()
            continue
        log(f"[{name}] ready after {time.perf_counter() - started:.0f} s")
        workers.append(worker)
    return workers


def interleave(workers, rounds, log=print):
    """Times one call of every worker per round, `rounds` times."""
    for index in range(rounds):
        for worker in workers:
            worker.time_once()
        log(f"round {index + 1}/{rounds}: "
            + ", ".join(f"{w.name} {w.times[-1]:.2f} s" for w in workers))


def seed_without_tensorflow(seed):
    """`keras.utils.set_random_seed(seed)` for this process, without importing TensorFlow under
    the JAX and torch backends: Keras imports it only to seed tf.data, which the benchmarks'
    in-memory batches do not need, and the import alone is ~500 MB of RSS. Keras draws its
    initializers' seeds from Python's `random` (unseeded `SeedGenerator`s), so the weights are
    the same as after `set_random_seed`."""
    import random

    import keras
    import numpy as np

    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)


def release_heap_after_jax_compiles():
    """glibc's `malloc_trim(0)` after each of JAX's XLA compilations (a `jax.monitoring`
    listener): the compiler's freed memory (~400 MB for the DeiT <- CaiT step) goes back to the
    OS before the program allocates its own buffers, instead of staying in the process's heap.
    Linux with glibc only; elsewhere nothing happens."""
    import ctypes

    import jax

    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            trim(0)

    jax.monitoring.register_event_duration_secs_listener(listener)


def batch_clock():
    """A Keras callback stamping the start and end (`perf_counter`) of every training batch in
    `.begins` / `.ends`, for timing steps inside `fit`. Each end waits for the step's loss, so
    JAX's asynchronous dispatch is included. `.clear()` empties both."""
    import keras

    class BatchClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.begins, self.ends = [], []

        def clear(self):
            self.begins.clear()
            self.ends.clear()

        def on_train_batch_begin(self, batch, logs=None):
            self.begins.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            float(keras.ops.convert_to_numpy(logs["loss"]))  # waits for the step
            self.ends.append(time.perf_counter())

    return BatchClock()
