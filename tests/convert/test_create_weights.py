"""`models.create(name, weights)`: every kind of weights round-trips, every bad file is named.

Tiny models (32x32 input, 2 blocks of width 32); timm checkpoints are written from timm models
of the same size with random weights, and timm's pretrained weights come from a Hugging Face
cache folder the test fills itself (see test_pretrained.py), so nothing touches the network.
"""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from test_pretrained import REPO, hf_cache, one_backend, put_in_cache  # noqa: F401 (a fixture)
from timm_oracle import TOLERANCE, build_timm, compare_with_timm, random_images

from keras_spectralkd import models
from keras_spectralkd.convert import ConversionError

NAME = "deit_tiny_patch16_224"
TINY = dict(image_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
TIMM_TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def quoted(path):
    """`path` as a message quotes it (repr), as a regular expression."""
    return re.escape(repr(str(path)))


def outputs(model, images=None):
    images = random_images(2, 32) if images is None else images
    return keras.ops.convert_to_numpy(model(images))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny 10-class model and its .keras and .weights.h5 files."""
    folder = tmp_path_factory.mktemp("saved")
    model = models.create(NAME, num_classes=10, **TINY)
    model.save(str(folder / "model.keras"))
    model.save_weights(str(folder / "model.weights.h5"))
    return model, folder


@pytest.fixture(scope="module")
def timm_model():
    pytest.importorskip("timm")
    return build_timm(NAME, num_classes=10, **TIMM_TINY)


# === Each kind of weights ===
def test_random_weights_default_to_timms_1000_class_head():
    assert models.create(NAME, **TINY).output_shape == (None, 1000)
    assert models.create(NAME, num_classes=None, **TINY).output_shape == (None, 32)  # no head
    assert models.create(NAME, num_classes=10, **TINY).output_shape == (None, 10)


@pytest.mark.parametrize("file", ["model.keras", "model.weights.h5"])
def test_keras_files_round_trip_with_the_files_head(saved, file):
    model, folder = saved
    loaded = models.create(NAME, str(folder / file), **TINY)  # num_classes: the file's
    assert loaded.num_classes == 10
    np.testing.assert_allclose(outputs(loaded), outputs(model), rtol=1e-5, atol=1e-6)
    # As the recipes' runner calls it: every argument given, each matching the file.
    again = models.create(NAME, weights=str(folder / file), num_classes=10, **TINY)
    np.testing.assert_allclose(outputs(again), outputs(model), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("suffix", [".pth", ".pth.tar", ".safetensors"])
def test_timm_checkpoints_are_converted(timm_model, tmp_path, suffix):
    import torch

    path = str(tmp_path / f"model{suffix}")
    state = {key: value.contiguous() for key, value in timm_model.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, path)
    else:
        torch.save(state, path)
    model = models.create(NAME, path, **TINY)
    assert model.num_classes == 10  # the checkpoint's head
    errors = compare_with_timm(model, timm_model, random_images(2, 32))
    assert max(errors.values()) < TOLERANCE, errors


@one_backend
def test_timms_pretrained_weights_by_name_and_tag(hf_cache):  # noqa: F811 (the fixture)
    import timm

    state = {k: v.contiguous() for k, v in timm.create_model(NAME).state_dict().items()}
    put_in_cache(hf_cache, REPO, "model.safetensors", state)
    model = models.create(f"{NAME}.fb_in1k", weights="timm", num_classes=1000, image_size=224)
    assert model.name == NAME
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("head").kernel), state["head.weight"].numpy().T
    )
    with pytest.raises(ValueError, match=r"timm's pretrained weights 'deit_tiny_patch16_224' "
                                         r"has a 1000-class head, but num_classes=10 asks for a "
                                         r"10-class head; pass num_classes=1000"):
        models.create(NAME, weights="timm", num_classes=10)


# === Errors ===
def test_a_missing_file_is_named(tmp_path):
    path = str(tmp_path / "missing.weights.h5")
    with pytest.raises(FileNotFoundError, match=f"Weights file {quoted(path)} does not exist"):
        models.create(NAME, path, **TINY)


@pytest.mark.parametrize("weights", ["model.npz", "cait_s24_224.fb_dist_in1k"])
def test_an_unknown_kind_of_weights_lists_the_accepted_ones(weights):
    with pytest.raises(ValueError, match=rf"Unsupported weights '{weights}'; expected None, "
                                         r"'timm' .* \.keras, \.weights\.h5, \.safetensors, "
                                         r"\.pth, \.pt, \.bin, \.pth\.tar\."):
        models.create(NAME, weights)


@pytest.mark.parametrize("file, kind", [("bad.weights.h5", r"Keras weights file \(HDF5\)"),
                                        ("bad.keras", r"Saved Keras model \(\.keras zip\)")])
def test_a_garbage_keras_file_is_named(tmp_path, file, kind):
    path = tmp_path / file
    path.write_bytes(b"not a Keras file")
    expected = rf"^{kind} {quoted(path)} \(16 bytes\) cannot be read: it is truncated or corrupt"
    with pytest.raises(ValueError, match=expected):
        models.create(NAME, str(path), **TINY)


def test_a_keras_model_of_another_class_is_refused(saved):
    _, folder = saved
    path = str(folder / "model.keras")
    with pytest.raises(ValueError, match=rf"Weights file {quoted(path)} holds a VisionTransformer; "
                                         r"expected a keras_spectralkd CaiT \('cait_s24_224'\)"):
        models.create("cait_s24_224", path)


def test_a_keras_model_built_otherwise_than_asked_is_refused(saved):
    _, folder = saved
    path = str(folder / "model.keras")
    with pytest.raises(ValueError, match=rf"Weights file {quoted(path)} holds a model built with "
                                         r"depth=2, not depth=3; leave these arguments out"):
        models.create(NAME, path, **dict(TINY, depth=3))


def test_weights_of_another_architecture_are_refused(saved):
    _, folder = saved
    path = str(folder / "model.weights.h5")
    expected = (rf"Weights file {quoted(path)} does not hold the weights of '{NAME}' built with "
                r".*depth=3.*num_classes=10: ")
    with pytest.raises(ValueError, match=expected):
        models.create(NAME, path, **dict(TINY, depth=3))


def test_a_checkpoint_of_another_family_is_named(tmp_path):
    from safetensors.numpy import save_file

    path = str(tmp_path / "swin.safetensors")
    save_file({"layers.0.blocks.0.attn.relative_position_bias_table": np.zeros((4, 4), "float32"),
               "head.fc.weight": np.zeros((10, 4), "float32")}, path)
    expected = (rf"^Weights file {quoted(path)}: The checkpoint is a swin model .* but '{NAME}' "
                "is a vit model")
    with pytest.raises(ConversionError, match=expected):
        models.create(NAME, path, **TINY)


@pytest.mark.parametrize("file", ["model.keras", "model.weights.h5", "timm"])
def test_a_head_of_another_size_names_both_sizes(saved, timm_model, tmp_path, file):
    _, folder = saved
    path = str(folder / file)
    if file == "timm":
        import torch

        path = str(tmp_path / "model.pth")
        torch.save(timm_model.state_dict(), path)
    for num_classes, asked in ((7, "a 7-class head"), (0, "no head")):
        expected = (rf"^Weights file {quoted(path)} has a 10-class head, but "
                    rf"num_classes={num_classes} asks for {asked}; pass num_classes=10")
        with pytest.raises(ValueError, match=expected):
            models.create(NAME, path, num_classes=num_classes, **TINY)


# === The public API ===
def test_the_public_api_resolves_after_a_bare_import():
    """In a fresh interpreter: `import keras_spectralkd as ks` imports nothing heavy, and each
    public name resolves on first use, listed by `dir` and `__all__`."""
    script = """
import sys
sys.modules.setdefault("triton", None)  # see tests/conftest.py
import keras_spectralkd as ks
assert "keras" not in sys.modules, "the bare import imported keras"
names = ["models", "convert", "callbacks", "analysis", "data", "training", "Distiller",
         "SpectralDistillation", "rfft2"]
missing = [n for n in names if n not in ks.__all__ or n not in dir(ks)]
assert not missing, missing
assert callable(ks.models.create) and callable(ks.convert.from_timm)
assert callable(ks.analysis.profile_model) and ks.callbacks.SpectralTensorBoard
assert ks.Distiller.__name__ == "Distiller" and ks.SpectralDistillation and ks.data and ks.training
from keras_spectralkd import Distiller
assert Distiller is ks.Distiller
try:
    ks.no_such_name
except AttributeError as error:
    assert "no_such_name" in str(error)
else:
    raise AssertionError("ks.no_such_name resolved")
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
