"""Helpers of the recipe tests: load a recipe script, write tiny data."""

import gzip
import importlib.util
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPES = ("deit_tiny", "deit_small", "swin_tiny")


def load_script(name):
    """Imports recipes/<name>.py (the recipes folder is not a package)."""
    path = os.path.join(ROOT, "recipes", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_image_folder(root, classes=("n01", "n02", "n03"), train=8, val=4, seed=0):
    """root/{train,val}/<class>/<i>.JPEG, random sizes, class-dependent brightness."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for label, name in enumerate(classes):
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(count):
                shape = (int(rng.integers(36, 70)), int(rng.integers(36, 70)), 3)
                image = np.clip(rng.normal(60 + 60 * label, 30, shape), 0, 255).astype(np.uint8)
                tf.io.write_file(os.path.join(root, split, name, f"{i}.JPEG"),
                                 tf.io.encode_jpeg(image))
    return str(root)


def write_fake_fashion_mnist(directory, num_train=200, num_test=100, seed=0):
    """Four gzipped idx files: random 28x28 images whose brightness depends on the label."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    for prefix, count in (("train", num_train), ("t10k", num_test)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        images = np.clip(rng.normal(20 * labels[:, None, None] + 30, 25, (count, 28, 28)),
                         0, 255).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
                int(n).to_bytes(4, "big") for n in array.shape
            )
            with gzip.open(os.path.join(directory, f"{prefix}-{kind}-ubyte.gz"), "wb") as f:
                f.write(header + array.tobytes())
    return str(directory)
