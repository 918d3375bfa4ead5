"""Multi-process training on 127.0.0.1, for real: two worker processes vs one process.

TensorFlow: two processes joined by `TF_CONFIG` (MultiWorkerMirroredStrategy, one CPU device
each). JAX: two processes joined by `jax.distributed.initialize` (gloo CPU collectives) under
`keras.distribution.DataParallel` over both processes' devices. Both train the deit_tiny
recipe's tiny preset (DeiT <- CaiT, soft KD + spectral term) for two steps through the recipes'
runner, and must end with the weights of one process trained on the same global batches.
"""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "multiprocess_worker.py")
TIMEOUT_S = 240  # per process; a hung collective must not hang CI



def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _env(extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CONFIG", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                        "JAX_PROCESS_ID", "XLA_FLAGS")}
    env.update(PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu", **extra)
    return env


def _start(role, work_dir, extra_env):
    log = open(os.path.join(work_dir, f"{role}-{len(os.listdir(work_dir))}.log"), "w+")
    process = subprocess.Popen([sys.executable, WORKER, role, str(work_dir)],
                               env=_env(extra_env), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    return process, log


def _finish(started, timeout_s=TIMEOUT_S):
    """Waits for every process; kills all of them (their process groups) on the first failure or
    at the deadline. Returns each one's REPORT dict."""
    deadline = time.monotonic() + timeout_s
    try:
        while any(p.poll() is None for p, _ in started):
            failed = [p for p, _ in started if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for process, _ in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    reports = []
    for process, log in started:
        log.seek(0)
        text = log.read()
        log.close()
        lines = [line for line in text.splitlines() if line.startswith("REPORT ")]
        assert process.returncode == 0 and lines, (
            f"process exited {process.returncode}:\n{text[-4000:]}")
        reports.append(json.loads(lines[-1][len("REPORT "):]))
    return reports


def _h5_arrays(path):
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return arrays


def _csv_rows(path):
    import csv

    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _latest_checkpoint(run_dir):
    with open(os.path.join(run_dir, "checkpoints", "latest.json")) as f:
        return os.path.join(run_dir, "checkpoints", json.load(f)["checkpoint"])


def _assert_same_weights(expected_path, actual_path, rtol=1e-5, atol=1e-6):
    expected, actual = _h5_arrays(expected_path), _h5_arrays(actual_path)
    assert sorted(expected) == sorted(actual)
    for name, value in expected.items():
        if np.asarray(value).dtype.kind == "f":
            np.testing.assert_allclose(actual[name], value, rtol=rtol, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(actual[name], value, err_msg=name)


def _cluster_env(backend):
    if backend == "tensorflow":
        workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
        return [{"TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                          "task": {"type": "worker", "index": i}})}
                for i in range(2)]
    (port,) = _free_ports(1)
    return [{"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
             "JAX_PROCESS_ID": str(i)} for i in range(2)]


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() not in ("tensorflow", "jax"),
                    reason="multi-process training is offered on tensorflow and jax")
def test_two_processes_train_like_one(tmp_path):
    backend = keras.backend.backend()
    (single,) = _finish([_start("single", tmp_path, {})])
    assert single["num_processes"] == 1
    started = [_start("worker", tmp_path, env) for env in _cluster_env(backend)]
    reports = _finish(started)
    assert sorted(r["process_index"] for r in reports) == [0, 1]
    assert all(r["num_processes"] == 2 for r in reports)

    single_dir, chief_dir = tmp_path / "run-single", tmp_path / "run-worker"
    worker_dir = chief_dir / "worker-1"
    # The same checkpoints (student, teacher, optimizer state) on the chief and the worker,
    # equal to the single process's; and the final student equal too.
    single_ckpt = _latest_checkpoint(single_dir)
    for run_dir in (chief_dir, worker_dir):
        checkpoint = _latest_checkpoint(run_dir)
        assert os.path.basename(checkpoint) == os.path.basename(single_ckpt) == "ckpt-000000002"
        _assert_same_weights(os.path.join(single_ckpt, "model.weights.h5"),
                             os.path.join(checkpoint, "model.weights.h5"))
    _assert_same_weights(single_dir / "best.weights.h5", chief_dir / "best.weights.h5")
    # Validation covers the whole set on every process (not one slice each): the same numbers.
    single_log = _csv_rows(single_dir / "log.csv")
    for run_dir in (chief_dir, worker_dir):
        for key in ("val_accuracy", "val_loss", "ema_val_accuracy"):
            np.testing.assert_allclose(_csv_rows(run_dir / "log.csv")[-1][key],
                                       single_log[-1][key], rtol=1e-5, err_msg=key)
    # Only the chief writes TensorBoard and the final files.
    for name in ("student.keras", "student_ema.weights.h5", "summary.json", "tensorboard"):
        assert (chief_dir / name).exists(), name
        assert not (worker_dir / name).exists(), name
    assert glob.glob(str(chief_dir / "tensorboard" / "**" / "events.*"), recursive=True)
    assert (worker_dir / "log.csv").exists()


def test_cluster_descriptions_are_checked(monkeypatch):
    from keras_spectralkd.training import distribute

    for name in ("TF_CONFIG",) + distribute.JAX_ENV:
        monkeypatch.delenv(name, raising=False)
    assert distribute._tf_config() is None and distribute._jax_env() is None
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"index": 3}}')
    with pytest.raises(ValueError, match="TF_CONFIG=.* is not a valid cluster description"):
        distribute._tf_config()
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES, JAX_PROCESS_ID not set"):
        distribute._jax_env()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "2")
    with pytest.raises(ValueError, match="0 <= JAX_PROCESS_ID < JAX_NUM_PROCESSES"):
        distribute._jax_env()
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert distribute._jax_env() == ("127.0.0.1:1234", 2, 1)


def test_workers_other_than_the_chief_keep_their_own_run_dir():
    from keras_spectralkd.training import distribute

    chief = distribute.Distribution("multi_worker_mirrored", 2, process_index=0, num_processes=2)
    worker = distribute.Distribution("multi_worker_mirrored", 2, process_index=1, num_processes=2)
    assert chief.is_chief and not worker.is_chief
    assert chief.run_dir("out") == "out"
    assert worker.run_dir("out") == os.path.join("out", "worker-1")
    assert "process 1 of 2" in worker.describe()
