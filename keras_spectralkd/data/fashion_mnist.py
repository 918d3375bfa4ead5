"""Fashion-MNIST, the offline dataset of the demo and the study: 3-channel, resized for ViTs.

Where the images come from, in order (the first found wins; the source is said in one line):
1. `data_dir`, if given: a folder with the four idx files (gzipped or not);
2. the folder in $KERAS_SPECTRALKD_FASHION_MNIST_DIR if that variable is set (and then no other
   folder and no download: tests point it at an empty folder to take the path of a fresh
   machine); otherwise the Debian/Ubuntu package `dataset-fashion-mnist`'s folder
   /usr/share/datasets/fashion-mnist, then Keras' cache (~/.keras/datasets/fashion-mnist);
3. a download by `keras.datasets.fashion_mnist.load_data()`, tried only when its server answers
   within 2 s, so an offline machine never waits;
4. the subset shipped inside the package (`keras_spectralkd/data/fashion_mnist_subset/`: 12000
   class-balanced training images and the full 10000-image test set, Zalando's MIT licence
   beside it), so the demo and the study run anywhere.

Subsets are class-balanced and FIXED: the first N of one class-balanced order of the training
set (`balanced_order`, seed 0; the test set's with seed 1), whatever the run's seed, so the
images are the same from the full set or the embedded subset, and the run's seed varies only
the initial weights, the order and the augmentation.
"""

import dataclasses
import functools
import gzip
import io
import lzma
import os
import socket

import numpy as np
import tensorflow as tf

from keras_spectralkd.data import pipeline

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
KERAS_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".keras", "datasets", "fashion-mnist")
DIR_ENV_VAR = "KERAS_SPECTRALKD_FASHION_MNIST_DIR"
DOWNLOAD_HOST = "storage.googleapis.com"
EMBEDDED_PATH = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "fashion_mnist_subset", "fashion_mnist_subset.npz.xz"
)
EMBEDDED_TRAIN_SIZE = 12_000
TRAIN_SUBSET_SEED = 0
TEST_SUBSET_SEED = 1
HOW_TO_GET_FULL = (
    "install the Debian/Ubuntu package (`sudo apt-get install dataset-fashion-mnist`, files in "
    f"{DEBIAN_DIR}) or run once online so that keras.datasets.fashion_mnist.load_data() "
    f"downloads it into {KERAS_CACHE_DIR}"
)
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


def _reachable(host, port=443, timeout=2.0):
    """Whether a TCP connection to `host` opens within `timeout` s (no long offline waits)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _download():
    """Keras' downloader, tried only if its server answers at once; None when offline."""
    if not _reachable(DOWNLOAD_HOST):
        return None
    import keras

    try:
        return keras.datasets.fashion_mnist.load_data()
    except Exception:  # noqa: BLE001 - a failed download falls back like an absent one
        return None


@functools.lru_cache(maxsize=1)
def load_embedded_subset():
    """The subset shipped with the package: ((x_train, y_train), (x_test, y_test)), train_order.

    The training images are the first `EMBEDDED_TRAIN_SIZE` of the full training set's
    `balanced_order(y_train, TRAIN_SUBSET_SEED)`, stored sorted by their index in the full set;
    `train_order` lists their positions in that balanced order, so `select_subset` picks the
    very same images from either source. The test set is complete (10000 images).
    Decompressed once per process (a few seconds); the arrays are read-only.
    """
    with lzma.open(EMBEDDED_PATH, "rb") as f:
        with np.load(io.BytesIO(f.read())) as arrays:
            arrays = {key: arrays[key] for key in arrays.files}
    for array in arrays.values():
        array.flags.writeable = False
    return (
        (arrays["train_images"], arrays["train_labels"]),
        (arrays["test_images"], arrays["test_labels"]),
    ), arrays["train_order"]


def make_embedded_subset(full_data, path=None):
    """The embedded subset's arrays from the full set, and the file if `path` is given.

    Args:
        full_data: ((x_train, y_train), (x_test, y_test)), the official 60000 / 10000 images.
        path: where to write the xz-compressed `.npz` (e.g. `EMBEDDED_PATH`); None: don't.
    Returns:
        a dict of the arrays stored (see `load_embedded_subset`).
    """
    (x_train, y_train), (x_test, y_test) = full_data
    order = balanced_order(y_train, TRAIN_SUBSET_SEED)[:EMBEDDED_TRAIN_SIZE]
    kept = np.sort(order)
    train_order = np.searchsorted(kept, order).astype(np.int32)
    arrays = dict(
        train_images=x_train[kept], train_labels=y_train[kept],
        train_indices=kept.astype(np.int32), train_order=train_order,
        test_images=x_test, test_labels=y_test,
    )
    if path is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        with lzma.open(path, "wb", preset=9 | lzma.PRESET_EXTREME) as f:
            f.write(buffer.getvalue())
    return arrays


def load_fashion_mnist(data_dir=None, allow_download=True, allow_embedded=True):
    """((x_train, y_train), (x_test, y_test)) (uint8 (N, 28, 28) images, labels) and a source.

    Args:
        data_dir: a folder with the four idx files; None to look in the usual places (see the
            module doc), then download, then fall back to the embedded subset.
        allow_download: try `keras.datasets.fashion_mnist.load_data()` when its server answers
            within 2 s.
        allow_embedded: fall back to the subset shipped with the package (12000 train / the
            full 10000 test images).
    Returns:
        (arrays, source): the full set (60000 / 10000 images) or the embedded subset, and a
        phrase saying which ("the full set from ...", "the subset shipped with the package ...").
    Raises:
        FileNotFoundError: `data_dir` lacks the files, or nothing was found and
        `allow_embedded` is False; the message says how to get the full set.
    """
    data, source, _ = _load(data_dir, allow_download, allow_embedded)
    return data, source


def _load(data_dir, allow_download, allow_embedded):
    """`load_fashion_mnist` plus the embedded subset's `train_order` (None for the full set)."""
    if data_dir is not None:
        data = _load_dir(data_dir) if os.path.isdir(data_dir) else None
        if data is None:
            raise FileNotFoundError(
                f"{data_dir!r} does not hold the four Fashion-MNIST idx files "
                f"({', '.join(FILES.values())}, optionally .gz)."
            )
        return data, f"the full set from {data_dir}", None
    override = os.environ.get(DIR_ENV_VAR)
    directories = [override] if override is not None else [DEBIAN_DIR, KERAS_CACHE_DIR]
    for directory in directories:
        if directory and os.path.isdir(directory):
            data = _load_dir(directory)
            if data is not None:
                return data, f"the full set from {directory}", None
    if allow_download and override is None:
        data = _download()
        if data is not None:
            return data, "the full set, downloaded by keras.datasets", None
    if allow_embedded:
        data, order = load_embedded_subset()
        return data, (
            f"the subset shipped with the package ({len(data[0][1])} train / "
            f"{len(data[1][1])} test images; for the full set: `apt-get install "
            "dataset-fashion-mnist`, or run once online)"
        ), order
    raise FileNotFoundError(f"Fashion-MNIST was not found: {HOW_TO_GET_FULL}.")


def balanced_order(labels, seed):
    """Every example index in one class-balanced order: round-robin over the classes, each
    class's examples in the order of a random permutation drawn from `seed`.

    Any prefix is a class-balanced subset, and a shorter subset lies inside a longer one.
    """
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    per_class = [order[labels[order] == c] for c in range(int(labels.max()) + 1)]
    picked = []
    for i in range(max(len(p) for p in per_class)):
        picked.extend(int(p[i]) for p in per_class if i < len(p))
    return np.array(picked, dtype=np.int64)


def select_subset(images, labels, size, seed, order=None):
    """The first `size` examples of `balanced_order(labels, seed)` (or of `order` when the
    arrays are the embedded subset), kept in dataset order. None: everything."""
    if size is None or (order is None and size == len(labels)):
        return images, labels
    if int(size) != size or size < 1:
        raise ValueError(f"A subset size must be a positive integer; got {size!r}.")
    if size > len(labels):
        where = "" if order is None else f" in the embedded subset (for more, {HOW_TO_GET_FULL})"
        raise ValueError(f"Asked for {size} examples, but only {len(labels)} are available{where}.")
    if order is None:
        order = balanced_order(labels, seed)
    picked = np.sort(order[:size])
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
        train_size, validation_size: sizes of the fixed class-balanced subsets (None:
            everything found; see the module doc).
        seed: the shuffle and augmentation seed (not the subset's: that one is fixed).
        augment: apply the shift + flip augmentation.
        data_dir: where the idx files are (see `load_fashion_mnist`).
    """
    ((x_train, y_train), (x_test, y_test)), source, order = _load(data_dir, True, True)
    x_train, y_train = select_subset(x_train, y_train, train_size, TRAIN_SUBSET_SEED, order)
    x_test, y_test = select_subset(x_test, y_test, validation_size, TEST_SUBSET_SEED)
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

    def stream(extras):
        load = None
        examples = (train_images, train_labels)
        if extras is not None:
            # Rows are gathered by index, so the extras follow the shuffle. Made eagerly and
            # captured by reference (as the pipeline's arrays), not embedded as graph constants.
            with tf.init_scope():
                tensors = tf.nest.map_structure(
                    tf.convert_to_tensor, dict(extras, images=train_images))
            examples = (np.arange(len(train_labels)), train_labels)

            def load(index, label):
                return tf.nest.map_structure(lambda t: tf.gather(t, index), tensors), label

        def train(epoch, skip_batches=0):
            return pipeline.train_pipeline(
                examples, transform, batch_size=batch_size,
                num_examples=len(train_labels), epoch=epoch, seed=seed,
                skip_batches=skip_batches, load=load,
                # Every draw is stateless: a parallel map stays exactly reproducible.
                deterministic=False,
            )

        return train

    def with_extras(extras):
        # tf.data would stack a list (the maps) into one tensor; a tuple stays a structure.
        extras = {k: tuple(v) if isinstance(v, list) else v for k, v in extras.items()}
        extras.pop("images", None)  # the stream's own
        for name, value in extras.items():
            for leaf in tf.nest.flatten(value):
                if len(leaf) != len(train_labels):
                    raise ValueError(f"Extra {name!r} has {len(leaf)} rows; the training set "
                                     f"has {len(train_labels)} images.")
        return dataclasses.replace(data, train=stream(extras), with_extras=None)

    validation = tf.data.Dataset.from_tensor_slices((val_images, val_labels))
    validation = validation.batch(eval_batch_size).prefetch(tf.data.AUTOTUNE)
    data = pipeline.ImageData(
        train=stream(None),
        validation=validation,
        num_classes=len(CLASS_NAMES),
        num_train_examples=len(train_labels),
        num_validation_examples=len(val_labels),
        batch_size=batch_size,
        steps_per_epoch=len(train_labels) // batch_size,
        class_names=list(CLASS_NAMES),
        description=f"Fashion-MNIST: {source}; using {len(train_labels)} train / "
        f"{len(val_labels)} test images at {image_size}x{image_size}",
        train_images=None if augment else train_images,
        with_extras=None if augment else with_extras,
    )
    return data
