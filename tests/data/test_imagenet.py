"""ImageNet sources: image-folder trees and TFDS (mocked), and their errors."""

import os

import numpy as np
import pytest

from keras_spectralkd.data import imagenet, transforms

SIZE = 32


def _data(root, **kwargs):
    return imagenet.imagenet_data(
        root, batch_size=4, eval_batch_size=5, image_size=SIZE,
        train_transform=transforms.TrainTransform(SIZE, rand_augment=None),
        deterministic=True, **kwargs,
    )


def test_image_folder_lists_sorted_classes(image_folder):
    paths, labels, classes = imagenet.list_image_folder(image_folder, "train")
    assert classes == ["n01", "n02", "n03"]
    assert len(paths) == 18 and labels == sorted(labels)
    assert all(
        os.path.basename(os.path.dirname(path)) == classes[label]
        for path, label in zip(paths, labels)
    )


def test_image_folder_data(image_folder):
    data = _data(image_folder)
    assert (data.num_classes, data.num_train_examples, data.num_validation_examples) == (3, 18, 9)
    assert data.steps_per_epoch == 4
    batches = list(data.train(0))
    assert len(batches) == 4
    images, labels = batches[0]
    assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == "float32"
    val = list(data.validation)
    assert [len(y) for _, y in val] == [5, 4]
    np.testing.assert_array_equal(np.concatenate([y for _, y in val]), np.repeat([0, 1, 2], 3))
    # Validation images keep their class-dependent brightness (images and labels stay paired).
    images = np.concatenate([x for x, _ in val])
    labels = np.concatenate([y for _, y in val])
    means = [float(images[labels == c].mean()) for c in range(3)]
    assert means[0] < means[1] < means[2]


def test_missing_data_dir_says_how_to_get_imagenet(tmp_path):
    with pytest.raises(FileNotFoundError, match="image-net.org"):
        _data(str(tmp_path / "nowhere"))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        _data(str(tmp_path / "empty"))


def test_mismatched_class_folders_are_an_error(image_folder):
    os.rename(os.path.join(image_folder, "val", "n03"), os.path.join(image_folder, "val", "n09"))
    with pytest.raises(ValueError, match="same classes"):
        _data(image_folder)


def test_tfds_without_prepared_data_or_tars_says_how(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(FileNotFoundError, match="ILSVRC2012"):
        _data(str(tmp_path), data_format="tfds")


def test_tfds_imagenet2012_mocked(tmp_path):
    """The TFDS path on `tfds.testing.mock_data` (no download, no tars)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        builder = imagenet.tfds_builder(str(tmp_path))
        examples, count = imagenet.tfds_examples(builder, "validation")
        image, label = next(iter(examples))
        assert image.dtype == "string" and 0 <= int(label) < 1000
        data = _data(str(tmp_path), data_format="tfds")
        assert data.num_classes == 1000
        images, labels = next(iter(data.train(0)))
        assert images.shape == (4, SIZE, SIZE, 3)
        images, labels = next(iter(data.validation))
        assert images.shape[1:] == (SIZE, SIZE, 3)
