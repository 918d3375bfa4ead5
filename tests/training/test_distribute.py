"""Data parallelism: two logical CPU devices give the same update as one device.

The devices must be split before the backend initialises them, so each check runs in a
subprocess (`distribute_worker.py`).
"""

import json
import os
import subprocess
import sys

import keras
import pytest

from keras_spectralkd.training import distribute

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distribute_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_worker(backend, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    done = subprocess.run([sys.executable, WORKER, backend, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT "):])


@pytest.mark.skipif(keras.backend.backend() not in ("tensorflow", "jax"),
                    reason="data parallelism is offered on the tensorflow and jax backends")
def test_two_devices_give_the_same_update_as_one(tmp_path):
    report = _run_worker(keras.backend.backend(), tmp_path)
    expected_kind = "mirrored" if keras.backend.backend() == "tensorflow" else "data_parallel"
    assert (report["kind"], report["replicas"]) == (expected_kind, 2)
    assert report["max_update"] > 1e-3, report  # the steps really moved the weights
    assert report["max_weight_difference"] < 1e-5, report
    assert abs(report["loss_1"] - report["loss_2"]) < 1e-5 * max(1.0, report["loss_1"]), report


def test_single_device_setup():
    setup = distribute.setup_distribution("one_device")
    assert (setup.kind, setup.num_replicas) == ("one_device", 1)
    setup.check_batch_size(7)
    with setup.scope():
        pass
    assert "one_device x1" in setup.describe()


def test_bad_strategies_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown strategy"):
        distribute.setup_distribution("ddp")
    wrong = {"tensorflow": "data_parallel", "jax": "mirrored", "torch": "mirrored"}
    with pytest.raises(ValueError, match="strategy="):
        distribute.setup_distribution(wrong[keras.backend.backend()])
    with pytest.raises(ValueError, match="divide evenly"):
        distribute.Distribution("mirrored", 2).check_batch_size(7)
