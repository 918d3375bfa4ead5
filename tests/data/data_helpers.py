"""Helpers of the data tests: JPEG photographs, small image-folder trees and fake Fashion-MNIST
files."""

import gzip
import io
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


def photograph(height, width, seed):
    """A JPEG-compressed (quality 90) synthetic photograph, decoded by PIL: smooth coloured
    blobs, a lit gradient, a hard-edged object and sensor noise, so it has the flat regions,
    edges and saturated pixels real photographs have."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    image = 40.0 + 60.0 * yy[..., None] * rng.uniform(0.3, 1.0, 3)
    for _ in range(6):
        cy, cx, spread = rng.uniform(0.0, 1.0, 3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.01 + 0.08 * spread))
        image += blob[..., None] * rng.uniform(-80, 200, 3)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    image[top:top + height // 4, left:left + width // 3] = rng.uniform(0, 255, 3)
    image += rng.normal(0.0, 4.0, image.shape)
    from PIL import Image

    encoded = jpeg_bytes(np.clip(image, 0, 255).astype(np.uint8))
    return np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))


def write_photograph_folder(root, classes=("n01", "n02", "n03", "n04"),
                            per_split=(("train", 8), ("val", 2)), seed=0):
    """root/{train,val}/<class>/<i>.JPEG of `photograph`s of random sizes (40-90 px)."""
    rng = np.random.default_rng(seed)
    for split, count in per_split:
        for name in classes:
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(count):
                image = photograph(int(rng.integers(40, 90)), int(rng.integers(40, 90)),
                                   int(rng.integers(1 << 30)))
                with open(os.path.join(root, split, name, f"{i}.JPEG"), "wb") as f:
                    f.write(jpeg_bytes(image))
    return str(root)


def jpeg_bytes(pixels, quality=90):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


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
