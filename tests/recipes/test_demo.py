"""The built-in demo's whole pipeline on a tiny subset (fake Fashion-MNIST files)."""

import json
import os

import numpy as np
from recipe_helpers import load_script, write_fake_fashion_mnist

from keras_spectralkd.analysis.compare import aligned_curves, pearson


def test_demo_pipeline_on_a_tiny_subset(tmp_path, capfd):
    demo = load_script("demo")
    data_dir = write_fake_fashion_mnist(str(tmp_path / "fashion-mnist"))
    config = demo.DemoConfig.quick(str(tmp_path / "demo"), data_dir=data_dir)
    config.verbose = 2  # what a user sees: Keras' one line per epoch, the demo's own lines
    summary = demo.run_demo(config)
    console = capfd.readouterr().out

    results = summary["results"]
    assert set(results) == {"teacher", "no_kd", "soft_kd", "spectral_kd"}
    for name, result in results.items():
        # One epoch each: the best epoch is the final one; accuracies count the 64 test images.
        assert result["top1"] == result["best_top1"], name
        assert result["top1"] * 64 == round(result["top1"] * 64), name
    # The reported profile correlation is Pearson's r of the depth-aligned L(X) curves.
    teacher_intensity = np.array(summary["teacher_intensity"])
    teacher_depth = np.linspace(0, 1, len(teacher_intensity))
    for name in ("no_kd", "soft_kd", "spectral_kd"):
        student_intensity = np.array(results[name]["intensity"])
        _, a, b = aligned_curves(teacher_depth, teacher_intensity,
                                 np.linspace(0, 1, len(student_intensity)), student_intensity)
        np.testing.assert_allclose(results[name]["profile_correlation"], pearson(a, b),
                                   equal_nan=True)
        assert results[name]["spectral_gap"] > 0
    # The guideline's pairs: first and last units at least, student units within its depth.
    pairs = summary["layer_pairs"]
    assert pairs[0] == [0, 0] and pairs[-1] == [config.student["depth"] - 1,
                                                 config.teacher["depth"] - 1]
    assert len(summary["teacher_intensity"]) == config.teacher["depth"]
    for path in summary["plots"].values():
        assert os.path.getsize(path) > 0, path
    for name in ("teacher", "no_kd", "soft_kd", "spectral_kd"):
        assert os.listdir(os.path.join(summary["tensorboard"], name)), name
    assert os.listdir(os.path.join(summary["tensorboard"], "spectral_kd", "spectral"))
    saved = json.load(open(os.path.join(config.output_dir, "results.json")))
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
