"""The built-in demo's whole pipeline on a tiny subset (fake Fashion-MNIST files)."""

import json
import os

import numpy as np
from recipe_helpers import load_script, write_fake_fashion_mnist


def test_demo_pipeline_on_a_tiny_subset(tmp_path):
    demo = load_script("demo")
    data_dir = write_fake_fashion_mnist(str(tmp_path / "fashion-mnist"))
    config = demo.DemoConfig.quick(str(tmp_path / "demo"), data_dir=data_dir)
    summary = demo.run_demo(config)

    results = summary["results"]
    assert set(results) == {"teacher", "no_kd", "soft_kd", "spectral_kd"}
    for name, result in results.items():
        assert 0.0 <= result["top1"] <= 1.0, name
        assert 0.0 <= result["best_top1"] <= 1.0, name
    for name in ("no_kd", "soft_kd", "spectral_kd"):
        correlation = results[name]["profile_correlation"]
        assert np.isnan(correlation) or -1.0 <= correlation <= 1.0
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
