"""The recipes: the paper's defaults, flags, teacher loading, clear errors, and a 2-step smoke
run of every recipe on tiny models and a tiny image folder."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from recipe_helpers import RECIPES, ROOT, load_script

from keras_spectralkd.models import create
from keras_spectralkd.recipes import RECIPES as TABLE
from keras_spectralkd.recipes import runner
from keras_spectralkd.training.checkpoint import atomic_write_json


def _flags(recipe, argv):
    """The checked config that `recipes/<name>.py argv` would run."""
    from keras_spectralkd.tools import train

    args = train.build_parser(recipe.name).parse_args(list(argv))
    return train.config_from_args(args, recipe.name)[1]


def _teacher_weights(recipe, directory, num_classes=3):
    config = recipe.config("tiny")
    teacher = create(config.teacher, num_classes=num_classes, image_size=config.image_size,
                     **config.teacher_overrides)
    path = os.path.join(directory, f"{recipe.name}_teacher.weights.h5")
    teacher.save_weights(path)
    return path, teacher


def test_paper_defaults_are_spec_section_7():
    tiny = load_script("deit_tiny").RECIPE.config()
    assert (tiny.student, tiny.teacher) == ("deit_tiny_patch16_224", "cait_s24_224")
    assert tiny.layer_pairs == [(0, 0), (1, 1), (6, 18), (7, 19), (8, 20), (9, 21), (10, 22),
                                (11, 23)]
    assert (tiny.epochs, tiny.warmup_epochs, tiny.batch_size, tiny.lr) == (400, 5, 512, 5e-4)
    assert (tiny.weight_decay, tiny.spectral_weight, tiny.alpha, tiny.temperature) == (
        0.05, 0.2, 0.9, 1.0)
    assert (tiny.label_smoothing, tiny.drop_path_rate, tiny.ema_decay) == (0.1, 0.0, 0.99996)
    assert (tiny.repeated_augmentation, tiny.random_erasing, tiny.mixup, tiny.cutmix) == (
        3, 0.25, 0.0, 0.0)
    assert (tiny.mode, tiny.image_size) == ("soft", 224)
    small = load_script("deit_small").RECIPE.config()
    assert (small.student, small.epochs, small.layer_pairs) == (
        "deit_small_patch16_224", 500, tiny.layer_pairs)
    swin = load_script("swin_tiny").RECIPE.config()
    assert (swin.student, swin.teacher) == ("swin_tiny_patch4_window7_224",
                                            "swin_small_patch4_window7_224")
    assert (swin.epochs, swin.warmup_epochs, swin.spectral_weight) == (500, 20, 0.05)
    assert swin.layer_pairs == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_flags_override_the_preset():
    recipe = load_script("deit_tiny").RECIPE
    config = _flags(recipe, ["--preset=tiny", "--layer_pairs=0:0,3:5", "--mode=fft",
                             "--epochs=3", "--batch_size=16", "--output_dir=/tmp/x"])
    assert config.layer_pairs == [(0, 0), (3, 5)]
    assert (config.mode, config.epochs, config.batch_size, config.output_dir) == (
        "fft", 3, 16, "/tmp/x")
    assert config.image_size == 32 and config.student_overrides["embed_dim"] == 32  # preset
    paper = _flags(recipe, [])
    assert paper == recipe.config()
    with pytest.raises(ValueError, match="student:teacher"):
        _flags(recipe, ["--layer_pairs=0-0"])


def test_every_setting_is_written_once_as_a_field_and_can_be_set(capsys):
    import dataclasses

    from keras_spectralkd.recipes import config as config_lib
    from keras_spectralkd.tools import train

    recipe = TABLE["swin_tiny"]
    names = [field.name for field in dataclasses.fields(runner.RunConfig)]
    assert {"epochs", "lr", "mode", "ema_decay", "output_dir", "save_every_steps", "image_size",
            "drop_path_rate", "weight_decay", "label_smoothing", "random_erasing"} <= set(names)
    # --help lists every field with this recipe's default.
    assert train.main(["--recipe=swin_tiny", "--help"]) == 0
    help_text = capsys.readouterr().out
    for field in dataclasses.fields(runner.RunConfig):
        assert f"  {field.name} (default " in help_text, field.name
        assert field.metadata["help"] in help_text.replace("\n      ", " "), field.name
    assert "weight_decay (default 0.05;" in help_text and "epochs (default 500;" in help_text
    # Each field set both ways lands typed in the config.
    config = _flags(recipe, ["--set", "drop_path_rate=0.1", "--image_size=64",
                             "--set", "jit_compile=false", "--set", "student_overrides={\"depth\": 2}",
                             "--set", "teacher_weights=none", "--set", "verbose=2"])
    assert (config.drop_path_rate, config.image_size, config.jit_compile) == (0.1, 64, False)
    assert config.student_overrides == {"depth": 2} and config.verbose == 2
    assert config.teacher_weights is None
    for name in names:  # every field has a help text for --help
        field = config_lib.field(name)
        assert "help" in field.metadata and field.metadata["help"], name


@pytest.mark.parametrize("argv, message", [
    (["--preset=tiny", "--batch_size=0"], "batch_size=0 is not valid; expected an integer >= 1"),
    (["--preset=tiny", "--epochs=-1"], "epochs=-1 is not valid"),
    (["--preset=tiny", "--layer_pairs=0:0,0:1"], "Duplicated student units"),
    (["--preset=tiny", "--set", "spectral_weight=-0.2"], "spectral_weight=-0.2 is not valid"),
    (["--preset=tiny", "--set", "lr=nan"], "lr=nan is not valid"),
    (["--preset=tiny", "--set", "alpha=1.5"], "alpha=1.5 is not valid; expected a number in [0.0, 1.0]"),
    (["--preset=tiny", "--set", "mode=kd"], "mode='kd' is not valid; expected one of soft, hard"),
    (["--preset=tiny", "--set", "epochs=2.5"], "epochs='2.5' is not valid; expected an integer"),
    (["--preset=tiny", "--set", "rand_augment=maybe"], "rand_augment='maybe' is not valid"),
    (["--preset=tiny", "--set", "colour=red"], "Unknown setting 'colour'; valid settings: student"),
    (["--preset=tiny", "--set", "epochs"], "is not NAME=VALUE"),
    (["--preset=huge"], "Unknown preset 'huge'"),
    (["--preset=tiny", "--mode=fft", "--layer_pairs="], "mode='fft' is CE + the spectral term"),
])
def test_every_setting_is_checked_before_anything_is_loaded(argv, message, capsys, tmp_path):
    # No data_dir: a check that came after loading would say "No data_dir given" instead.
    from keras_spectralkd.tools import train

    assert train.main(argv + [f"--output_dir={tmp_path}"], recipe_name="deit_tiny") == 2
    error = capsys.readouterr().err
    assert message in error and "No data_dir" not in error and len(error.splitlines()) == 1
    assert "Traceback" not in error and not os.listdir(tmp_path)


def _accuracy(model, dataset):
    correct = total = 0
    for images, labels in dataset:
        logits = keras.ops.convert_to_numpy(model(images, training=False))
        correct += int((logits.argmax(-1) == np.asarray(labels)).sum())
        total += len(logits)
    return correct / total


@pytest.mark.parametrize("name", RECIPES)
def test_two_step_smoke_run(name, image_folder, tmp_path):
    recipe = load_script(name).RECIPE
    assert recipe is TABLE[name]
    weights, _ = _teacher_weights(recipe, tmp_path)
    out = str(tmp_path / "run")
    # The EMA (an extra evaluation per epoch) is checked on one recipe; the code path is shared.
    ema = [] if name == "deit_tiny" else ["--ema_decay=0"]
    config = _flags(recipe, ["--preset=tiny", f"--data_dir={image_folder}",
                             f"--teacher_weights={weights}", f"--output_dir={out}",
                             "--steps_per_epoch=2", "--verbose=0"] + ema)
    summary = runner.run(recipe, config)
    final = summary["final"]
    assert final["global_step"] == 2 and final["epoch"] == 1
    # Teacher and student differ, so both distillation terms are strictly positive.
    assert final["spectral_loss"] > 0 and final["kd_loss"] > 0 and np.isfinite(final["loss"])
    for path in ("student.keras", "best.weights.h5", "log.csv",
                 "summary.json", "config.json", "checkpoints/latest.json",
                 "tensorboard/train", "tensorboard/spectral"):
        assert os.path.exists(os.path.join(out, path)), path
    # The logged top-1 is the saved student's on the validation images (recomputed here).
    student = keras.saving.load_model(os.path.join(out, "student.keras"), compile=False)
    assert student.output_shape[-1] == 3
    validation = runner.load_data(config).validation
    assert final["val_accuracy"] == pytest.approx(_accuracy(student, validation), abs=1e-6)
    assert ("ema_val_accuracy" in final) == (name == "deit_tiny")
    if name == "deit_tiny":
        student.load_weights(os.path.join(out, "student_ema.weights.h5"))
        assert final["ema_val_accuracy"] == pytest.approx(_accuracy(student, validation),
                                                          abs=1e-6)
    assert json.load(open(os.path.join(out, "config.json")))["recipe"] == name


def test_teacher_from_a_timm_checkpoint_and_a_keras_file(tmp_path):
    """A timm checkpoint is converted on the fly (same logits as timm); .keras files load."""
    timm = pytest.importorskip("timm")
    import torch

    recipe = load_script("deit_tiny").RECIPE
    config = recipe.config("tiny")
    overrides = config.teacher_overrides
    reference = timm.models.cait.Cait(
        img_size=32, patch_size=overrides["patch_size"], embed_dim=overrides["embed_dim"],
        depth=overrides["depth"], num_heads=overrides["num_heads"], num_classes=3,
        init_values=1e-5,
    ).eval()
    path = str(tmp_path / "cait.pth")
    torch.save(reference.state_dict(), path)
    teacher = runner.load_teacher(recipe, recipe.config("tiny", teacher_weights=path), 3)
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    logits = keras.ops.convert_to_numpy(teacher(images))
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    keras_path = str(tmp_path / "teacher.keras")
    teacher.save(keras_path)
    again = runner.load_teacher(recipe, recipe.config("tiny", teacher_weights=keras_path), 3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(images)), logits, atol=1e-5)
    with pytest.raises(ValueError, match="output classes"):
        runner.load_teacher(recipe, recipe.config("tiny", teacher_weights=keras_path), 10)


def test_missing_teacher_or_data_say_how_to_get_them(image_folder, tmp_path):
    recipe = load_script("deit_tiny").RECIPE
    with pytest.raises(FileNotFoundError, match="cait_s24_224.fb_dist_in1k"):
        runner.run(recipe, recipe.config("tiny", data_dir=image_folder,
                                         output_dir=str(tmp_path / "a")))
    with pytest.raises(FileNotFoundError, match="do not exist.*pretrained=True"):
        runner.run(recipe, recipe.config("tiny", data_dir=image_folder,
                                         teacher_weights=str(tmp_path / "nope.pth"),
                                         output_dir=str(tmp_path / "b")))
    with pytest.raises(FileNotFoundError, match="image-net.org"):
        runner.run(recipe, recipe.config("tiny", data_dir=str(tmp_path / "no_data"),
                                         output_dir=str(tmp_path / "c"), mode="none"))
    # The teacher's weights are settled before the data are touched: no data, still this error.
    with pytest.raises(FileNotFoundError, match="needs a trained teacher"):
        runner.run(recipe, recipe.config("tiny", data_dir=str(tmp_path / "no_data"),
                                         output_dir=str(tmp_path / "d")))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the command line's wiring does not depend on the backend: run once")
def test_the_script_reports_a_missing_teacher(image_folder, tmp_path):
    """The real command line: absl flags parsed by the script, a clear error, exit code 1."""
    done = _run_script("swin_tiny", "--preset=tiny", f"--data_dir={image_folder}",
                       f"--output_dir={tmp_path}")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "swin_small_patch4_window7_224.ms_in1k" in done.stderr
    usage = _run_script("swin_tiny", "--preset=tiny", "--layer_pairs=0-0")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr, usage.stderr
    assert "usage error" in usage.stderr and "student:teacher" in usage.stderr


def _run_script(name, *flags, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", f"{name}.py"), *flags],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the command line's wiring does not depend on the backend: run once")
def test_the_script_refuses_an_output_dir_of_another_run(image_folder, tmp_path):
    """An output dir whose checkpoint was written by another student/mode: exit 1, one line,
    no traceback, nothing touched."""
    checkpoints = tmp_path / "run" / "checkpoints"
    os.makedirs(checkpoints / "ckpt-000000002")
    state = {"global_step": 2, "epoch": 0, "step_in_epoch": 2, "steps_per_epoch": 2,
             "run_info": {"recipe": "deit_tiny", "student": "deit_tiny_patch16_224",
                          "mode": "soft"}}
    atomic_write_json(str(checkpoints / "ckpt-000000002" / "state.json"), state)
    atomic_write_json(str(checkpoints / "latest.json"), {"checkpoint": "ckpt-000000002"})
    done = _run_script("deit_tiny", "--preset=tiny", f"--data_dir={image_folder}",
                       f"--output_dir={tmp_path / 'run'}", "--mode=none", "--verbose=0")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert ("holds a run of another setting (mode: checkpoint 'soft', now 'none'"
            in done.stderr), done.stderr
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoints"]  # nothing written


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the command line's wiring does not depend on the backend: run once")
def test_the_script_stops_on_a_non_finite_loss(image_folder, tmp_path):
    """A learning rate that blows the weights up: exit 1, the step named, the checkpoint of the
    last good step kept."""
    recipe = load_script("deit_tiny").RECIPE
    weights, _ = _teacher_weights(recipe, tmp_path)
    out = tmp_path / "run"
    done = _run_script("deit_tiny", "--preset=tiny", f"--data_dir={image_folder}",
                       f"--teacher_weights={weights}", f"--output_dir={out}", "--lr=1e30",
                       "--steps_per_epoch=4", "--save_every_steps=1", "--ema_decay=0",
                       "--tensorboard=false", "--verbose=0")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("deit_tiny.py: error:")]
    assert len(line) == 1 and "The training loss became" in line[0], done.stderr
    step = int(line[0].split("(global step ")[1].split(")")[0])
    assert step >= 2
    kept = os.path.join(out, "checkpoints", f"ckpt-{step - 1:09d}")
    assert f"The last good checkpoint, {kept}, is kept." in line[0]
    latest = json.load(open(os.path.join(out, "checkpoints", "latest.json")))
    assert latest["checkpoint"] == f"ckpt-{step - 1:09d}"


def test_runs_of_one_seed_start_from_the_same_student_whatever_the_mode(image_folder, tmp_path):
    """The study's paired design rests on it: the student is seeded before the teacher loads."""

    class FirstWeights(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.weights = [np.array(w) for w in self.model.student.get_weights()]

    recipe = TABLE["deit_tiny"]
    weights, _ = _teacher_weights(recipe, tmp_path)
    first = {}
    for mode in ("none", "soft"):
        recorder = FirstWeights()
        config = recipe.config("tiny", data_dir=image_folder, teacher_weights=weights, mode=mode,
                               output_dir=str(tmp_path / mode), steps_per_epoch=1, verbose=0,
                               tensorboard=False, ema_decay=0.0)
        runner.run(recipe, config, callbacks=[recorder])
        first[mode] = recorder.weights
    for a, b in zip(first["none"], first["soft"], strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_precision_the_backend_cannot_run_is_refused_before_any_work(tmp_path):
    recipe = TABLE["deit_tiny"]
    config = recipe.config("tiny", precision="mixed_float16", mode="none",
                           output_dir=str(tmp_path / "run"))
    jax_on_cpu = keras.backend.backend() == "jax" and not runner.accelerators()
    # No data_dir: a run that gets past the precision check stops at the data (docs/errors.md R1).
    expected = "cannot run on the jax backend on CPU" if jax_on_cpu else "No data_dir given"
    with pytest.raises((ValueError, FileNotFoundError), match=expected):
        runner.run(recipe, config)
    assert not os.path.exists(tmp_path / "run" / "config.json")
    for backend in ("tensorflow", "torch"):
        runner.check_precision("mixed_float16", backend, [])  # these run it on CPU
    runner.check_precision("mixed_float16", "jax", ["gpu:0"])
