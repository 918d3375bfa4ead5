"""The built-in demo's whole pipeline on a tiny subset (fake Fashion-MNIST files), and its
command line's one-line errors."""

import json
import os

import numpy as np
from recipe_helpers import load_script, write_fake_fashion_mnist

from keras_spectralkd.analysis.compare import aligned_curves, pearson


def test_demo_pipeline_on_a_tiny_subset(tmp_path, capfd):
    demo = load_script("demo")
    data_dir = write_fake_fashion_mnist(str(tmp_path / "fashion-mnist"))
    teacher_config, student_config = demo.configs(quick=True, data_dir=data_dir,
                                                  train_size=128, validation_size=64)
    output_dir = str(tmp_path / "demo")
    summary = demo.run_demo(output_dir, teacher_config, student_config, profile_images=64)
    console = capfd.readouterr().out

    results = summary["results"]
    assert set(results) == {"teacher", "none", "soft", "soft+spectral"}
    for name, result in results.items():
        # One epoch each: the best epoch is the final one; accuracies count the 64 test images.
        assert result["top1"] == result["best_top1"], name
        assert result["top1"] * 64 == round(result["top1"] * 64), name
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
    assert f"[demo] Fashion-MNIST: the full set from {data_dir}; using 128 train" in console
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
