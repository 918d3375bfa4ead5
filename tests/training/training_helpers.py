"""Helpers of the training tests: tiny models and a tiny resumable dataset."""

import numpy as np
import tensorflow as tf

from keras_spectralkd.data.pipeline import train_pipeline
from keras_spectralkd.models import create

IMAGE_SIZE = 8
NUM_CLASSES = 3


def tiny_vit(embed_dim=8, depth=2, num_heads=2, **kwargs):
    return create("deit_tiny_patch16_224", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE,
                  patch_size=4, embed_dim=embed_dim, depth=depth, num_heads=num_heads, **kwargs)


def tiny_stream(num_examples=24, batch_size=4, seed=0, nan=False):
    """`(epoch, skip_batches) -> dataset`: random images with seeded noise augmentation."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(num_examples, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    if nan:
        images[:] = np.nan
    labels = np.arange(num_examples) % NUM_CLASSES

    def augment(image, image_seed):
        return image + 0.1 * tf.random.stateless_normal(tf.shape(image), image_seed)

    def train(epoch, skip_batches=0):
        return train_pipeline((images, labels), augment, batch_size=batch_size,
                              num_examples=num_examples, epoch=epoch, seed=seed,
                              skip_batches=skip_batches)

    validation = tf.data.Dataset.from_tensor_slices((images[:8], labels[:8])).batch(4)
    return train, validation, num_examples // batch_size
