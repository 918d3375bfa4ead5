"""Fashion-MNIST, the built-in offline dataset of the demo: 3-channel, resized for ViTs.

Where the files come from, in order:
1. `data_dir`, if given: a folder with the four idx files (gzipped or not);
2. the Debian/Ubuntu package `dataset-fashion-mnist` (`apt-get install dataset-fashion-mnist`),
   which installs them in /usr/share/datasets/fashion-mnist (works offline);
3. Keras' cache (~/.keras/datasets/fashion-mnist), filled by a previous online run;
4. `keras.datasets.fashion_mnist.load_data()`, which downloads them (needs the internet).
If none works, a `FileNotFoundError` names both ways of getting them.
"""

import gzip
import os

import numpy as np
import tensorflow as tf

from keras_spectralkd.data import pipeline

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
KERAS_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".keras", "datasets", "fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
# Statistics of the training images (pixels / 255), used to normalise every channel.
MEAN = 0.2860
STD = 0.3530


def read_idx(path):
    """Reads an idx file (optionally gzipped) into a numpy uint8 array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:  # 0x08: unsigned bytes
        raise ValueError(f"{path!r} is not an idx file of unsigned bytes (magic {magic:#x}).")
    rank = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path!r} is truncated: {array.size} values for shape {shape}.")
    return array.reshape(shape)


def _find(directory, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    return None


def _load_dir(directory):
    paths = {key: _find(directory, stem) for key, stem in FILES.items()}
    if not all(paths.values()):
        return None
    arrays = {key: read_idx(path) for key, path in paths.items()}
    return (arrays["train_images"], arrays["train_labels"]), (
        arrays["test_images"], arrays["test_labels"]
    )


def load_fashion_mnist(data_dir=None, allow_download=True):
    """((x_train (60000, 28, 28) uint8, y_train), (x_test (10000, 28, 28), y_test)), source.

    Args:
        data_dir: a folder with the four idx files; None to look in the usual places.
        allow_download: fall back to `keras.datasets.fashion_mnist.load_data()` (online).
    Raises:
        FileNotFoundError: no files found (and no download possible), saying how to get them.
    """
    candidates = [data_dir] if data_dir is not None else [DEBIAN_DIR, KERAS_CACHE_DIR]
    for directory in candidates:
        if directory and os.path.isdir(directory):
            data = _load_dir(directory)
            if data is not None:
                return data, directory
    if data_dir is not None:
        raise FileNotFoundError(
            f"{data_dir!r} does not hold the four Fashion-MNIST idx files "
            f"({', '.join(FILES.values())}, optionally .gz)."
        )
    error = None
    if allow_download:
        import keras

        try:
            return keras.datasets.fashion_mnist.load_data(), "keras.datasets (downloaded)"
        except Exception as exc:  # noqa: BLE001 - any download failure gets the same advice
            error = exc
    raise FileNotFoundError(
        "Fashion-MNIST was not found. Either install the Debian/Ubuntu package "
        f"(`sudo apt-get install dataset-fashion-mnist`, files in {DEBIAN_DIR}) or run once "
        "online so that Keras' loader (keras.datasets.fashion_mnist.load_data) downloads it "
        f"into {KERAS_CACHE_DIR}."
        + (f" (The download failed: {error})" if error is not None else "")
    )


def _subset(images, labels, size, seed):
    """A class-balanced random subset of `size` examples (all of them if size is None)."""
    if size is None or size >= len(labels):
        return images, labels
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    # Round-robin over classes keeps the subset balanced.
    per_class = [order[labels[order] == c] for c in range(int(labels.max()) + 1)]
    picked = []
    for i in range(max(len(p) for p in per_class)):
        for p in per_class:
            if i < len(p):
                picked.append(p[i])
        if len(picked) >= size:
            break
    picked = np.sort(np.array(picked[:size]))
    return images[picked], labels[picked]


def to_rgb_resized(images, image_size):
    """(N, 28, 28) uint8 -> (N, S, S, 3) float32 normalised (bilinear resize, 3 channels)."""
    x = tf.convert_to_tensor(images[..., None], tf.float32) / 255.0
    if image_size != x.shape[1]:
        x = tf.image.resize(x, (image_size, image_size), method="bilinear", antialias=True)
    x = (x - MEAN) / STD
    return tf.repeat(x, 3, axis=-1).numpy()


def fashion_mnist_data(
    *,
    image_size=32,
    batch_size=64,
    eval_batch_size=256,
    train_size=None,
    validation_size=None,
    seed=0,
    augment=True,
    data_dir=None,
):
    """Fashion-MNIST as an `ImageData` (train: the official train split; validation: test).

    Images are resized once (28 -> `image_size`, bilinear), made 3-channel and normalised with
    the dataset's mean/std. Training augmentation (`augment=True`): a random shift of up to 1/8
    of the side (pad by reflection, random crop) and a horizontal flip, drawn from stateless
    seeds of (seed, epoch, index), so every epoch is reproducible.

    Args:
        image_size: output side.
        batch_size, eval_batch_size: training and validation batch sizes.
        train_size, validation_size: class-balanced random subsets (None: everything).
        seed: the subset, shuffle and augmentation seed.
        augment: apply the shift + flip augmentation.
        data_dir: where the idx files are (see `load_fashion_mnist`).
    """
    ((x_train, y_train), (x_test, y_test)), source = load_fashion_mnist(data_dir)
    x_train, y_train = _subset(x_train, y_train, train_size, seed)
    x_test, y_test = _subset(x_test, y_test, validation_size, seed + 1)
    train_images = to_rgb_resized(x_train, image_size)
    val_images = to_rgb_resized(x_test, image_size)
    train_labels = y_train.astype(np.int32)
    val_labels = y_test.astype(np.int32)
    pad = max(1, image_size // 8)

    def transform(image, image_seed):
        if not augment:
            return image
        crop_seed, flip_seed = tf.unstack(
            tf.random.experimental.stateless_split(image_seed, num=2)
        )
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        image = tf.image.stateless_random_crop(padded, (image_size, image_size, 3), crop_seed)
        return tf.image.stateless_random_flip_left_right(image, flip_seed)

    def train(epoch, skip_batches=0):
        return pipeline.train_pipeline(
            (train_images, train_labels), transform, batch_size=batch_size,
            num_examples=len(train_labels), epoch=epoch, seed=seed, skip_batches=skip_batches,
            # Every draw is stateless: a parallel map stays exactly reproducible.
            deterministic=False,
        )

    validation = tf.data.Dataset.from_tensor_slices((val_images, val_labels))
    validation = validation.batch(eval_batch_size).prefetch(tf.data.AUTOTUNE)
    return pipeline.ImageData(
        train=train,
        validation=validation,
        num_classes=len(CLASS_NAMES),
        num_train_examples=len(train_labels),
        num_validation_examples=len(val_labels),
        batch_size=batch_size,
        steps_per_epoch=len(train_labels) // batch_size,
        class_names=list(CLASS_NAMES),
        description=f"Fashion-MNIST from {source} ({len(train_labels)} train / "
        f"{len(val_labels)} test images at {image_size}x{image_size})",
    )
