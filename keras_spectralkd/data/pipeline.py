"""tf.data pipelines: per-epoch training streams (resumable) and evaluation streams.

A training stream is built per epoch from `(seed, epoch)`: the shuffle order (a numpy
permutation for in-memory example lists such as image paths), repeated augmentation's grouping,
every per-image random draw (crop, flip, RandAugment's operations, magnitudes and signs,
random erasing) and every per-batch draw (MixUp/CutMix) come from stateless seeds of
`(seed, epoch, position)`. The per-image map runs in parallel but delivers in order, so a batch
is a function of (seed, epoch, its index) whether the map is parallel (the recipes' default)
or sequential (`deterministic=True`): epoch 7 is the same stream whether or not the run was
restarted before it, and `skip_batches` drops already-trained batches BEFORE decoding and
augmenting them (tests/recipes/test_data_resume.py checks a resumed recipe batch by batch).
"""

import dataclasses

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass
class ImageData:
    """A classification dataset ready for `keras_spectralkd.training.train`.

    Attributes:
        train: `(epoch, skip_batches) -> tf.data.Dataset` of (images (B, H, W, 3) float32,
            labels (B,) int32 or soft targets (B, K)) global batches.
        validation: a tf.data.Dataset of (images, labels) batches (last batch kept).
        num_classes: K.
        num_train_examples, num_validation_examples: dataset sizes.
        batch_size: the global batch size.
        steps_per_epoch: full training batches per epoch.
        class_names: the class names in label order.
        description: where the data came from (for logs).
        train_images: the training images in dataset order, when they are in memory and
            not augmented (Fashion-MNIST without `augment`), else None: what a
            `TeacherCache` is computed on.
        with_extras: `extras -> ImageData` whose training batches are
            `({"images": images, **extras}, labels)`, `extras` being arrays row-aligned with
            `train_images` (e.g. `TeacherCache.inputs`), or None where not supported.
    """

    train: object
    validation: object
    num_classes: int
    num_train_examples: int
    num_validation_examples: int
    batch_size: int
    steps_per_epoch: int
    class_names: list
    description: str = ""
    train_images: object = None
    with_extras: object = None


def epoch_seed(seed, epoch):
    """The (2,) int64 stateless seed of one epoch (`epoch` may be a scalar tensor)."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])


def _distribution_options(dataset):
    options = tf.data.Options()
    # Under MultiWorkerMirroredStrategy each worker keeps every N-th element of its stream
    # (our streams are not file-sharded, so shard by data).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def train_pipeline(
    examples,
    transform,
    *,
    batch_size,
    num_examples,
    epoch=0,
    seed=0,
    skip_batches=0,
    shuffle_buffer=None,
    repeated_augmentation=1,
    batch_transform=None,
    deterministic=True,
    load=None,
):
    """One epoch of training batches.

    Args:
        examples: `(items, labels)` arrays (numpy or lists: images, or paths with `load`),
            shuffled here by a numpy permutation of (seed, epoch) alone; or a tf.data.Dataset
            of (item, label) (e.g. TFDS), shuffled with a buffer whose order also depends on
            TensorFlow's global seed (`keras.utils.set_random_seed`).
        transform: `(image, seed) -> float32 image` (e.g. `TrainTransform`).
        batch_size: global batch size; incomplete last batches are dropped.
        num_examples: how many examples `examples` holds (sets the epoch's length).
        epoch: the epoch number (seeds the shuffle and the augmentation); an int, or a scalar
            int64 tensor when traced inside `Dataset.flat_map` (how `training.train` chains the
            epochs of one `fit`).
        seed: the run's seed.
        skip_batches: leave out the first batches of this epoch (resuming mid-epoch).
        shuffle_buffer: shuffle buffer size; None: the whole dataset (DeiT shuffles fully).
        repeated_augmentation: DeiT's repeated augmentation (RASampler): each epoch draws
            num_examples / k images and shows each k times, differently augmented, in the same
            batch (DeiT uses k = 3 across its GPUs). 1: off.
        batch_transform: `(images, labels, seed) -> (images, labels)` on batches (MixUp/CutMix).
        deterministic: run the per-image map sequentially (one thread). The parallel map
            (False) gives the same batches in the same order: every draw is stateless.
        load: `(item, label) -> (image, label)` run after shuffling and skipping, before the
            transform (e.g. reading a file from its path, so the shuffle buffer holds paths).
    Returns:
        a tf.data.Dataset of (images (B, H, W, 3) float32, labels) batches.
    """
    if batch_size < 1 or int(batch_size) != batch_size:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    if repeated_augmentation < 1 or int(repeated_augmentation) != repeated_augmentation:
        raise ValueError(
            f"repeated_augmentation must be an integer >= 1; got {repeated_augmentation!r}."
        )
    steps = num_examples // batch_size
    if steps < 1:
        raise ValueError(
            f"The dataset has {num_examples} examples, fewer than one batch of {batch_size}."
        )
    if not 0 <= skip_batches < steps:
        raise ValueError(f"skip_batches must be in [0, {steps}); got {skip_batches!r}.")
    base = epoch_seed(seed, epoch)
    if isinstance(examples, tf.data.Dataset):
        dataset = examples.shuffle(
            shuffle_buffer or num_examples,
            seed=tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64),
            reshuffle_each_iteration=False,
        )
    else:
        items, labels = (np.asarray(a) for a in examples)
        if len(items) != num_examples or len(labels) != num_examples:
            raise ValueError(
                f"num_examples={num_examples} but got {len(items)} items and {len(labels)} "
                "labels."
            )
        if isinstance(epoch, tf.Tensor):
            # Traced with a tensor epoch (one `fit` over all epochs: `Dataset.flat_map` over the
            # epoch numbers): the same numpy permutation, computed when the epoch starts.
            def permutation(epoch_value):
                rng = np.random.default_rng([int(seed), int(epoch_value)])
                return rng.permutation(num_examples).astype(np.int64)

            order = tf.numpy_function(permutation, [epoch], tf.int64, stateful=False)
            order.set_shape([num_examples])
            # Made eagerly and captured by reference: a `tf.constant` here would embed the arrays
            # in the traced function as Const nodes, copied whenever the graph is serialised.
            with tf.init_scope():
                items_t, labels_t = tf.convert_to_tensor(items), tf.convert_to_tensor(labels)
            dataset = tf.data.Dataset.from_tensor_slices(order).map(
                lambda i: (tf.gather(items_t, i), tf.gather(labels_t, i))
            )
        else:
            order = np.random.default_rng([int(seed), int(epoch)]).permutation(num_examples)
            dataset = tf.data.Dataset.from_tensor_slices((items[order], labels[order]))
    k = int(repeated_augmentation)
    if k > 1:
        unique = -(-num_examples // k)
        dataset = dataset.take(unique).flat_map(
            lambda image, label: tf.data.Dataset.from_tensors((image, label)).repeat(k)
        )
    dataset = dataset.take(steps * batch_size)
    dataset = dataset.enumerate().skip(skip_batches * batch_size)

    def per_image(index, example):
        image, label = example if load is None else load(*example)
        image_seed = tf.random.experimental.stateless_fold_in(base, index)
        return transform(image, image_seed), tf.cast(label, tf.int32)

    if deterministic:
        dataset = dataset.map(per_image)
    else:
        dataset = dataset.map(per_image, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if batch_transform is not None:
        batch_base = tf.random.experimental.stateless_fold_in(base, -1)
        dataset = dataset.enumerate(start=skip_batches).map(
            lambda index, batch: batch_transform(
                batch[0], batch[1], tf.random.experimental.stateless_fold_in(batch_base, index)
            ),
        )
    return _distribution_options(dataset.prefetch(AUTOTUNE))


def eval_pipeline(examples, transform, *, batch_size, load=None):
    """Evaluation batches: `transform(image)` per image, in order, last batch kept.

    `load`: as in `train_pipeline`, run before the transform.
    """
    if batch_size < 1 or int(batch_size) != batch_size:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    if load is not None:
        examples = examples.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = examples.map(
        lambda image, label: (transform(image), tf.cast(label, tf.int32)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return _distribution_options(dataset.batch(batch_size).prefetch(AUTOTUNE))
