"""Comparison of profiles: depth-aligned correlation, spectral distance on normalised frequency."""

import numpy as np
import pytest
from analysis_helpers import make_profile

from keras_spectralkd.analysis import compare_profiles
from keras_spectralkd.analysis import profile_correlation
from keras_spectralkd.analysis import spectrum_distance
from keras_spectralkd.analysis.compare import aligned_curves
from keras_spectralkd.analysis.compare import default_pairs
from keras_spectralkd.analysis.compare import pearson


def test_pearson_matches_numpy(rng):
    a, b = rng.normal(size=10), rng.normal(size=10)
    np.testing.assert_allclose(pearson(a, b), np.corrcoef(a, b)[0, 1], rtol=1e-12)
    assert np.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert np.isnan(pearson([1.0], [2.0]))
    with pytest.raises(ValueError, match="shapes"):
        pearson([1.0, 2.0], [1.0, 2.0, 3.0])


def test_shorter_profile_is_interpolated_onto_the_longer_one():
    x24 = np.arange(24) / 23
    x12 = np.arange(12) / 11
    x, a, b = aligned_curves(x24, 2 * x24, x12, 2 * x12)
    np.testing.assert_allclose(x, x24)
    np.testing.assert_allclose(b, 2 * x24, atol=1e-12)  # linear curves interpolate exactly
    x, a, b = aligned_curves(x12, x12, x24, x24)
    np.testing.assert_allclose(x, x24)
    np.testing.assert_allclose(a, x24, atol=1e-12)


def test_profiles_of_one_curve_at_different_depths_correlate_perfectly():
    def u_shape(t):
        return 1.0 + 3.0 * (t - 0.4) ** 2

    teacher = make_profile(u_shape(np.arange(24) / 23), widths=[384] * 24)
    student = make_profile(u_shape(np.arange(12) / 11) * 0.5 + 7.0, widths=[192] * 12)
    # Scale and offset do not matter (widths change heights, SPEC.md 5); interpolating the
    # 12-point curve onto 24 points is not exact for a parabola, hence 1e-3.
    assert profile_correlation(teacher, student) == pytest.approx(1.0, abs=1e-3)
    flipped = make_profile(-u_shape(np.arange(12) / 11) + 10.0, widths=[192] * 12)
    assert profile_correlation(teacher, flipped) == pytest.approx(-1.0, abs=1e-3)
    assert profile_correlation(teacher, student, "magnitude") == pytest.approx(1.0, abs=1e-3)
    assert np.isnan(profile_correlation(teacher, student, "entropy"))  # no entropy computed
    with pytest.raises(ValueError, match="quantity"):
        profile_correlation(teacher, student, "phase")


def test_spectrum_distance_on_normalised_frequency():
    # The same linear spectrum shape sampled at widths 8 and 16 lies on one line: distance 0.
    f8, f16 = np.fft.fftfreq(8)[:4], np.fft.fftfreq(16)[:8]
    assert spectrum_distance(f8, 1 + f8, f16, 1 + f16) == pytest.approx(0.0, abs=1e-12)
    # Scale only: 0 when normalised, not otherwise.
    assert spectrum_distance(f8, 1 + f8, f16, 3 * (1 + f16)) == pytest.approx(0.0, abs=1e-12)
    raw = spectrum_distance(f8, 1 + f8, f16, 3 * (1 + f16), normalize=False)
    np.testing.assert_allclose(raw, np.sqrt(np.mean((2 * (1 + f8)) ** 2)), rtol=1e-12)
    # A known difference on the narrower grid: flat vs flat + bump at one bin.
    bumped = np.ones(8)
    bumped[2] = 9.0
    expected = np.sqrt(np.mean((np.ones(4) - np.interp(f8, f16, bumped)) ** 2))
    np.testing.assert_allclose(
        spectrum_distance(f8, np.ones(4), f16, bumped, normalize=False), expected, rtol=1e-12
    )
    # Symmetric in its arguments.
    assert spectrum_distance(f16, bumped, f8, np.ones(4), normalize=False) == pytest.approx(
        expected
    )
    with pytest.raises(ValueError, match="differ in length"):
        spectrum_distance(f8, np.ones(3), f16, bumped)


def test_default_pairs():
    equal_a, equal_b = make_profile(np.ones(4)), make_profile(np.ones(4))
    assert default_pairs(equal_a, equal_b) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    teacher, student = make_profile(np.arange(24.0)), make_profile(np.arange(12.0))
    pairs = default_pairs(teacher, student)
    assert [s for s, _ in pairs] == list(range(12))
    assert pairs[0] == (0, 0) and pairs[-1] == (11, 23)
    # Nearest relative depth: student unit 5 sits at 5/11 = 0.4545 -> teacher 10 (0.4348) is
    # nearer than 11 (0.4783).
    assert pairs[5] == (5, 10)
    # The other way round (a deeper "other"): one pair per reference unit.
    assert [t for _, t in default_pairs(student, teacher)] == list(range(12))


def test_compare_profiles():
    def decaying(f):
        return np.exp(-8 * f)

    teacher = make_profile(
        np.linspace(1, 2, 24),
        widths=[384] * 24,
        spectrum_fn=decaying,
        entropy=np.linspace(3, 4, 24),
    )
    student = make_profile(
        np.linspace(1, 2, 12),
        widths=[192] * 12,
        spectrum_fn=decaying,
        entropy=np.linspace(3, 4, 12),
    )
    result = compare_profiles(teacher, student, pairs=[(0, 0), (11, 23)])
    assert result.intensity_correlation == pytest.approx(1.0, abs=1e-9)
    assert result.entropy_correlation == pytest.approx(1.0, abs=1e-9)
    assert result.pairs == [(0, 0), (11, 23)]
    # Same spectral shape on normalised frequency, different widths: nearly 0 (interpolation of
    # an exponential between 1/384-spaced bins).
    assert result.spectral_distance < 1e-3
    flat = make_profile(np.linspace(1, 2, 12), widths=[192] * 12)
    assert compare_profiles(teacher, flat).spectral_distance > 0.5
    assert set(result.to_dict()) == {
        "intensity_correlation",
        "entropy_correlation",
        "magnitude_correlation",
        "pairs",
        "pair_distances",
        "spectral_distance",
    }
    with pytest.raises(ValueError, match="not profiled"):
        compare_profiles(teacher, student, pairs=[(12, 0)])
    with pytest.raises(ValueError, match="empty"):
        compare_profiles(teacher, student, pairs=[])
