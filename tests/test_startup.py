"""What a user sees on importing the package: no TensorFlow C++ start-up lines on a CPU machine."""

import os
import subprocess
import sys

import keras

from keras_spectralkd import _startup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Lines TensorFlow 2.21 prints on import on a machine without a GPU (copied from a console).
STARTUP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796024641.657033   23590 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors.",
    "I0000 00:00:1796024641.657376   23590 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "W1130 07:05:07.123456    1234 some_file.cc:12] a warning with absl's initialised time",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
]


def test_startup_lines_are_recognised_and_nothing_else():
    for line in STARTUP_LINES:
        assert _startup.is_startup_noise(line + "\n"), line
    for line in ("Traceback (most recent call last):",
                 "E0000 00:00:1796024641.1   1 cuda_platform.cc:52] failed call to cuInit",
                 "ImportError: cannot import name 'x'", "[demo] Fashion-MNIST: ...", ""):
        assert not _startup.is_startup_noise(line), line


def test_importing_the_package_prints_no_startup_noise():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(KERAS_BACKEND=keras.backend.backend(), PYTHONPATH=ROOT)
    code = ("import keras_spectralkd, keras_spectralkd.data, tensorflow as tf; "
            "tf.config.list_physical_devices(); print('ok')")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    noise = [line for line in result.stderr.splitlines()
             if _startup.is_startup_noise(line) or "cuInit" in line or "cuda" in line.lower()]
    assert noise == [], noise
