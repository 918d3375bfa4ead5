"""SPEC.md 2.1's common-band rule for maps on different grids (`grid_alignment="low_band"`)."""

import keras
import numpy as np
import pytest

from band_oracle import band_pair_loss  # tests/band_oracle.py: the rule in numpy float64
from keras_spectralkd import spectral


def loss(student, teacher, grid_alignment="low_band"):
    return float(keras.ops.convert_to_numpy(
        spectral.spectral_pair_loss(student, teacher, grid_alignment=grid_alignment)))


@pytest.mark.parametrize("student_shape, teacher_shape", [
    ((2, 4, 4, 6), (2, 8, 8, 12)),  # teacher finer, even sizes
    ((2, 7, 5, 4), (2, 14, 10, 8)),  # odd coarse sizes
    ((2, 6, 9, 3), (2, 5, 4, 6)),  # the student finer on both axes
    ((2, 8, 3, 4), (2, 3, 8, 4)),  # finer on one axis each: the band is 3x3
])
def test_the_band_loss_matches_the_numpy_oracle(rng, student_shape, teacher_shape):
    student = rng.standard_normal(student_shape).astype("float32")
    teacher = rng.standard_normal(teacher_shape).astype("float32")
    np.testing.assert_allclose(loss(student, teacher), band_pair_loss(student, teacher), rtol=1e-5)


def test_on_equal_grids_the_band_is_the_papers_loss(rng):
    student = rng.standard_normal((2, 6, 5, 4)).astype("float32")
    teacher = rng.standard_normal((2, 6, 5, 8)).astype("float32")
    assert loss(student, teacher) == loss(student, teacher, "equal")


def test_a_band_limited_map_and_its_subsampling_agree(rng):
    """Content below the coarse grid's Nyquist, sampled on 8x8 and on every other point: the
    two maps are the same picture at two rates, and the band loss sees no difference."""
    spectrum = np.zeros((2, 8, 8, 3), complex)
    low = np.abs(np.fft.fftfreq(8) * 8) < 2  # frequencies an exact 4x4 subsampling keeps
    spectrum[:, low[:, None] & low[None, :]] = (rng.standard_normal((2, 9, 3))
                                                 + 1j * rng.standard_normal((2, 9, 3)))
    fine = np.real(np.fft.ifft2(spectrum, axes=(1, 2))).astype("float32")
    coarse = fine[:, ::2, ::2]
    assert loss(coarse, fine) < 1e-12 and loss(fine[:, :, :, :3], coarse) < 1e-12
    unrelated = rng.standard_normal(fine.shape).astype("float32")
    assert loss(coarse, unrelated) > 1e-3


def test_the_equal_rule_still_refuses_different_grids():
    with pytest.raises(ValueError, match="Spatial grids differ"):
        loss(np.zeros((1, 4, 4, 2), "float32"), np.zeros((1, 8, 8, 2), "float32"), "equal")
