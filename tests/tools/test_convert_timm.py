"""tools/convert_timm.py: timm checkpoint file -> .keras / .weights.h5, for each family."""

import os
import subprocess
import sys

import keras
import pytest
from keras import ops
from timm_oracle import TOLERANCE, build_timm, random_images, relative_error, timm_state_dict
from tools_helpers import REPO, load_tool, script_env

from keras_spectralkd.models import create, list_models, model_family

convert_tool = load_tool("convert_timm")

# One tiny architecture per family: (registered name, our overrides, timm's overrides).
TINY = {
    "vit": ("deit_tiny_patch16_224",
            dict(image_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)),
    "cait": ("cait_xxs24_224",
             dict(image_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4)),
    "swin": ("swin_tiny_patch4_window7_224",
             dict(image_size=32, patch_size=2, embed_dim=16, depths=(2, 2), num_heads=(1, 2),
                  window_size=2)),
}


def timm_kwargs(ours):
    kwargs = dict(ours)
    kwargs["img_size"] = kwargs.pop("image_size")
    return kwargs


@pytest.fixture(scope="module", params=sorted(TINY))
def checkpoint(request, tmp_path_factory):
    """(family, name, our overrides, timm model, .safetensors path) for one tiny model."""
    pytest.importorskip("timm")
    from safetensors.numpy import save_file

    family = request.param
    name, ours = TINY[family]
    timm_model = build_timm(name, num_classes=6, **timm_kwargs(ours))
    path = str(tmp_path_factory.mktemp(family) / f"{name}.safetensors")
    save_file(timm_state_dict(timm_model), path)
    return family, name, ours, timm_model, path


def timm_logits(timm_model, images):
    import torch

    with torch.inference_mode():
        return timm_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


def test_every_family_has_a_case():
    assert {model_family(name) for name in list_models()} == set(TINY)


def test_convert_to_keras_file(checkpoint, tmp_path):
    family, name, ours, timm_model, path = checkpoint
    lines = []
    output = str(tmp_path / "model.keras")
    convert_tool.convert(name, path, output, model_kwargs=ours, log=lines.append)
    loaded = keras.saving.load_model(output)
    assert model_family(name) == family
    images = random_images(2, 32)
    expected = timm_logits(timm_model, images)
    assert relative_error(ops.convert_to_numpy(loaded(images)), expected) < TOLERANCE
    # Progress: reading, building, converting, saving, done.
    text = "\n".join(lines)
    for step in ("reading", "building", "converted", "saving", "done"):
        assert step in text, text


def test_convert_to_weights_file(checkpoint, tmp_path):
    _, name, ours, timm_model, path = checkpoint
    output = str(tmp_path / "model.weights.h5")
    convert_tool.convert(name, path, output, model_kwargs=ours, log=lambda line: None)
    model = create(name, num_classes=6, **ours)
    model.load_weights(output)
    images = random_images(2, 32)
    expected = timm_logits(timm_model, images)
    assert relative_error(ops.convert_to_numpy(model(images)), expected) < TOLERANCE


def test_refuses_bad_output_names_and_unknown_models(tmp_path):
    with pytest.raises(ValueError, match=r"must end in .keras or .weights.h5"):
        convert_tool.convert("cait_s24_224", "x.safetensors", str(tmp_path / "model.h5"))
    existing = tmp_path / "model.keras"
    existing.write_bytes(b"")
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_tool.convert("cait_s24_224", "x.safetensors", str(existing))
    with pytest.raises(ValueError, match="'cait_s99' is not a registered model"):
        convert_tool.convert("cait_s99", "x.safetensors", str(tmp_path / "m.keras"))


def test_command_line_with_timm_check(tmp_path):
    """The script end to end, in a subprocess as a user runs it (vit family only: one start)."""
    pytest.importorskip("timm")
    import torch

    name, ours = TINY["vit"]
    timm_model = build_timm(name, num_classes=6, **timm_kwargs(ours))
    checkpoint = str(tmp_path / "deit.pth")
    torch.save(timm_model.state_dict(), checkpoint)
    (tmp_path / "out").mkdir()
    output = str(tmp_path / "out" / "deit.keras")
    import json

    command = [
        sys.executable, os.path.join(REPO, "tools", "convert_timm.py"), f"--model={name}",
        f"--checkpoint={checkpoint}", f"--output={output}", f"--model_kwargs={json.dumps(ours)}",
        "--check_timm",
    ]
    done = subprocess.run(command, env=script_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.path.exists(output)
    check = [line for line in done.stdout.splitlines() if "timm check" in line]
    assert len(check) == 1, done.stdout
    assert float(check[0].rsplit("= ", 1)[1].split()[0]) < TOLERANCE
