"""SpectralTensorBoard (events written during fit, read back with TensorBoard's EventAccumulator)
and SpectralTracker (numbers added to the epoch logs)."""

import os
import re

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.util import tensor_util
from tiny_backbone import TinyBackbone

from keras_spectralkd import Distiller
from keras_spectralkd.callbacks import SpectralTensorBoard, SpectralTracker

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


# Independent of keras_spectralkd: numpy, float64, written from SPEC.md 2 and 5.
def numpy_pool(x, channels):
    x = np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)
    width = x.shape[-1]
    windows = [(i * width // channels, -(-(i + 1) * width // channels)) for i in range(channels)]
    return np.stack([x[..., a:b].mean(-1) for a, b in windows], axis=-1)


def numpy_spectra(student_map, teacher_map):
    s = np.asarray(keras.ops.convert_to_numpy(student_map), dtype=np.float64)
    t = numpy_pool(teacher_map, s.shape[-1])
    # The full 2D DFT, then the non-negative horizontal frequencies: rfft2's half plane.
    fs = np.fft.fft2(s, axes=(1, 2)) / np.sqrt(s.shape[1] * s.shape[2])
    ft = np.fft.fft2(t, axes=(1, 2)) / np.sqrt(s.shape[1] * s.shape[2])
    half = s.shape[2] // 2 + 1
    fs, ft = fs[:, :, :half], ft[:, :, :half]
    loss = np.mean(np.concatenate([(fs - ft).real, (fs - ft).imag]) ** 2)
    magnitudes = [np.abs(f).mean(axis=(0, 3)) for f in (fs, ft, fs - ft)]
    return loss, [np.roll(m, s.shape[1] // 2, axis=0) for m in magnitudes], numpy_intensity(s) - (
        numpy_intensity(t)
    )


def check_spectrum_image(encoded, magnitudes):
    """The logged PNG shows `magnitudes` (student, teacher, difference) as the docs say."""
    import io

    from matplotlib import colormaps
    from matplotlib import image as mpimg

    width, height = int(encoded[0]), int(encoded[1])
    pixels = (mpimg.imread(io.BytesIO(encoded[2]), format="png")[..., :3] * 255).round()
    assert pixels.shape == (height, width, 3)
    rows, columns = magnitudes[0].shape
    scale = height // rows
    assert height == rows * scale and scale >= 192 // rows
    logs = [np.log10(m) for m in magnitudes]
    shared = (min(logs[0].min(), logs[1].min()), max(logs[0].max(), logs[1].max()))
    ranges = (shared, shared, (logs[2].min(), logs[2].max()))
    gap = (width - 3 * columns * scale) // 2
    assert gap > 0
    for panel, (values, (low, high)) in enumerate(zip(logs, ranges)):
        expected = colormaps["magma"]((values - low) / (high - low))[..., :3] * 255
        left = panel * (columns * scale + gap)
        for r in range(rows):
            for c in range(columns):
                # The image's top row is the highest vertical frequency.
                y, x = (rows - 1 - r) * scale + scale // 2, left + c * scale + scale // 2
                np.testing.assert_allclose(pixels[y, x], expected[r, c], atol=2)


def numpy_profile_correlation(teacher_levels, student_levels):
    """Pearson r of the student's levels interpolated onto the teacher's relative depths."""
    teacher_depth = np.linspace(0, 1, len(teacher_levels))
    student_depth = np.linspace(0, 1, len(student_levels))
    return np.corrcoef(teacher_levels, np.interp(teacher_depth, student_depth, student_levels))[0, 1]


def _distiller():
    """(teacher, student, a compiled soft-KD Distiller of the two at PAIRS)."""
    teacher = TinyBackbone(width=8, depth=4, name="teacher")
    student = TinyBackbone(width=4, depth=2, name="student")
    distiller = Distiller(teacher, student, layer_pairs=PAIRS, mode="soft")
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    return teacher, student, distiller


@pytest.fixture
def data(rng):
    images = rng.normal(size=(8, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 4, size=8)
    return images, labels


def test_distiller_training_logs_spectral_panels(tmp_path, data):
    images, labels = data
    teacher, student, distiller = _distiller()
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
        "spectral/pair_level_gap",
        "spectral/spectrum/student_00_teacher_00",
        "spectral/spectrum/student_01_teacher_03",
    }
    assert expected_tags <= set(events)
    for tag in expected_tags:
        assert [step for step, _ in events[tag]] == [0, 1], tag

    # The last epoch's values are those of the trained student on the probe, recomputed here
    # in numpy (float64) from the maps alone.
    _, student_maps = student.forward_intermediates(probe)
    _, teacher_maps = teacher.forward_intermediates(probe)
    student_levels = [numpy_intensity(m) for m in student_maps]
    teacher_levels = [numpy_intensity(m) for m in teacher_maps]
    for unit, level in enumerate(student_levels):
        logged = events[f"spectral/student/intensity/unit_{unit:02d}"][-1][1]
        np.testing.assert_allclose(logged, level, rtol=1e-5)
    for unit, level in enumerate(teacher_levels):
        steps = events[f"spectral/teacher/intensity/unit_{unit:02d}"]
        np.testing.assert_allclose(steps[-1][1], level, rtol=1e-5)
        assert steps[0][1] == steps[1][1]  # the frozen teacher does not move
    losses, level_gaps = [], []
    for s, t in PAIRS:
        name = f"student_{s:02d}_teacher_{t:02d}"
        loss, magnitudes, level_gap = numpy_spectra(student_maps[s], teacher_maps[t])
        np.testing.assert_allclose(events[f"spectral/pair_loss/{name}"][-1][1], loss, rtol=1e-5)
        for logged, expected in zip(callback.last_spectra[f"spectral/spectrum/{name}"], magnitudes):
            np.testing.assert_allclose(logged, expected, rtol=1e-4, atol=1e-7)
        # Each pair's spectrum panel, every epoch: a PNG of three panels side by side, each bin
        # a block of the colour of its log10 magnitude (student and teacher on one range).
        assert [step for step, _ in events[f"spectral/spectrum/{name}"]] == [0, 1]
        check_spectrum_image(events[f"spectral/spectrum/{name}"][-1][1], magnitudes)
        losses.append(loss)
        level_gaps.append(abs(level_gap))
    np.testing.assert_allclose(events["spectral/pair_loss/mean"][-1][1], np.mean(losses), rtol=1e-5)
    np.testing.assert_allclose(
        events["spectral/pair_level_gap"][-1][1], np.mean(level_gaps), rtol=1e-4
    )
    # The student trained between the two epochs, so its panels moved.
    first, last = (v for _, v in events["spectral/student/intensity/unit_01"])
    assert first != last
    np.testing.assert_allclose(
        events["spectral/profile_correlation"][-1][1],
        numpy_profile_correlation(teacher_levels, student_levels),
        rtol=1e-4,
    )

    # The image: a PNG-encoded summary (width, height, bytes) of a real figure.
    _, image = events["spectral/intensity_profile"][-1]
    width, height = int(image[0]), int(image[1])
    assert width >= 400 and height >= 300 and image[2][:4] == b"\x89PNG"

    # The custom-scalars layout, written once; each chart's regex matches series we write.
    layout_events = events["custom_scalars__config__"]
    assert [step for step, _ in layout_events] == [0]
    layout = layout_pb2.Layout.FromString(layout_events[0][1].item())
    charts = {c.title: list(c.multiline.tag) for c in layout.category[0].chart}
    assert layout.category[0].title == "SpectralKD" and len(charts) == 4
    training_tags = ["epoch_spectral_loss", "epoch_spectral_loss_pair_0", "epoch_kd_loss"]
    for title, regexes in charts.items():
        (regex,) = regexes
        pool = training_tags if "training" in title else list(events)
        matched = [tag for tag in pool if re.match(regex, tag)]
        assert matched, (title, regex)
        if "training" in title:
            assert matched == training_tags[:2]
        if "probe" in title:
            assert len(matched) == len(PAIRS) + 1


def decoded(encoded):
    import io

    from matplotlib import image as mpimg

    return (mpimg.imread(io.BytesIO(encoded[2]), format="png")[..., :3] * 255).round()


def test_the_intensity_image_is_the_figure_of_its_epoch(tmp_path, data):
    """The intensity figure is built once and then updated: each logged image is the figure
    `plot_intensity` draws anew from that epoch's profiles (same size, margins and dpi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from keras_spectralkd.analysis import plot_intensity
    from keras_spectralkd.analysis import profile_maps
    from keras_spectralkd.callbacks import _fixed_margins

    images, labels = data
    teacher, student, distiller = _distiller()
    callback = SpectralTensorBoard(tmp_path, images[:4])
    distiller.fit(images, labels, batch_size=4, epochs=2, verbose=0, callbacks=[callback])

    profiles = [
        profile_maps(model.forward_intermediates(images[:4])[1], name=model.name, entropy=False)
        for model in (teacher, student)
    ]
    figure = _fixed_margins(plot_intensity(
        profiles, ["teacher: teacher", "student: student"], layer_pairs=PAIRS,
        title="Frequency intensity, epoch 2",
    ))
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    fresh = np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float64)
    events = read_events(callback.event_dir)
    first, last = (decoded(image) for _, image in events["spectral/intensity_profile"])
    assert last.shape == fresh.shape
    # Equal up to antialiasing: the maps recomputed here differ from the logged ones in float32
    # rounding only, which can move a curve by a tiny fraction of a pixel.
    np.testing.assert_allclose(last, fresh, atol=3)
    assert np.abs(first - fresh).max() > 100  # the first epoch's figure is another picture


def test_the_caches_follow_new_models(tmp_path, data):
    """The teacher's maps and pooled spectra, the compiled probe and the intensity figure are
    kept between logs; a model that is not the one they were made for gets its own."""
    probe = data[0][:4]
    callback = SpectralTensorBoard(tmp_path, probe)
    # The same shapes twice (only the weights differ), then a narrower student.
    for step, student_width in enumerate([4, 4, 2]):
        teacher = TinyBackbone(width=8, depth=4, name="teacher")
        student = TinyBackbone(width=student_width, depth=2, name="student")
        callback.set_model(Distiller(teacher, student, layer_pairs=PAIRS))
        scalars = callback.log_spectra(step)
        _, teacher_maps = teacher.forward_intermediates(probe)
        _, student_maps = student.forward_intermediates(probe)
        for unit, teacher_map in enumerate(teacher_maps):
            np.testing.assert_allclose(
                scalars[f"spectral/teacher/intensity/unit_{unit:02d}"],
                numpy_intensity(teacher_map), rtol=1e-5,
            )
        for unit, student_map in enumerate(student_maps):
            np.testing.assert_allclose(
                scalars[f"spectral/student/intensity/unit_{unit:02d}"],
                numpy_intensity(student_map), rtol=1e-5,
            )
        for s, t in PAIRS:
            name = f"student_{s:02d}_teacher_{t:02d}"
            loss, magnitudes, level_gap = numpy_spectra(student_maps[s], teacher_maps[t])
            np.testing.assert_allclose(scalars[f"spectral/pair_loss/{name}"], loss, rtol=1e-5)
            for logged, expected in zip(callback.last_spectra[f"spectral/spectrum/{name}"],
                                        magnitudes):
                np.testing.assert_allclose(logged, expected, rtol=1e-4, atol=1e-7)
    events = read_events(callback.event_dir)
    sizes = [decoded(v).shape for _, v in events["spectral/intensity_profile"]]
    assert len(sizes) == 3 and len(set(sizes)) == 1


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


def test_the_tracker_logs_the_students_distance_to_its_teacher(tmp_path, data):
    images, labels = data
    teacher, student, distiller = _distiller()
    tracker = SpectralTracker(teacher, images[:4], PAIRS)
    history = distiller.fit(images, labels, batch_size=4, epochs=2, verbose=0,
                            callbacks=[tracker])
    logs = history.history
    assert len(logs["spectral_gap"]) == len(logs["profile_r"]) == len(logs["level_distance"]) == 2
    # The last epoch's numbers, in numpy (float64) from the trained models' maps alone.
    _, student_maps = student.forward_intermediates(images[:4])
    _, teacher_maps = teacher.forward_intermediates(images[:4])
    student_levels = np.array([numpy_intensity(m) for m in student_maps])
    teacher_levels = np.array([numpy_intensity(m) for m in teacher_maps])
    gap = np.mean([numpy_spectra(student_maps[s], teacher_maps[t])[0] for s, t in PAIRS])
    np.testing.assert_allclose(logs["spectral_gap"][-1], gap, rtol=1e-4)
    np.testing.assert_allclose(
        logs["profile_r"][-1], numpy_profile_correlation(teacher_levels, student_levels),
        rtol=1e-4)
    aligned = np.interp(np.linspace(0, 1, 4), np.linspace(0, 1, 2), student_levels)
    np.testing.assert_allclose(
        logs["level_distance"][-1], np.sqrt(np.mean((aligned - teacher_levels) ** 2)), rtol=1e-4)
    np.testing.assert_allclose(tracker.profile.intensity, student_levels, rtol=1e-5)
    # A backbone trained alone is measured too (a control run), and pairs are required.
    assert set(SpectralTracker(teacher, images[:4], PAIRS, student=student).measure()) == {
        "level_distance", "profile_r", "spectral_gap"}
    with pytest.raises(ValueError, match="at least one layer pair"):
        SpectralTracker(teacher, images[:4], [])


def test_one_probe_per_model_raises_no_retracing_warning(data, caplog):
    """A sweep compiles one probe per student; TensorFlow must not take that for retracing."""
    images, _ = data
    teacher = TinyBackbone(width=8, depth=4, name="teacher")
    with caplog.at_level("WARNING", logger="tensorflow"):
        for index in range(7):
            student = TinyBackbone(width=4, depth=2, name=f"student{index}")
            SpectralTracker(teacher, images[:2], PAIRS, student=student).measure()
    assert "retracing" not in caplog.text
