"""The runner's `cache_teacher`: the training stream carries each image's cached teacher
outputs through the (seed, epoch) shuffle, so a run logs the losses of the online teacher."""

import dataclasses

import numpy as np
from recipe_helpers import write_fake_fashion_mnist


def test_runner_streams_cached_outputs_in_the_shuffled_order(tmp_path, monkeypatch):
    """A run with `cache_teacher` logs the same losses, epoch by epoch, as the online teacher:
    each batch's cached rows belong to its images after the (seed, epoch) shuffle."""
    from keras_spectralkd.recipes import runner, sweep
    from keras_spectralkd.recipes.table import RECIPES

    monkeypatch.setenv("KERAS_SPECTRALKD_FASHION_MNIST_DIR",
                       write_fake_fashion_mnist(tmp_path / "fm", num_train=256, num_test=128))
    teacher_config, student_config = sweep.miniature(quick=True, student_changes=[
        ("verbose", 0), ("epochs", 2), ("tensorboard", False)])
    teacher_config = dataclasses.replace(teacher_config, output_dir=str(tmp_path / "t"))
    teacher_summary = runner.run(RECIPES["fashion_mnist_teacher"], teacher_config)
    histories = {}
    for cached in (False, True):
        config = dataclasses.replace(
            student_config, mode="soft", cache_teacher=cached, seed=3,
            teacher_weights=teacher_summary["student"], output_dir=str(tmp_path / f"s{cached}"))
        histories[cached] = runner.run(RECIPES["fashion_mnist"], config)["history"]
    for online, cached in zip(histories[False], histories[True]):
        for key in ("loss", "kd_loss", "spectral_loss", "val_loss"):
            np.testing.assert_allclose(cached[key], online[key], rtol=2e-4, err_msg=key)
