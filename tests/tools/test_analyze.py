"""tools/analyze.py end to end on tiny models and a tiny image folder written here."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tools_helpers import REPO
from tools_helpers import load_tool
from tools_helpers import script_env

from keras_spectralkd import models
from keras_spectralkd.analysis import Profile
from keras_spectralkd.analysis import format_layer_pairs
from keras_spectralkd.analysis import select_layer_pairs

analyze_tool = load_tool("analyze")

TEACHER = ("cait_s24_224", {"patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 2})
STUDENT = ("deit_tiny_patch16_224", {"patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2})
IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """An ImageNet-like tree: root/val/<class>/*, PNG and JPEG files of different sizes."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index, (cls, size, extension) in enumerate(
        [
            ("n01", (40, 52), "png"),
            ("n01", (64, 48), "jpg"),
            ("n02", (50, 50), "JPEG"),
            ("n02", (36, 70), "png"),
            ("n03", (45, 45), "jpeg"),
            ("n03", (80, 60), "png"),
        ]
    ):
        folder = root / "val" / cls
        folder.mkdir(parents=True, exist_ok=True)
        pixels = tf.constant(rng.integers(0, 256, size=size + (3,), dtype=np.uint8))
        encoded = tf.io.encode_png(pixels) if extension == "png" else tf.io.encode_jpeg(pixels)
        tf.io.write_file(str(folder / f"image_{index}.{extension}"), encoded)
    (root / "val" / "README.txt").write_text("not an image")
    return str(root)


@pytest.fixture(scope="module")
def results(image_folder, tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("analysis"))
    return analyze_tool.analyze(
        model=TEACHER[0],
        model_kwargs=TEACHER[1],
        student=STUDENT[0],
        student_kwargs=STUDENT[1],
        data=image_folder,
        num_images=4,
        batch_size=2,
        image_size=IMAGE_SIZE,
        output_dir=output_dir,
    )


def test_writes_profiles_comparison_and_figures(results):
    files = results["files"]
    assert set(files) == {
        "model_profile_json",
        "model_profile_csv",
        "student_profile_json",
        "student_profile_csv",
        "comparison",
        "intensity",
        "spectra",
        "entropy_magnitude",
    }
    for path in files.values():
        assert os.path.getsize(path) > 0, path
    teacher = results["model_profile"]
    assert teacher.model_name == TEACHER[0] and teacher.num_images == 4
    assert teacher.units == [0, 1, 2, 3] and teacher.num_channels == [32] * 4
    assert teacher.grids == [(4, 4)] * 4 and teacher.entropy is not None
    for key in ("model_profile_json", "model_profile_csv"):
        loaded = Profile.load(files[key])
        np.testing.assert_array_equal(loaded.intensity, teacher.intensity)
    comparison = json.loads(open(files["comparison"]).read())
    assert comparison["pairs"] == [list(p) for p in results["layer_pairs"]]
    assert len(comparison["pair_distances"]) == len(results["layer_pairs"])


def test_suggests_pairs_for_the_student(results):
    # The student's 2 units: the rule keeps one unit per end.
    expected = select_layer_pairs(results["model_profile"], 2)
    assert results["layer_pairs"] == expected
    assert results["layer_pairs_flag"] == "--layer_pairs=" + format_layer_pairs(expected)
    lines = analyze_tool.summary(results)
    assert lines[-1] == results["layer_pairs_flag"]
    assert any(line.startswith("intensity-profile correlation") for line in lines)


def test_images_follow_the_paper_protocol(image_folder):
    images = analyze_tool.load_images(image_folder, 4, IMAGE_SIZE, seed=0)
    assert images.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3) and images.dtype == np.float32
    # Normalised with the ImageNet mean/std: pixel 0 and 255 map to these bounds per channel.
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    assert np.all(images >= (0 - mean) / std - 1e-5) and np.all(images <= (1 - mean) / std + 1e-5)
    # A fixed seed draws the same images; another seed others.
    np.testing.assert_array_equal(images, analyze_tool.load_images(image_folder, 4, IMAGE_SIZE))
    other = analyze_tool.load_images(image_folder, 4, IMAGE_SIZE, seed=3)
    assert not np.array_equal(images, other)
    # Fewer images than asked: all of them, with a warning (docs/errors.md).
    assert analyze_tool.load_images(image_folder, 50, IMAGE_SIZE).shape[0] == 6


def test_image_sources_and_their_errors(tmp_path):
    from keras_spectralkd.data.fashion_mnist import DEBIAN_DIR

    if os.path.isdir(DEBIAN_DIR):  # the Debian package; never download in tests
        fashion = analyze_tool.load_images("fashion_mnist", 3, IMAGE_SIZE)
        assert fashion.shape == (3, IMAGE_SIZE, IMAGE_SIZE, 3)
        # Grayscale made RGB: the three channels carry the same image (up to mean/std).
        std = np.array([0.229, 0.224, 0.225])
        mean = np.array([0.485, 0.456, 0.406])
        pixels = fashion * std + mean
        np.testing.assert_allclose(pixels[..., 0], pixels[..., 2], atol=1e-5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No images"):
        analyze_tool.load_images(str(tmp_path / "empty"), 2, IMAGE_SIZE)
    with pytest.raises(FileNotFoundError, match="not prepared"):
        analyze_tool.load_images("mnist", 2, IMAGE_SIZE, data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="num_images"):
        analyze_tool.load_images("fashion_mnist", 0, IMAGE_SIZE)


def test_weights_files_and_random_weights_warning(tmp_path, capsys):
    name, kwargs = STUDENT
    model = models.create(name, num_classes=10, image_size=IMAGE_SIZE, **kwargs)
    images = np.random.default_rng(0).normal(size=(2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(images))
    model.save_weights(str(tmp_path / "w.weights.h5"))
    model.save(str(tmp_path / "m.keras"))
    for path in ("w.weights.h5", "m.keras"):
        loaded = analyze_tool.load_backbone(
            name, str(tmp_path / path), kwargs, num_classes=10, image_size=IMAGE_SIZE
        )
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(loaded(images)), expected, rtol=1e-5, atol=1e-6
        )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        analyze_tool.load_backbone(name, str(tmp_path / "missing.safetensors"))
    capsys.readouterr()
    analyze_tool.load_backbone(name, None, kwargs, image_size=IMAGE_SIZE)
    assert "RANDOM weights" in capsys.readouterr().err


def test_command_line(tmp_path, image_folder):
    output_dir = tmp_path / "out"
    command = [
        sys.executable,
        os.path.join(REPO, "tools", "analyze.py"),
        f"--model={STUDENT[0]}",
        f"--model_kwargs={json.dumps(STUDENT[1])}",
        f"--data={image_folder}",
        "--num_images=2",
        f"--image_size={IMAGE_SIZE}",
        "--student_depth=2",
        "--noentropy",
        f"--output_dir={output_dir}",
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, env=script_env(), timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "RANDOM weights" in completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert lines[-1] == "--layer_pairs=0:0,1:1"  # equal depths: unit i -> unit i
    profile = Profile.load(output_dir / "model_profile.json")
    assert profile.num_images == 2 and profile.entropy is None
    assert sorted(os.listdir(output_dir)) == [
        "entropy_magnitude.png",
        "intensity.png",
        "model_profile.csv",
        "model_profile.json",
        "spectra.png",
    ]
