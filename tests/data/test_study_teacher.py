"""The study's teacher shipped with the package (keras_spectralkd/data/fashion_mnist_teacher/):
it loads on every backend as the study preset's CaiT and scores what its README says on the
first 1000 test images (a damaged or swapped file fails)."""

import json
import os

import keras
import numpy as np
import pytest

from keras_spectralkd.recipes.table import STUDY_TEACHER, STUDY_TEACHER_PATH


def test_shipped_study_teacher_loads_and_scores(tmp_path, monkeypatch):
    from keras_spectralkd.data import fashion_mnist

    with open(os.path.join(os.path.dirname(STUDY_TEACHER_PATH), "teacher.json")) as f:
        record = json.load(f)
    model = keras.saving.load_model(STUDY_TEACHER_PATH, compile=False)
    assert model.count_params() == record["params"]
    assert model.feature_info[0]["num_chs"] == STUDY_TEACHER["embed_dim"]
    assert model.num_units == STUDY_TEACHER["depth"]
    monkeypatch.setenv(fashion_mnist.DIR_ENV_VAR, str(tmp_path))  # the embedded test set
    data = fashion_mnist.fashion_mnist_data(image_size=28, validation_size=1000, augment=False,
                                            eval_batch_size=250)
    images = np.concatenate([np.asarray(x) for x, _ in data.validation])
    labels = np.concatenate([np.asarray(y) for _, y in data.validation])
    logits = keras.ops.convert_to_numpy(model.predict(images, batch_size=250, verbose=0))
    top1 = float(np.mean(logits.argmax(-1) == labels))
    assert top1 == pytest.approx(record["top1_first_1000_test"], abs=0.003)
