"""Input pipelines (tf.data, usable from every backend): ImageNet-1k, DeiT's transforms,
Fashion-MNIST for the offline demo."""

from keras_spectralkd import _startup

# TensorFlow (tf.data) without its C++ start-up lines, also where the Keras backend is JAX or
# torch and this is the first import of TensorFlow (see _startup).
_startup.quiet_import("tensorflow")

from keras_spectralkd.data.fashion_mnist import fashion_mnist_data, load_fashion_mnist  # noqa: E402
from keras_spectralkd.data.imagenet import HOW_TO_GET_IMAGENET, imagenet_data  # noqa: E402
from keras_spectralkd.data.pipeline import ImageData, eval_pipeline, train_pipeline  # noqa: E402
from keras_spectralkd.data.transforms import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    MixUpCutMix,
    RandAugment,
    TrainTransform,
)
