"""A keras-hub image classifier as a teacher, its layers named by path: the spectral term the
Distiller trains equals the numpy oracle on the maps read from keras-hub's own backbone."""

import keras
import numpy as np
import pytest
from band_oracle import band_pair_loss

from keras_spectralkd import Distiller, models

keras_hub = pytest.importorskip("keras_hub")

# keras-hub's ViT hides its blocks inside one encoder layer: the embedding and the encoder's
# output are the maps it exposes (17 tokens = a 4x4 grid and the class token at 32x32).
PAIRS = [(0, "vi_t_backbone/vit_patching_and_embedding"), (1, "vi_t_backbone/vit_encoder")]


def _teacher():
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
        mlp_dim=64, use_class_token=True)
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=10,
                                               preprocessor=None)


def _tokens_to_map(tokens):
    tokens = np.asarray(keras.ops.convert_to_numpy(tokens), np.float64)
    return tokens[:, 1:].reshape(tokens.shape[0], 4, 4, tokens.shape[-1])


def test_a_keras_hub_teacher_by_layer_path():
    teacher = _teacher()
    student = models.create("deit_tiny_patch16_224", num_classes=10, image_size=32, patch_size=8,
                            embed_dim=16, depth=2, num_heads=2)
    distiller = Distiller(teacher, student, layer_pairs=PAIRS, mode="fft", alpha=1.0,
                          spectral_weight=1.0)
    images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    labels = np.arange(4)

    backbone = teacher.backbone
    embedded = keras.Model(backbone.inputs[0],
                           backbone.get_layer("vit_patching_and_embedding").output)(images)
    teacher_maps = [_tokens_to_map(embedded), _tokens_to_map(backbone(images))]
    _, student_maps = student.forward_intermediates(images, indices=[0, 1])
    expected = np.mean([band_pair_loss(np.asarray(keras.ops.convert_to_numpy(s), np.float64), t)
                        for s, t in zip(student_maps, teacher_maps)])
    # mode fft with alpha 1: the loss is the spectral term alone.
    loss = distiller.compute_loss(images, labels, training=True)
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(loss)), expected, rtol=1e-4)

    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = [keras.ops.convert_to_numpy(w).copy() for w in teacher.weights]
    distiller.train_on_batch(images, labels)
    for old, new in zip(before, teacher.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))
