"""Input pipelines (tf.data, usable from every backend): ImageNet-1k, DeiT's transforms,
Fashion-MNIST for the offline demo."""

from keras_spectralkd.data.fashion_mnist import fashion_mnist_data, load_fashion_mnist
from keras_spectralkd.data.imagenet import HOW_TO_GET_IMAGENET, imagenet_data
from keras_spectralkd.data.pipeline import ImageData, eval_pipeline, train_pipeline
from keras_spectralkd.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    MixUpCutMix,
    RandAugment,
    TrainTransform,
)
