"""The built-in demo's whole pipeline on a small part of the subset shipped with the package (real
images: the models must learn), and its command line's one-line errors."""

import dataclasses
import json
import math
import os

import numpy as np
import pytest
from recipe_helpers import load_script

from keras_spectralkd.analysis.compare import aligned_curves, pearson


@pytest.mark.slow
def test_demo_pipeline_on_a_small_subset(tmp_path, capfd, monkeypatch):
    demo = load_script("demo")
    # A fresh machine: the real images of the subset shipped with the package.
    empty = tmp_path / "no-fashion-mnist"
    empty.mkdir()
    monkeypatch.setenv("KERAS_SPECTRALKD_FASHION_MNIST_DIR", str(empty))
    teacher_config, student_config = demo.configs(quick=True, train_size=2048,
                                                  validation_size=256, teacher_epochs=2,
                                                  student_epochs=2)
    # The quick models learn in so few steps with a larger rate and no warmup.
    teacher_config, student_config = (dataclasses.replace(c, lr=3e-3, warmup_epochs=0)
                                      for c in (teacher_config, student_config))
    output_dir = str(tmp_path / "demo")
    summary = demo.run_demo(output_dir, teacher_config, student_config, profile_images=64)
    console = capfd.readouterr().out

    results = summary["results"]
    assert set(results) == {"teacher", "none", "soft", "soft+spectral"}
    # Every model learns: five binomial standard errors above chance (10%) on 256 test images.
    above_chance = 0.1 + 5 * math.sqrt(0.1 * 0.9 / 256)
    for name, result in results.items():
        assert result["top1"] > above_chance, (name, result["top1"])
        # Accuracies count the 256 test images.
        assert result["top1"] * 256 == round(result["top1"] * 256), name
        assert result["best_top1"] >= result["top1"], name
    # The spectral term pulls the SpectralKD student's paired maps towards the teacher's.
    assert results["soft+spectral"]["spectral_gap"] < results["none"]["spectral_gap"]
    # The reported profile correlation is Pearson's r of the depth-aligned L(X) curves.
    teacher_intensity = np.array(summary["teacher_intensity"])
    teacher_depth = np.linspace(0, 1, len(teacher_intensity))
    for name in ("none", "soft", "soft+spectral"):
        student_intensity = np.array(results[name]["intensity"])
        _, a, b = aligned_curves(teacher_depth, teacher_intensity,
                                 np.linspace(0, 1, len(student_intensity)), student_intensity)
        np.testing.assert_allclose(results[name]["profile_r"], pearson(a, b), equal_nan=True)
        assert results[name]["spectral_gap"] > 0
    # The guideline's pairs: first and last units at least, student units within its depth.
    pairs = summary["layer_pairs"]
    student_depth = student_config.student_overrides["depth"]
    teacher_depth = teacher_config.student_overrides["depth"]
    assert pairs[0] == [0, 0] and pairs[-1] == [student_depth - 1, teacher_depth - 1]
    assert len(summary["teacher_intensity"]) == teacher_depth
    for path in summary["plots"].values():
        assert os.path.getsize(path) > 0, path
    # Every model is a normal run folder of the engine, with its TensorBoard logs.
    for run in ("teacher", "runs/seed0-none", "runs/seed0-soft", "runs/seed0-soft+spectral"):
        for name in ("summary.json", "config.json", "student.keras", "checkpoints/latest.json"):
            assert os.path.exists(os.path.join(output_dir, run, name)), (run, name)
        assert os.listdir(os.path.join(output_dir, run, "tensorboard")), run
    assert os.listdir(os.path.join(output_dir, "runs/seed0-soft+spectral/tensorboard/spectral"))
    saved = json.load(open(os.path.join(output_dir, "results.json")))
    assert saved["layer_pairs"] == pairs
    table = demo.format_table(summary)
    for label in ("teacher (CaiT, CE)", "student, no KD", "student, soft KD",
                  "student, SpectralKD", "tensorboard --logdir"):
        assert label in table

    # The console: the data source in one line, and only the loss terms each run uses.
    assert "the subset shipped with the package" in console and "using 2048 train" in console
    assert "kd_loss: 0.0000e+00" not in console and "spectral_loss: 0.0000e+00" not in console
    sections = console.split("[demo] 4/4")
    assert "ce_loss" in sections[0] and "kd_loss" not in sections[0]  # the teacher: CE only
    assert "kd_loss" not in sections[1] and "spectral_loss" not in sections[1]  # no KD
    assert "kd_loss" in sections[2] and "spectral_loss" not in sections[2]  # soft KD
    assert "spectral_loss" in sections[3]  # SpectralKD

    # A second demo in the same folder reads every finished run back.
    again = demo.run_demo(output_dir, teacher_config, student_config, profile_images=64)
    assert "teacher reused" in capfd.readouterr().out
    assert again["results"]["soft+spectral"]["top1"] == results["soft+spectral"]["top1"]


def test_demo_command_line_errors_are_one_line(tmp_path, capsys):
    demo = load_script("demo")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert demo.main([f"--output_dir={blocker}/demo", "--quick"]) == 1
    error = capsys.readouterr().err
    assert "demo.py: error:" in error and str(blocker) in error
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert demo.main(["--train_size=0", f"--output_dir={tmp_path}/x"]) == 2
    error = capsys.readouterr().err
    assert "train_size=0 is not valid" in error and len(error.splitlines()) == 1
    assert demo.main(["--epochs=3"]) == 2
    assert "unrecognized arguments: --epochs=3" in capsys.readouterr().err
