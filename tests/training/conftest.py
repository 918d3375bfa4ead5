"""Fixtures of the training tests."""

import pytest
from training_helpers import tiny_stream


@pytest.fixture
def stream():
    return tiny_stream()
