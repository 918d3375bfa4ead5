"""SpectralTensorBoard: events written during fit, read back with TensorBoard's EventAccumulator."""

import os

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util
from tiny_backbone import TinyBackbone

from keras_spectralkd import Distiller
from keras_spectralkd import spectral
from keras_spectralkd.callbacks import SpectralTensorBoard

PAIRS = [(0, 0), (1, 3)]


def read_events(event_dir):
    accumulator = EventAccumulator(event_dir, size_guidance={"tensors": 0})
    accumulator.Reload()
    events = {}
    for tag in accumulator.Tags()["tensors"]:
        events[tag] = [
            (e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)
        ]
    return events


def numpy_intensity(feature_map):
    x = np.asarray(keras.ops.convert_to_numpy(feature_map), dtype=np.float64)
    return np.abs(np.fft.fft(x, axis=-1) / x.shape[-1]).mean()


@pytest.fixture
def data(rng):
    images = rng.normal(size=(8, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 4, size=8)
    return images, labels


def test_distiller_training_logs_spectral_panels(tmp_path, data):
    images, labels = data
    teacher = TinyBackbone(width=8, depth=4, name="teacher")
    student = TinyBackbone(width=4, depth=2, name="student")
    distiller = Distiller(teacher, student, layer_pairs=PAIRS, mode="soft")
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    probe = images[:4]
    callback = SpectralTensorBoard(tmp_path, probe, every_n_epochs=1)
    distiller.fit(images, labels, batch_size=4, epochs=2, verbose=0, callbacks=[callback])

    events = read_events(os.path.join(tmp_path, "spectral"))
    expected_tags = {
        "spectral/intensity_profile",
        "spectral/student/intensity/unit_00",
        "spectral/student/intensity/unit_01",
        "spectral/teacher/intensity/unit_00",
        "spectral/teacher/intensity/unit_03",
        "spectral/pair_loss/student_00_teacher_00",
        "spectral/pair_loss/student_01_teacher_03",
        "spectral/pair_loss/mean",
        "spectral/profile_correlation",
    }
    assert expected_tags <= set(events)
    for tag in expected_tags:
        assert [step for step, _ in events[tag]] == [0, 1], tag

    # The last epoch's values are those of the trained student on the probe.
    _, student_maps = student.forward_intermediates(probe)
    _, teacher_maps = teacher.forward_intermediates(probe)
    for unit, feature_map in enumerate(student_maps):
        logged = events[f"spectral/student/intensity/unit_{unit:02d}"][-1][1]
        np.testing.assert_allclose(logged, numpy_intensity(feature_map), rtol=1e-5)
    for unit, feature_map in enumerate(teacher_maps):
        steps = events[f"spectral/teacher/intensity/unit_{unit:02d}"]
        np.testing.assert_allclose(steps[-1][1], numpy_intensity(feature_map), rtol=1e-5)
        assert steps[0][1] == steps[1][1]  # the frozen teacher does not move
    losses = []
    for s, t in PAIRS:
        expected = float(
            keras.ops.convert_to_numpy(
                spectral.spectral_pair_loss(student_maps[s], teacher_maps[t])
            )
        )
        logged = events[f"spectral/pair_loss/student_{s:02d}_teacher_{t:02d}"][-1][1]
        np.testing.assert_allclose(logged, expected, rtol=1e-5)
        losses.append(expected)
    np.testing.assert_allclose(events["spectral/pair_loss/mean"][-1][1], np.mean(losses), rtol=1e-5)
    # The student trained between the two epochs, so its panels moved.
    first, last = (v for _, v in events["spectral/student/intensity/unit_01"])
    assert first != last
    correlation = events["spectral/profile_correlation"][-1][1]
    assert -1.0 <= correlation <= 1.0

    # The image: a PNG-encoded summary (width, height, bytes) of a real figure.
    _, image = events["spectral/intensity_profile"][-1]
    width, height = int(image[0]), int(image[1])
    assert width >= 600 and height >= 400 and image[2][:4] == b"\x89PNG"


def test_every_n_epochs_and_a_plain_backbone(tmp_path, data):
    images, labels = data
    model = TinyBackbone(width=4, depth=3, name="plain")
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    callback = SpectralTensorBoard(tmp_path, images[:2], every_n_epochs=2)
    model.fit(images, labels, batch_size=4, epochs=3, verbose=0, callbacks=[callback])
    events = read_events(callback.event_dir)
    assert set(events) == {
        "spectral/intensity_profile",
        "spectral/model/intensity/unit_00",
        "spectral/model/intensity/unit_01",
        "spectral/model/intensity/unit_02",
    }
    assert [step for step, _ in events["spectral/model/intensity/unit_00"]] == [1]


def test_a_distiller_without_teacher_logs_the_student_alone(tmp_path, data):
    images, labels = data
    distiller = Distiller(None, TinyBackbone(width=4, depth=2, name="student"), mode="none")
    callback = SpectralTensorBoard(tmp_path, images[:2])
    callback.set_model(distiller)
    scalars = callback.log_spectra(0)
    assert set(scalars) == {
        "spectral/student/intensity/unit_00",
        "spectral/student/intensity/unit_01",
    }
    assert "spectral/intensity_profile" in read_events(callback.event_dir)


def test_bad_arguments(tmp_path, data):
    images, _ = data
    with pytest.raises(ValueError, match=r"\(B, H, W, C\).*\(8, 3\)"):
        SpectralTensorBoard(tmp_path, images[0, 0])
    with pytest.raises(ValueError, match="every_n_epochs"):
        SpectralTensorBoard(tmp_path, images, every_n_epochs=0)
    callback = SpectralTensorBoard(tmp_path, images)
    callback.set_model(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten()]))
    with pytest.raises(ValueError, match="needs a Distiller"):
        callback.log_spectra(0)
