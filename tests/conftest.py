"""Shared test setup. The backend comes from KERAS_BACKEND (CI runs the suite once per backend)."""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# timm imports torchvision -> torch._dynamo -> triton, and importing triton after TensorFlow
# crashes the process. CPU tests never need triton: torch treats a None module as absent.
sys.modules.setdefault("triton", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from float32 and a fresh seed, whatever the previous one set."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def backend():
    return keras.backend.backend()
