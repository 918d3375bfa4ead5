"""Fashion-MNIST: idx reading, where the files are looked for, the clear error, the dataset."""

import os

import numpy as np
import pytest

from keras_spectralkd.data import fashion_mnist


def test_read_idx_roundtrip(tmp_path):
    from data_helpers import write_idx

    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = str(tmp_path / "x-idx3-ubyte.gz")
    write_idx(path, array)
    np.testing.assert_array_equal(fashion_mnist.read_idx(path), array)


def test_load_from_a_directory(fake_fashion_mnist):
    ((x_train, y_train), (x_test, y_test)), source = fashion_mnist.load_fashion_mnist(
        fake_fashion_mnist
    )
    assert source == fake_fashion_mnist
    assert x_train.shape == (60, 28, 28) and x_test.shape == (30, 28, 28)
    assert x_train.dtype == np.uint8 and set(y_train) == set(range(10))


def test_missing_files_name_both_ways_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "no-debian"))
    monkeypatch.setattr(fashion_mnist, "KERAS_CACHE_DIR", str(tmp_path / "no-cache"))
    with pytest.raises(FileNotFoundError) as error:
        fashion_mnist.load_fashion_mnist(allow_download=False)
    assert "dataset-fashion-mnist" in str(error.value)
    assert "keras.datasets.fashion_mnist" in str(error.value)
    with pytest.raises(FileNotFoundError, match="idx files"):
        fashion_mnist.load_fashion_mnist(str(tmp_path))


def test_dataset_is_three_channel_resized_balanced(fake_fashion_mnist):
    data = fashion_mnist.fashion_mnist_data(
        image_size=32, batch_size=8, eval_batch_size=16, train_size=40, validation_size=20,
        data_dir=fake_fashion_mnist,
    )
    assert (data.num_train_examples, data.num_validation_examples) == (40, 20)
    assert data.steps_per_epoch == 5 and data.num_classes == 10
    images, labels = next(iter(data.train(0)))
    assert images.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey made 3-channel
    train_labels = np.concatenate([y for _, y in data.train(0)])
    assert np.bincount(train_labels, minlength=10).tolist() == [4] * 10  # balanced subset
    # Resumable: skipping batches gives the rest of the same epoch.
    full = [x.numpy() for x, _ in data.train(2)]
    rest = [x.numpy() for x, _ in data.train(2, 3)]
    for a, b in zip(full[3:], rest):
        np.testing.assert_array_equal(a, b)
    val_images, _ = next(iter(data.validation))
    assert val_images.shape == (16, 32, 32, 3)


@pytest.mark.skipif(not os.path.isdir(fashion_mnist.DEBIAN_DIR),
                    reason="the dataset-fashion-mnist Debian package is not installed")
def test_debian_package_files():
    ((x_train, y_train), (x_test, y_test)), source = fashion_mnist.load_fashion_mnist()
    assert source == fashion_mnist.DEBIAN_DIR
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert abs(x_train.mean() / 255 - fashion_mnist.MEAN) < 1e-3
    assert abs(x_train.std() / 255 - fashion_mnist.STD) < 1e-3
