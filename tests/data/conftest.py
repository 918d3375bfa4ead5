"""Fixtures of the data tests."""

import pytest
from data_helpers import write_fake_fashion_mnist, write_image_folder


@pytest.fixture
def image_folder(tmp_path):
    return write_image_folder(tmp_path / "imagenet")


@pytest.fixture
def fake_fashion_mnist(tmp_path):
    return write_fake_fashion_mnist(tmp_path / "fashion-mnist")
