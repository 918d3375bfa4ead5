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
    assert source == f"the full set from {fake_fashion_mnist}"
    assert x_train.shape == (60, 28, 28) and x_test.shape == (30, 28, 28)
    assert x_train.dtype == np.uint8 and set(y_train) == set(range(10))


@pytest.fixture
def no_full_set(tmp_path, monkeypatch):
    """A fresh machine: no Debian package, no Keras cache, and no network (a download attempt
    fails the test instead of waiting)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(fashion_mnist.DIR_ENV_VAR, str(empty))

    def no_network(*args, **kwargs):
        raise AssertionError("the loader tried the network although the folder was overridden")

    monkeypatch.setattr(fashion_mnist, "_download", no_network)
    monkeypatch.setattr(fashion_mnist, "_reachable", no_network)
    return str(empty)


def test_fresh_machine_falls_back_to_the_embedded_subset(no_full_set):
    ((x_train, y_train), (x_test, y_test)), source = fashion_mnist.load_fashion_mnist()
    assert source.startswith("the subset shipped with the package (12000 train / 10000 test")
    assert "dataset-fashion-mnist" in source  # says how to get the full set
    assert x_train.shape == (12000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and x_test.dtype == np.uint8
    assert np.bincount(y_train, minlength=10).tolist() == [1200] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [1000] * 10  # the full test set
    # Real images, not placeholders: the training set's statistics (SPEC'd in the module).
    assert abs(x_train.mean() / 255 - fashion_mnist.MEAN) < 0.01
    assert abs(x_train.std() / 255 - fashion_mnist.STD) < 0.01


def test_missing_files_name_both_ways_to_get_them(no_full_set, tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        fashion_mnist.load_fashion_mnist(allow_embedded=False)
    assert "dataset-fashion-mnist" in str(error.value)
    assert "keras.datasets.fashion_mnist" in str(error.value)
    with pytest.raises(FileNotFoundError, match="idx files"):
        fashion_mnist.load_fashion_mnist(str(tmp_path))


def test_the_override_folder_is_used_when_it_has_the_files(fake_fashion_mnist, monkeypatch):
    monkeypatch.setenv(fashion_mnist.DIR_ENV_VAR, fake_fashion_mnist)
    (_, (x_test, _)), source = fashion_mnist.load_fashion_mnist()
    assert source == f"the full set from {fake_fashion_mnist}" and x_test.shape == (30, 28, 28)


def test_balanced_order_prefixes_are_nested_balanced_subsets():
    labels = np.repeat(np.arange(10), [30, 25, 20, 40, 33, 31, 29, 28, 27, 26])
    order = fashion_mnist.balanced_order(labels, seed=0)
    assert sorted(order.tolist()) == list(range(len(labels)))  # every example once
    assert np.bincount(labels[order[:200]], minlength=10).tolist() == [20] * 10
    images = np.arange(len(labels))
    small, _ = fashion_mnist.select_subset(images, labels, 50, 0)
    large, _ = fashion_mnist.select_subset(images, labels, 120, 0)
    assert set(small) < set(large) and list(small) == sorted(small)
    with pytest.raises(ValueError, match="only 289 are available"):
        fashion_mnist.select_subset(images, labels, 1000, 0)


def test_asking_the_embedded_subset_for_too_much_says_how_to_get_more(no_full_set):
    with pytest.raises(ValueError, match="embedded subset.*dataset-fashion-mnist"):
        fashion_mnist.fashion_mnist_data(train_size=20_000, validation_size=10)


@pytest.mark.skipif(not os.path.isdir(fashion_mnist.DEBIAN_DIR),
                    reason="the dataset-fashion-mnist Debian package is not installed")
def test_embedded_subset_is_the_same_images_as_the_full_sets_subset():
    full, _ = fashion_mnist.load_fashion_mnist(allow_embedded=False)
    (embedded_train, embedded_test), order = fashion_mnist.load_embedded_subset()
    expected = fashion_mnist.make_embedded_subset(full)
    np.testing.assert_array_equal(embedded_train[0], expected["train_images"])
    np.testing.assert_array_equal(embedded_test[0], full[1][0])
    for size in (100, 10_000, 12_000):  # any subset: the same images from either source
        from_full = fashion_mnist.select_subset(*full[0], size, fashion_mnist.TRAIN_SUBSET_SEED)
        from_embedded = fashion_mnist.select_subset(
            *embedded_train, size, fashion_mnist.TRAIN_SUBSET_SEED, order
        )
        np.testing.assert_array_equal(from_full[0], from_embedded[0])
        np.testing.assert_array_equal(from_full[1], from_embedded[1])


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
    assert source == f"the full set from {fashion_mnist.DEBIAN_DIR}"
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert abs(x_train.mean() / 255 - fashion_mnist.MEAN) < 1e-3
    assert abs(x_train.std() / 255 - fashion_mnist.STD) < 1e-3
