"""The per-epoch training stream: resumable skipping, repeated augmentation, sizes."""

import numpy as np
import pytest
import tensorflow as tf

from keras_spectralkd.data.pipeline import epoch_seed, train_pipeline


def _examples(num, as_dataset=False):
    images = np.arange(num, dtype=np.float32).reshape(num, 1, 1, 1) * np.ones((1, 2, 2, 3))
    examples = (images.astype(np.float32), np.arange(num))
    return tf.data.Dataset.from_tensor_slices(examples) if as_dataset else examples


def _noisy(image, seed):
    """A stateless random transform: the image plus seeded noise."""
    return image + tf.random.stateless_uniform(tf.shape(image), seed)


def _batches(as_dataset=False, **kwargs):
    dataset = train_pipeline(_examples(kwargs.pop("num", 20), as_dataset), _noisy, **kwargs)
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_one_epoch_is_a_seeded_permutation():
    batches = _batches(batch_size=4, num_examples=20, epoch=0, seed=1)
    labels = np.concatenate([y for _, y in batches])
    assert len(batches) == 5
    assert sorted(labels) == list(range(20))
    assert list(labels) != list(range(20))  # shuffled
    again = _batches(batch_size=4, num_examples=20, epoch=0, seed=1)
    for (a, la), (b, lb) in zip(batches, again):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(a, b)
    other = np.concatenate([y for _, y in _batches(batch_size=4, num_examples=20, epoch=1,
                                                   seed=1)])
    assert list(other) != list(labels)


def test_the_order_depends_on_seed_and_epoch_only():
    """In-memory examples are shuffled by (seed, epoch) alone: TensorFlow's global seed (which
    `keras.utils.set_random_seed` sets) does not change the stream; a tf.data source is
    shuffled by a buffer that does depend on it."""
    tf.random.set_seed(1)
    first = np.concatenate([y for _, y in _batches(batch_size=4, num_examples=20, seed=5)])
    tf.random.set_seed(2)
    second = np.concatenate([y for _, y in _batches(batch_size=4, num_examples=20, seed=5)])
    np.testing.assert_array_equal(first, second)
    labels = np.concatenate([y for _, y in _batches(True, batch_size=4, num_examples=20)])
    assert sorted(labels) == list(range(20))


def test_skipping_batches_resumes_the_same_stream():
    full = _batches(batch_size=4, num_examples=20, epoch=3, seed=2, deterministic=False)
    resumed = _batches(batch_size=4, num_examples=20, epoch=3, seed=2, skip_batches=2)
    assert len(resumed) == 3
    for (a, la), (b, lb) in zip(full[2:], resumed):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(a, b)  # same per-image seeds: same augmentation


def test_incomplete_batches_are_dropped():
    batches = _batches(batch_size=6, num_examples=20, num=20)
    assert [len(y) for _, y in batches] == [6, 6, 6]


def test_repeated_augmentation_repeats_each_image_in_its_batch():
    batches = _batches(batch_size=6, num_examples=18, num=18, repeated_augmentation=3)
    labels = np.concatenate([y for _, y in batches])
    assert len(labels) == 18
    groups = labels.reshape(-1, 3)
    assert (groups == groups[:, :1]).all()  # three copies in a row
    assert len(set(groups[:, 0])) == 6  # num_examples / 3 distinct images
    images = np.concatenate([x for x, _ in batches]).reshape(-1, 3, 2, 2, 3)
    assert np.abs(images[:, 0] - images[:, 1]).max() > 0  # differently augmented


def test_bad_arguments():
    with pytest.raises(ValueError, match="fewer than one batch"):
        _batches(batch_size=32, num_examples=20)
    with pytest.raises(ValueError, match="skip_batches"):
        _batches(batch_size=4, num_examples=20, skip_batches=5)
    with pytest.raises(ValueError, match="repeated_augmentation"):
        _batches(batch_size=4, num_examples=20, repeated_augmentation=0)


def test_epoch_seed():
    np.testing.assert_array_equal(epoch_seed(3, 7).numpy(), [3, 7])


def test_a_traced_epoch_refers_to_the_images_instead_of_embedding_them():
    """`training.train` traces the epoch pipeline once (`flat_map` over epoch numbers): the
    in-memory images must be captured, not copied into the function graph as a constant (that
    copy, serialised again and again, cost the demo 1.5 GB of peak memory)."""
    images = np.zeros((2000, 28, 28, 3), np.float32)
    labels = np.zeros((2000,), np.int32)
    dataset = tf.data.Dataset.range(2).flat_map(lambda epoch: train_pipeline(
        (images, labels), lambda x, seed: x, batch_size=100, num_examples=2000, epoch=epoch,
        seed=0))
    graph_bytes = dataset._map_func.function.graph.as_graph_def().ByteSize()
    assert graph_bytes < images.nbytes / 100, graph_bytes
    assert sum(1 for _ in dataset) == 40
