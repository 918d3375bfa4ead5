"""Helpers of the data tests: small JPEG image-folder trees and fake Fashion-MNIST files."""

import gzip
import os

import numpy as np


def write_image_folder(root, classes=("n01", "n02", "n03"), per_split=(("train", 6), ("val", 3)),
                       seed=0):
    """Writes root/{train,val}/<class>/<i>.JPEG with random sizes; returns root."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for split, count in per_split:
        for label, name in enumerate(classes):
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(count):
                shape = (int(rng.integers(36, 70)), int(rng.integers(36, 70)), 3)
                # Class-dependent brightness, so a model could tell classes apart.
                image = np.clip(rng.normal(60 + 60 * label, 30, shape), 0, 255).astype(np.uint8)
                path = os.path.join(root, split, name, f"{i}.JPEG")
                tf.io.write_file(path, tf.io.encode_jpeg(image))
    return str(root)


def write_idx(path, array):
    """Writes a gzipped idx file of uint8 values."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_fake_fashion_mnist(directory, num_train=60, num_test=30, seed=0):
    """Four idx files with random 28x28 images, labels cycling over the 10 classes."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    for prefix, count in (("train", num_train), ("t10k", num_test)):
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"),
                  rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"),
                  (np.arange(count) % 10).astype(np.uint8))
    return str(directory)
