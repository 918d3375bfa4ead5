"""spectralkd-analyze on any Keras model: a .keras file and keras.applications, layers by name."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tools_helpers import load_tool
from tools_helpers import run_main

from keras_spectralkd import Distiller
from keras_spectralkd.analysis import Profile

analyze_tool = load_tool("analyze")
SIZE = 32


def cnn(name, width):
    """Four conv stages on 32x32 images: 16x16, 8x8, 4x4, 2x2 maps of W, 2W, 4W, 8W channels."""
    images = keras.Input((SIZE, SIZE, 3), name="images")
    x = images
    for i in range(4):
        x = keras.layers.Conv2D(width * 2 ** i, 3, strides=2, padding="same", activation="relu",
                                name=f"stage_{i}")(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(images, keras.layers.Dense(3, name="head")(pooled), name=name)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("named_images")
    rng = np.random.default_rng(0)
    for index in range(3):
        pixels = tf.constant(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8))
        tf.io.write_file(str(root / f"image_{index}.png"), tf.io.encode_png(pixels))
    return str(root)


STAGES = "stage_0,stage_1,stage_2,stage_3"


def test_keras_files_by_layer_name(tmp_path, folder, capsys):
    teacher_path, student_path = str(tmp_path / "teacher.keras"), str(tmp_path / "student.keras")
    cnn("teacher", 8).save(teacher_path)
    cnn("student", 4).save(student_path)
    output_dir = tmp_path / "out"
    status, out, err = run_main(analyze_tool, [
        f"--model={teacher_path}", f"--layers={STAGES}", f"--student={student_path}",
        f"--student_layers={STAGES}", f"--data={folder}", "--num_images=3", "--batch_size=2",
        f"--output_dir={output_dir}"], capsys)
    assert status == 0, err
    expected = [(f"stage_{i}", f"stage_{i}") for i in range(4)]  # equal depths: i with i
    assert f"layer_pairs={expected!r}" in out.splitlines()
    profile = Profile.load(output_dir / "model_profile.json")
    assert profile.layer_names == STAGES.split(",")
    assert profile.grids == [(16, 16), (8, 8), (4, 4), (2, 2)]
    with open(output_dir / "comparison.json") as file:
        assert json.load(file)["pairs"] == [[i, i] for i in range(4)]
    assert os.path.isfile(output_dir / "intensity.png")
    # The printed pairs are what the Distiller takes.
    Distiller(keras.saving.load_model(teacher_path), keras.saving.load_model(student_path),
              layer_pairs=expected, mode="fft")


@pytest.mark.slow  # builds keras.applications.MobileNet (random weights, no download)
def test_a_keras_applications_teacher_and_a_student_depth(tmp_path, folder, capsys):
    layers = "conv_pw_1_relu,conv_pw_3_relu,conv_pw_5_relu,conv_pw_11_relu,conv_pw_13_relu"
    results = analyze_tool.analyze(
        model="keras.applications.MobileNet", layers=layers, data=folder, num_images=3,
        batch_size=3, image_size=SIZE, student_depth=3, output_dir=str(tmp_path), entropy=False)
    profile = results["model_profile"]
    assert profile.layer_names == layers.split(",") and profile.grids[0] == (16, 16)
    # Student units by index (a backbone), teacher layers by name: one kind per side.
    # SPEC.md 6's rule keeps at least the first and the last unit of each model.
    pairs, names = results["layer_pairs"], layers.split(",")
    assert pairs[0] == (0, names[0]) and pairs[-1] == (2, names[-1])
    assert all(isinstance(s, int) and t in names for s, t in pairs)
    assert results["layer_pairs_python"] == f"layer_pairs={pairs!r}"
    assert "RANDOM weights" in capsys.readouterr().err
