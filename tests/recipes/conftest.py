"""Fixtures of the recipe tests."""

import pytest
from recipe_helpers import write_image_folder


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data") / "imagenet")
