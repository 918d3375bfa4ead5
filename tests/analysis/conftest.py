"""Fixtures of the analysis tests."""

import numpy as np
import pytest
from analysis_helpers import NumpyBackbone


@pytest.fixture
def numpy_backbone():
    return NumpyBackbone()


@pytest.fixture
def images(rng):
    return rng.normal(size=(7, 8, 8, 3)).astype(np.float32)
