"""The TFDS path without mock data: `imagenet2012` prepared by TFDS itself from tar files in
ImageNet's manual-download layout (ILSVRC2012_img_train.tar holding one tar of JPEGs per wnid,
ILSVRC2012_img_val.tar holding ILSVRC2012_val_*.JPEG), made here from a few photographs; then
the default pipeline on it, resumed mid-epoch, gives the uninterrupted epoch's batches."""

import io
import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from data_helpers import jpeg_bytes, photograph

from keras_spectralkd.data import imagenet, transforms

tfds = pytest.importorskip("tensorflow_datasets")

SIZE = 32


def _add(archive, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _write_manual_dir(directory, wnids, per_class=8, validation=6, seed=0):
    rng = np.random.default_rng(seed)

    def image():
        return jpeg_bytes(photograph(int(rng.integers(40, 90)), int(rng.integers(40, 90)),
                                     int(rng.integers(1 << 30))))

    os.makedirs(directory, exist_ok=True)
    with tarfile.open(os.path.join(directory, "ILSVRC2012_img_train.tar"), "w") as train:
        for wnid in wnids:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as images:
                for i in range(per_class):
                    _add(images, f"{wnid}_{i}.JPEG", image())
            _add(train, f"{wnid}.tar", inner.getvalue())
    with tarfile.open(os.path.join(directory, "ILSVRC2012_img_val.tar"), "w") as val:
        for i in range(validation):
            _add(val, f"ILSVRC2012_val_{i + 1:08d}.JPEG", image())
    return str(directory)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A TFDS data dir prepared from the tars, and ImageNet's class names and the labels of
    the first six validation images (TFDS' own tables)."""
    root = tmp_path_factory.mktemp("tfds")
    labels_dir = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012")
    wnids = open(os.path.join(labels_dir, "labels.txt")).read().split()
    validation_wnids = open(os.path.join(labels_dir, "validation_labels.txt")).read().split()
    manual = _write_manual_dir(root / "manual", wnids[:3])
    imagenet.tfds_builder(str(root / "data"), manual)
    return str(root / "data"), manual, wnids, validation_wnids[:6]


def _data(data_dir, manual, transform):
    # The TFDS path's shuffle buffer also depends on TensorFlow's global seed (the runner
    # sets it from the run's seed before training).
    tf.random.set_seed(0)
    return imagenet.imagenet_data(data_dir, batch_size=4, image_size=SIZE, seed=3,
                                  data_format="tfds", tfds_manual_dir=manual,
                                  train_transform=transform)


def test_prepared_from_tars_with_imagenets_labels(prepared):
    data_dir, manual, wnids, validation_wnids = prepared
    data = _data(data_dir, manual, transforms.TrainTransform(SIZE))
    assert (data.num_classes, data.num_train_examples, data.num_validation_examples) == (
        1000, 24, 6)
    assert data.class_names[:3] == wnids[:3]
    labels = np.concatenate([y.numpy() for _, y in data.validation])
    # TFDS stores examples in its own (hashed) order: the labels as a multiset.
    assert sorted(labels.tolist()) == sorted(wnids.index(w) for w in validation_wnids)
    images, _ = next(iter(data.validation))
    assert images.shape == (4, SIZE, SIZE, 3)


def test_a_resumed_epoch_is_the_rest_of_the_uninterrupted_one(prepared):
    data_dir, manual, _, _ = prepared
    # What is checked here is TFDS' order (file shuffle, buffer, skipping); the transform's
    # own resume is checked on image folders (test_resume_on_photographs.py).
    transform = transforms.TrainTransform(SIZE, rand_augment=None)
    full = [(x.numpy(), y.numpy()) for x, y in _data(data_dir, manual, transform).train(1)]
    resumed = [(x.numpy(), y.numpy())
               for x, y in _data(data_dir, manual, transform).train(1, skip_batches=4)]
    assert len(full) == 6 and len(resumed) == 2
    assert set(np.concatenate([y for _, y in full]).tolist()) == {0, 1, 2}
    for (a, la), (b, lb) in zip(full[4:], resumed):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(a, b)
