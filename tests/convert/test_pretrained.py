"""`from_timm(name)` without a checkpoint: timm's pretrained weights through timm's own cache.

Never touches the network: the wiring is tested on a Hugging Face cache folder that the test
fills with a checkpoint it writes itself (random weights), and the offline path on an endpoint
that refuses connections.
"""

import os
import time

import keras
import numpy as np
import pytest

from keras_spectralkd.convert import from_timm
from keras_spectralkd.convert import pretrained

timm = pytest.importorskip("timm")
huggingface_hub = pytest.importorskip("huggingface_hub")
safetensors_torch = pytest.importorskip("safetensors.torch")

NAME = "deit_tiny_patch16_224"
REPO = "timm/deit_tiny_patch16_224.fb_in1k"  # timm's default tag for NAME
REFUSING_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens, connect fails
# Fetching and timm's loading are backend-free and the converter is tested on every backend
# elsewhere: the two tests that build a model run once, on TensorFlow.
one_backend = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="backend-free wiring; runs on tensorflow"
)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache and an endpoint that refuses connections."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", REFUSING_ENDPOINT)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


def put_in_cache(cache, repo_id, filename, state_dict):
    """Writes `state_dict` where huggingface_hub's cache keeps `repo_id`'s `filename`."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    safetensors_torch.save_file(state_dict, str(snapshot / filename))
    return snapshot / filename


@one_backend
def test_weights_come_from_timms_cache(hf_cache):
    reference = timm.create_model(NAME, pretrained=False)  # random weights
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    path = put_in_cache(hf_cache, REPO, "model.safetensors", state)

    assert pretrained.fetch(NAME) == str(path)
    assert pretrained.fetch(f"{NAME}.fb_in1k") == str(path)
    model = from_timm(f"{NAME}.fb_in1k")  # the endpoint refuses: this can only be the cache
    assert model.name == NAME
    head = model.get_layer("head")
    np.testing.assert_array_equal(
        np.asarray(head.kernel), state["head.weight"].numpy().T
    )
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("blocks_11").weights[-1]),
        state["blocks.11.mlp.fc2.bias"].numpy(),
    )


def test_offline_fails_at_once_naming_the_file(hf_cache, monkeypatch):
    started = time.perf_counter()
    with pytest.raises(pretrained.PretrainedWeightsUnavailable) as caught:
        from_timm("cait_s24_224")
    assert time.perf_counter() - started < 10
    message = str(caught.value)
    assert "\n" not in message
    assert (
        f"Download {REFUSING_ENDPOINT}/timm/cait_s24_224.fb_dist_in1k/resolve/main/"
        "model.safetensors" in message
    )
    assert "127.0.0.1:9 cannot be reached" in message
    assert os.path.join(str(hf_cache), "models--timm--cait_s24_224.fb_dist_in1k") in message

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(pretrained.PretrainedWeightsUnavailable, match="HF_HUB_OFFLINE is set"):
        pretrained.fetch("swin_small_patch4_window7_224.ms_in1k")


def test_names(hf_cache, tmp_path):
    with pytest.raises(ValueError, match=r"no pretrained weights named 'deit_tiny_patch16_224\.nope'.*fb_in1k"):
        pretrained.fetch(f"{NAME}.nope")
    with pytest.raises(ValueError, match="Unknown model name 'resnet50'"):
        pretrained.fetch("resnet50.a1_in1k")
    assert pretrained.split_name("swin_small_patch4_window7_224.ms_in1k") == (
        "swin_small_patch4_window7_224",
        "ms_in1k",
    )
    assert pretrained.is_timm_pretrained_name("cait_s24_224")
    assert pretrained.is_timm_pretrained_name("cait_s24_224.fb_dist_in1k")
    assert not pretrained.is_timm_pretrained_name("cait_s24_224.pth")
    assert not pretrained.is_timm_pretrained_name("resnet50.a1_in1k")
    existing = tmp_path / "cait_s24_224"
    existing.write_text("")
    assert not pretrained.is_timm_pretrained_name(str(existing))


@one_backend
def test_the_recipes_and_the_converter_take_a_timm_name(hf_cache, tmp_path):
    """`--teacher_weights` and `--checkpoint` accept `arch[.tag]` where they accept a file."""
    import types

    from keras_spectralkd.recipes import runner
    from keras_spectralkd.tools import convert_timm as tool

    recipe = types.SimpleNamespace(teacher_source="(how to get it)")
    config = types.SimpleNamespace(
        mode="soft", teacher="cait_s24_224", teacher_overrides={}, image_size=224,
        teacher_weights="cait_s24_224.fb_dist_in1k",
    )
    with pytest.raises(pretrained.PretrainedWeightsUnavailable, match="fb_dist_in1k"):
        runner.load_teacher(recipe, config, 1000)
    config.teacher_weights = "swin_small_patch4_window7_224.ms_in1k"
    with pytest.raises(ValueError, match="another model than the teacher 'cait_s24_224'"):
        runner.load_teacher(recipe, config, 1000)

    state = {k: v.contiguous() for k, v in timm.create_model(NAME).state_dict().items()}
    put_in_cache(hf_cache, REPO, "model.safetensors", state)
    output = str(tmp_path / "deit.weights.h5")
    model = tool.convert(NAME, f"{NAME}.fb_in1k", output, log=lambda line: None)
    assert os.path.getsize(output) > 1e6
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("head").kernel), state["head.weight"].numpy().T
    )
