"""The default ImageNet pipeline (the recipes' parallel map, the full DeiT transform with
RandAugment and erasing, repeated augmentation x3) on a folder of JPEG photographs: a batch is
a function of (seed, epoch, position). Built again and resumed mid-epoch, it gives the
uninterrupted epoch's remaining batches bit for bit, and the sequential map gives the same
batches as the parallel one. (One transform object serves every build, so its trace is paid
once; a transform drawing from a generator of its own would fail here too, since that
generator would have moved on.)"""

import numpy as np
import pytest
from data_helpers import write_photograph_folder

from keras_spectralkd.data import imagenet, transforms

SIZE = 48


@pytest.fixture(scope="module")
def photographs(tmp_path_factory):
    return write_photograph_folder(tmp_path_factory.mktemp("photos"),
                                   per_split=(("train", 6), ("val", 1)))


def _epoch(root, transform, epoch, skip_batches=0, **kwargs):
    data = imagenet.imagenet_data(root, batch_size=4, image_size=SIZE, seed=7,
                                  train_transform=transform, repeated_augmentation=3, **kwargs)
    return [(x.numpy(), y.numpy()) for x, y in data.train(epoch, skip_batches)]


def test_a_resumed_epoch_is_the_rest_of_the_uninterrupted_one(photographs):
    transform = transforms.TrainTransform(SIZE)
    full = _epoch(photographs, transform, 1)
    assert len(full) == 6
    resumed = _epoch(photographs, transform, 1, skip_batches=4)
    sequential = _epoch(photographs, transform, 1, deterministic=True)
    assert len(resumed) == 2
    for (a, la), (b, lb) in zip(full[4:], resumed):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(a, b)
    for (a, la), (b, lb) in zip(full, sequential):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(a, b)
