"""SpectralTensorBoard and SpectralTracker with layer pairs given by NAME (issue 23): a functional
CNN teacher, a backbone or a functional ViT-like student; the values against numpy (the
common-band oracle of tests/band_oracle.py) and against the Distiller's own pair losses."""

import os

import keras
import numpy as np
import pytest

from band_oracle import band_bins, band_pair_loss
from keras_spectralkd import Distiller
from keras_spectralkd.callbacks import SpectralTensorBoard, SpectralTracker
from test_callbacks import numpy_intensity, numpy_pool, read_events
from tiny_backbone import TinyBackbone

SIZE = 16
# A backbone student by unit index, the CNN by name: 4x4x8 <- 8x8x32 (the common low band) and
# 4x4x8 <- 4x4x32 (equal grids).
MIXED_PAIRS = [(0, "stage_1"), (2, "stage_2")]
# Both sides by name: the ViT-like student's tokens (a class token first) on its 4x4 grid.
NAMED_PAIRS = [("block_0", "stage_0"), ("block_1", "stage_2")]


def cnn_teacher(name="cnn_teacher"):
    """Three conv stages (16x16x16 with batch norm, 8x8x32, 4x4x32), pooled, 4 classes."""
    images = keras.Input((SIZE, SIZE, 3), name="images")
    x = keras.layers.Conv2D(16, 3, padding="same", name="stage_0_conv")(images)
    x = keras.layers.BatchNormalization(name="stage_0_bn")(x)
    x = keras.layers.Activation("relu", name="stage_0")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu",
                            name="stage_1")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", name="stage_2")(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(images, keras.layers.Dense(4, name="head")(pooled), name=name)


def vit_student(name="vit_student"):
    """Patches of 4 (a 4x4 grid of width 8), a class token first, two residual token-MLP blocks;
    no dropout or batch norm, so training and inference give the same maps."""
    images = keras.Input((SIZE, SIZE, 3), name="images")
    x = keras.layers.Conv2D(8, 4, strides=4, name="patch_embed")(images)
    x = keras.layers.Reshape((16, 8), name="tokens")(x)
    cls = keras.layers.Reshape((1, 8), name="cls_token")(
        keras.layers.Dense(8, name="cls_source")(
            keras.layers.GlobalAveragePooling1D(name="cls_pool")(x)))
    x = keras.layers.Concatenate(axis=1, name="with_cls")([cls, x])
    for i in range(2):
        x = keras.layers.Add(name=f"block_{i}")(
            [x, keras.layers.Dense(8, activation="tanh", name=f"block_{i}_mlp")(x)])
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(images, keras.layers.Dense(4, name="head")(pooled), name=name)


def layer_maps(model, names, images):
    """The named layers' outputs from single-output models (not the package's tap), as
    (B, H, W, C) float64 numpy: token sequences without their class token, on the 4x4 grid."""
    maps = []
    for name in names:
        out = keras.Model(model.inputs[0], model.get_layer(name).output)(images)
        out = np.asarray(keras.ops.convert_to_numpy(out), np.float64)
        maps.append(out[:, 1:].reshape(-1, 4, 4, out.shape[-1]) if out.ndim == 3 else out)
    return maps


def aligned_r(teacher_levels, student_levels):
    """Pearson r over relative depth, the curve of fewer points interpolated onto the other's
    depths (`compare.aligned_curves`' rule), in numpy."""
    def depth(levels):
        return np.linspace(0, 1, len(levels))

    if len(student_levels) > len(teacher_levels):
        teacher = np.interp(depth(student_levels), depth(teacher_levels), teacher_levels)
        return np.corrcoef(teacher, student_levels)[0, 1]
    student = np.interp(depth(teacher_levels), depth(student_levels), student_levels)
    return np.corrcoef(teacher_levels, student)[0, 1]


def band_magnitudes(student_map, teacher_map):
    """`last_spectra`'s three panels in numpy: |F_s|, |F_t| and |F_s - F_t| of the student map
    and the channel-pooled teacher map on the common grid's bins, averaged over images and
    channels, zero vertical frequency in the middle."""
    teacher_map = numpy_pool(teacher_map, student_map.shape[-1])
    grid = (min(student_map.shape[1], teacher_map.shape[1]),
            min(student_map.shape[2], teacher_map.shape[2]))
    fs, ft = band_bins(student_map, grid), band_bins(teacher_map, grid)
    return [np.fft.fftshift(np.abs(f).mean(axis=(0, 3)), axes=0) for f in (fs, ft, fs - ft)]


@pytest.fixture
def data(rng):
    images = rng.normal(size=(8, SIZE, SIZE, 3)).astype(np.float32)
    return images, rng.integers(0, 4, size=8)


@pytest.mark.slow  # two epochs of fit with the callback: about 30 s on JAX (compiles)
def test_tensorboard_with_a_named_cnn_teacher(tmp_path, data):
    """Our backbone by unit index, a functional CNN by name: every value is recomputed in numpy
    from maps read without the package's tap, on SPEC.md 2.1's common band."""
    images, labels = data
    probe = images[:4]
    teacher = cnn_teacher()
    student = TinyBackbone(image_size=SIZE, patch_size=4, width=8, depth=3, name="student")
    distiller = Distiller(teacher, student, layer_pairs=MIXED_PAIRS, mode="soft")
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    callback = SpectralTensorBoard(tmp_path, probe)
    distiller.fit(images, labels, batch_size=4, epochs=2, verbose=0, callbacks=[callback])

    events = read_events(os.path.join(tmp_path, "spectral"))
    names = [f"student_{s:02d}_teacher_{t}" for s, t in MIXED_PAIRS]
    expected = ({f"spectral/student/intensity/unit_{u:02d}" for u in range(3)}
                | {"spectral/teacher/intensity/stage_1", "spectral/teacher/intensity/stage_2"}
                | {f"spectral/pair_loss/{n}" for n in names}
                | {f"spectral/spectrum/{n}" for n in names}
                | {"spectral/pair_loss/mean", "spectral/pair_level_gap",
                   "spectral/profile_correlation", "spectral/intensity_profile"})
    assert expected <= set(events)
    _, student_maps = student.forward_intermediates(probe)
    student_maps = [np.asarray(keras.ops.convert_to_numpy(m), np.float64) for m in student_maps]
    teacher_maps = layer_maps(teacher, ["stage_1", "stage_2"], probe)
    for name, teacher_map in zip(["stage_1", "stage_2"], teacher_maps):
        steps = events[f"spectral/teacher/intensity/{name}"]
        np.testing.assert_allclose(steps[-1][1], numpy_intensity(teacher_map), rtol=1e-5)
        assert steps[0][1] == steps[1][1]  # the frozen teacher, cached
    losses = []
    for name, (s, _), teacher_map in zip(names, MIXED_PAIRS, teacher_maps):
        loss = band_pair_loss(student_maps[s], teacher_map)
        np.testing.assert_allclose(events[f"spectral/pair_loss/{name}"][-1][1], loss, rtol=1e-5)
        for logged, want in zip(callback.last_spectra[f"spectral/spectrum/{name}"],
                                band_magnitudes(student_maps[s], teacher_map)):
            assert logged.shape == (4, 3)  # the common 4x4 grid's bins
            np.testing.assert_allclose(logged, want, rtol=1e-4, atol=1e-7)
        losses.append(loss)
    assert losses[0] > 0
    np.testing.assert_allclose(events["spectral/pair_loss/mean"][-1][1], np.mean(losses),
                               rtol=1e-5)
    np.testing.assert_allclose(
        events["spectral/profile_correlation"][-1][1],
        aligned_r([numpy_intensity(m) for m in teacher_maps],
                                  [numpy_intensity(m) for m in student_maps]), rtol=1e-4)


def test_the_probe_gives_the_distillers_own_pair_losses(tmp_path, data):
    """Both sides by name: the callback's pair losses are the Distiller's spectral terms on the
    same images (its maps, its grid rule), and the tags and profiles carry the layer names."""
    images, _ = data
    teacher, student = cnn_teacher(), vit_student()
    distiller = Distiller(teacher, student, layer_pairs=NAMED_PAIRS, mode="soft")
    callback = SpectralTensorBoard(tmp_path, images[:4])
    callback.set_model(distiller)
    scalars = callback.log_spectra(0)
    distiller.compute_loss(images[:4], np.zeros(4), distiller(images[:4], training=True))
    losses = [float(keras.ops.convert_to_numpy(t.result())) for t in distiller.pair_trackers]
    logged = [scalars[f"spectral/pair_loss/student_{s}_teacher_{t}"] for s, t in NAMED_PAIRS]
    assert min(losses) > 0
    np.testing.assert_allclose(logged, losses, rtol=1e-5, atol=1e-7)
    assert {"spectral/student/intensity/block_0", "spectral/student/intensity/block_1",
            "spectral/teacher/intensity/stage_0",
            "spectral/teacher/intensity/stage_2"} <= set(scalars)
    assert not [tag for tag in scalars if "unit_" in tag]
    # A student given a new layer pair gets a new probe (the pairs key the compiled probe).
    other = Distiller(teacher, student, layer_pairs=[("block_1", "stage_1")], mode="soft")
    callback.set_model(other)
    assert set(callback.log_spectra(1)) >= {"spectral/pair_loss/student_block_1_teacher_stage_1"}


def test_the_tracker_with_named_layers(data):
    images, labels = data
    teacher, student = cnn_teacher(), vit_student()
    distiller = Distiller(teacher, student, layer_pairs=NAMED_PAIRS, mode="soft")
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    tracker = SpectralTracker(teacher, images[:4], NAMED_PAIRS)
    assert tracker.grid_alignment == "low_band"  # the Distiller's default for names
    history = distiller.fit(images, labels, batch_size=4, epochs=1, verbose=0,
                            callbacks=[tracker]).history
    student_maps = layer_maps(student, ["block_0", "block_1"], images[:4])
    teacher_maps = layer_maps(teacher, ["stage_0", "stage_2"], images[:4])
    gap = np.mean([band_pair_loss(s, t) for s, t in zip(student_maps, teacher_maps)])
    np.testing.assert_allclose(history["spectral_gap"][-1], gap, rtol=1e-4)
    assert tracker.profile.layer_names == ["block_0", "block_1"]
    assert tracker.teacher_profile.layer_names == ["stage_0", "stage_2"]
    np.testing.assert_allclose(tracker.profile.intensity,
                               [numpy_intensity(m) for m in student_maps], rtol=1e-5)
    np.testing.assert_allclose(
        history["profile_r"][-1],
        aligned_r([numpy_intensity(m) for m in teacher_maps],
                                  [numpy_intensity(m) for m in student_maps]), rtol=1e-4)
    # The paper's rule, asked for, refuses the 16x16 <- 4x4 pair as the Distiller does.
    strict = SpectralTracker(teacher, images[:4], NAMED_PAIRS, student=student,
                             grid_alignment="equal")
    with pytest.raises(ValueError, match="Spatial grids differ"):
        strict.measure()


def test_what_cannot_be_profiled(tmp_path, data):
    images, _ = data
    teacher = cnn_teacher()
    # A unit index on a model without units: one clear error naming the way out.
    with pytest.raises(ValueError, match="'cnn_teacher' has no `forward_intermediates`; give its "
                                         "side of layer_pairs as layer names"):
        SpectralTracker(teacher, images[:2], [(0, 1)])
    # Logit KD from a CNN, no pairs: nothing of the teacher to profile, the student alone.
    student = TinyBackbone(image_size=SIZE, patch_size=4, width=8, depth=2, name="student")
    callback = SpectralTensorBoard(tmp_path, images[:2])
    callback.set_model(Distiller(teacher, student, mode="soft"))
    assert set(callback.log_spectra(0)) == {"spectral/student/intensity/unit_00",
                                            "spectral/student/intensity/unit_01"}
