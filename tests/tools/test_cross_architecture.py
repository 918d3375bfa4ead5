"""tools/cross_architecture.py: a functional CNN teacher (a whole `.keras` model, its layers named
in the pairs) into our DeiT, none/soft/soft+spectral over paired seeds, through the one engine;
and the runner's `teacher=keras` and named `layer_pairs` settings it relies on."""

import dataclasses
import importlib.util
import json
import os

import keras
import pytest

from keras_spectralkd.recipes import RECIPES, runner
from keras_spectralkd.recipes.config import parse_value
from tools_helpers import REPO


def load_script():
    spec = importlib.util.spec_from_file_location(
        "cross_architecture", os.path.join(REPO, "tools", "cross_architecture.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layer_pairs_may_name_teacher_layers():
    assert parse_value("layer_pairs", "0:stage_0, 3:conv2_block1_out") == [
        (0, "stage_0"), (3, "conv2_block1_out")]
    assert parse_value("layer_pairs", "blocks_5:outer/inner") == [("blocks_5", "outer/inner")]
    assert parse_value("layer_pairs", "0:0,1:1") == [(0, 0), (1, 1)]
    with pytest.raises(ValueError, match=r"Bad layer pair '3:' in '0:stage_0,3:'; expected "
                                         r"'student:teacher' with unit indices or layer names"):
        parse_value("layer_pairs", "0:stage_0,3:")
    with pytest.raises(ValueError, match="non-negative integers"):  # docs/errors.md A1, as before
        parse_value("layer_pairs", "0:0,1-1")


def test_a_whole_keras_model_as_the_teacher(tmp_path):
    recipe = RECIPES["fashion_mnist"]
    config = recipe.config("quick", teacher=runner.KERAS_MODEL_TEACHER, teacher_overrides={})
    path = str(tmp_path / "cnn.keras")
    script = load_script()
    script.cnn_teacher(28, 10, widths=script.QUICK_WIDTHS).save(path)
    teacher = runner.load_teacher(recipe, dataclasses.replace(config, teacher_weights=path), 10)
    assert teacher.name == "cnn_teacher" and teacher.get_layer("stage_3").output.shape[1:] == (
        7, 7, 32)
    with pytest.raises(ValueError, match="teacher=keras loads a whole saved Keras model, so "
                                         "teacher_weights must be a .keras file; got 'w.h5'"):
        runner.teacher_weights(recipe, dataclasses.replace(config, teacher_weights="w.h5"))
    with pytest.raises(FileNotFoundError, match="Teacher model 'missing.keras' does not exist"):
        runner.teacher_weights(recipe, dataclasses.replace(config, teacher_weights="missing.keras"))
    with pytest.raises(ValueError, match=r"takes the saved model as it is; drop "
                                         r"teacher_overrides=\{'depth': 2\}"):
        runner.load_teacher(recipe, dataclasses.replace(
            config, teacher_weights=path, teacher_overrides={"depth": 2}), 10)
    with pytest.raises(ValueError, match="has 10 output classes but the dataset has 4"):
        runner.load_teacher(recipe, dataclasses.replace(config, teacher_weights=path), 4)


@pytest.mark.slow
def test_quick_run_end_to_end_and_resume(tmp_path, capsys):
    """Two seeds x three arms of one-epoch runs: run folders of the engine, the CNN's named
    layers in the pairs, the statistics; a second call reads every run back."""
    script = load_script()
    out = str(tmp_path / "cross")
    assert script.main(["--quick", f"--output_dir={out}"]) == 0
    with open(os.path.join(out, "cross_architecture.json")) as f:
        summary = json.load(f)
    assert summary["settings"]["backend"] == keras.backend.backend()
    runs = summary["runs"]
    assert sorted((r["seed"], r["arm"]) for r in runs) == sorted(
        (s, a) for s in (0, 1) for a in script.ARMS)
    pairs = summary["layer_pairs"]
    assert pairs and all(isinstance(s, int) and t in script.STAGES for s, t in pairs)
    for r in runs:
        with open(os.path.join(r["run_dir"], "config.json")) as f:
            config = json.load(f)
        assert config["student_overrides"]["patch_size"] == 4
        if r["arm"] == "soft+spectral":
            assert config["teacher"] == "keras" and config["layer_pairs"] == pairs
        # Every arm is measured against the CNN teacher at the named pairs.
        assert r["spectral_gap"] > 0 and len(r["intensity"]) == 2
    comparisons = {(c["arm"], c["baseline"], c["metric"])
                   for claim in summary["statistics"]["claims"].values()
                   for c in claim["comparisons"]}
    assert {("soft+spectral", "soft", "top1"), ("soft", "none", "top1"),
            ("soft+spectral", "none", "top1")} <= comparisons
    assert {r["baseline"] for r in summary["statistics"]["spectral_gap"]} == {"soft", "none"}
    assert summary["wall_time_s"] > 0 and summary["cpu_time_s"] > 0
    assert "| soft+spectral - soft | top1 | 2 |" in capsys.readouterr().out
    # Resumed: the teacher and every run are read back, the same numbers.
    assert script.main(["--quick", f"--output_dir={out}", "--quiet"]) == 0
    with open(os.path.join(out, "cross_architecture.json")) as f:
        again = json.load(f)
    assert [r["top1"] for r in again["runs"]] == [r["top1"] for r in runs]
    assert again["teacher"]["top1"] == summary["teacher"]["top1"]
