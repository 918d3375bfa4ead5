"""keras.applications CNNs (random weights, 32x32 images, no download) as teachers and students,
their layers named: the Distiller's loss against the oracles, and a training step."""

import ast
import os
import re

import keras
import numpy as np
import pytest
import torch

import torch_objective as ref  # tests/torch_objective.py: the PyTorch oracle
from band_oracle import band_pair_loss  # tests/band_oracle.py: the common-band rule in numpy
from keras_spectralkd import Distiller, models

SIZE, CLASSES = 32, 5
# (teacher, student, [(student layer, teacher layer), ...]): grids 4x4 <- 8x8 and 2x2 <- 2x2
# (ResNet's 1024 channels pooled to 40: overlapping windows), 8x8 <- 8x8 and 2x2 <- 4x4.
SETUPS = {
    "resnet50_to_mobilenetv3small": (
        "ResNet50", "MobileNetV3Small",
        [("expanded_conv_2_add", "conv2_block3_out"), ("expanded_conv_5_add", "conv4_block6_out")],
    ),
    "convnexttiny_to_efficientnetb0": (
        "ConvNeXtTiny", "EfficientNetB0",
        [("block2b_add", "convnext_tiny_stage_0_block_2_identity"),
         ("block4c_add", "convnext_tiny_stage_1_block_2_identity")],
    ),
}
SETTINGS = dict(alpha=0.5, beta=1.0, spectral_weight=0.2, temperature=2.0, label_smoothing=0.1)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def random_values(variable, rng):
    """A random value for one variable of a CNN: batch-norm statistics and scales at their
    usual start, biases and shifts 0, kernels normal with variance 1 / fan-in."""
    name, shape = variable.path.rsplit("/", 1)[-1], tuple(variable.shape)
    if name in ("gamma", "moving_variance"):
        return np.ones(shape, "float32")
    if name in ("beta", "moving_mean", "bias") or len(shape) < 2:
        return np.zeros(shape, "float32")
    fan_in = int(np.prod(shape[:-1])) if name != "depthwise_kernel" else int(np.prod(shape[:2]))
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype("float32")


@pytest.fixture(scope="module")
def applications():
    """Each of the four models once. Their variables are built without running their
    initializers and given numpy values instead: on JAX each initializer is a compilation of
    its own, most of the time these models take to build there."""
    from keras_spectralkd._keras_internals import deferred_variables, give_values

    built, rng = {}, np.random.default_rng(0)
    for name in ("ResNet50", "MobileNetV3Small", "EfficientNetB0", "ConvNeXtTiny"):
        with deferred_variables() as deferred:
            model = getattr(keras.applications, name)(
                weights=None, input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                classifier_activation=None)
        give_values(deferred, ((v, random_values(v, rng)) for v in model.variables))
        built[name] = model
    # Dropout is random in the training forward, which the oracle would have to repeat draw for
    # draw: off, so that the step and the oracle see one network.
    for model in built.values():
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0
    return built


@pytest.mark.slow  # builds four keras.applications models: about 15-60 s depending on backend
@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_named_layers_of_applications_match_the_oracles(applications, setup, rng):
    teacher_name, student_name, pairs = SETUPS[setup]
    teacher, student = applications[teacher_name], applications[student_name]
    x = (rng.uniform(0, 255, (2, SIZE, SIZE, 3))).astype("float32")
    y = np.array([1, 4])
    distiller = Distiller(teacher, student, layer_pairs=pairs, mode="soft", **SETTINGS)
    outputs = distiller(x, training=True)
    total = float(numpy(distiller.compute_loss(x, y, outputs, training=True)))
    pair_losses = [float(numpy(t.result())) for t in distiller.pair_trackers]

    # The oracle reads the layers through separate models; the student in training mode, as the
    # step runs it (batch norm on the batch's statistics).
    def read(model, names, training):
        tapped = keras.Model(model.inputs[0], [model.outputs[0]]
                             + [model.get_layer(n).output for n in names])
        return [numpy(t) for t in tapped(x, training=training)]

    s_logits, *s_maps = read(student, [s for s, _ in pairs], True)
    t_logits, *t_maps = read(teacher, [t for _, t in pairs], False)
    expected_pairs = [band_pair_loss(s, t) for s, t in zip(s_maps, t_maps)]
    assert min(expected_pairs) > 0
    np.testing.assert_allclose(pair_losses, expected_pairs, rtol=1e-4)
    terms = ref.objective(torch.tensor(s_logits), torch.tensor(t_logits), y, mode="soft",
                          **SETTINGS)
    spectral = SETTINGS["beta"] * SETTINGS["spectral_weight"] * np.mean(expected_pairs)
    np.testing.assert_allclose(total, terms["total"].item() + spectral, rtol=1e-4)


@pytest.mark.slow
def test_a_training_step_moves_the_student_only(applications, rng):
    teacher_name, student_name, pairs = SETUPS["resnet50_to_mobilenetv3small"]
    teacher, student = applications[teacher_name], applications[student_name]
    distiller = Distiller(teacher, student, layer_pairs=pairs, mode="soft")
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    x = (rng.uniform(0, 255, (4, SIZE, SIZE, 3))).astype("float32")
    y = np.array([0, 1, 2, 3])
    teacher_before = [numpy(v) for v in teacher.variables]
    head_before = numpy(student.get_layer("logits").kernel)
    logs = distiller.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["spectral_loss"] > 0
    assert not np.array_equal(head_before, numpy(student.get_layer("logits").kernel))
    for before, variable in zip(teacher_before, teacher.variables):
        np.testing.assert_array_equal(before, numpy(variable))


@pytest.mark.slow
def test_the_readmes_keras_applications_pairs_name_real_layers(applications):
    """README.md's keras.applications example ("Distill in 20 lines"): its layer names exist in
    ConvNeXtTiny and DeiT, and the Distiller accepts them (here at 32x32, DeiT narrowed: the
    names do not depend on either)."""
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    with open(readme) as file:
        section = file.read().split("## Distill in 20 lines", 1)[1].split("\n## ", 1)[0]
    section = section.split("`keras.applications` CNN as the teacher", 1)[1]
    assert "keras.applications.ConvNeXtTiny(" in section
    assert 'models.create("deit_tiny_patch16_224"' in section
    pairs = ast.literal_eval(re.search(r"layer_pairs=(\[.*?\]),\n", section, re.DOTALL).group(1))
    student = models.create("deit_tiny_patch16_224", image_size=SIZE, embed_dim=24, num_heads=2,
                            num_classes=CLASSES)
    distiller = Distiller(applications["ConvNeXtTiny"], student, layer_pairs=pairs, mode="soft")
    assert [shape[1:3] for shape in distiller._taps["teacher"].map_shapes] == [(2, 2), (1, 1)]
