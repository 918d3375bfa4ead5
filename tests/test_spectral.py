"""keras_spectralkd.spectral against numpy and the torch reference oracle (SPEC.md 2, 5)."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import torch_objective as ref  # tests/torch_objective.py: the PyTorch oracle
from backend_grad import jit, value_and_grads
from keras_spectralkd import spectral

RTOL = 1e-5

# (student shape, teacher shape): DeiT and Swin widths, odd and even W, batch 1, equal widths.
PAIR_SHAPES = [
    ((2, 14, 14, 192), (2, 14, 14, 384)),
    ((3, 7, 7, 5), (3, 7, 7, 13)),
    ((2, 5, 7, 4), (2, 5, 7, 8)),  # odd W
    ((2, 6, 8, 6), (2, 6, 8, 9)),  # even W, non-divisible ratio
    ((1, 4, 4, 3), (1, 4, 4, 3)),  # batch 1, no pooling
    ((2, 28, 28, 96), (2, 28, 28, 96)),
]


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def assert_close(actual, expected, rtol=RTOL, atol=0.0):
    np.testing.assert_allclose(numpy(actual), expected, rtol=rtol, atol=atol)


def random(rng, shape):
    return rng.standard_normal(shape).astype("float32")


# === rfft2 ===
@pytest.mark.parametrize("shape", [(2, 14, 14, 8), (3, 7, 7, 5), (1, 6, 9, 4), (2, 5, 8, 3), (1, 1, 1, 2)])
def test_rfft2_matches_numpy_ortho(rng, shape):
    x = random(rng, shape)
    real, imag = spectral.rfft2(x)
    expected = np.fft.rfft2(x, axes=(1, 2), norm="ortho")
    assert tuple(real.shape) == shape[:2] + (shape[2] // 2 + 1, shape[3])
    scale = np.abs(expected).max()
    np.testing.assert_allclose(numpy(real), expected.real, atol=RTOL * scale)
    np.testing.assert_allclose(numpy(imag), expected.imag, atol=RTOL * scale)


@settings(max_examples=12, deadline=None)
@given(
    batch=st.integers(1, 3),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    channels=st.integers(1, 6),
)
def test_rfft2_matches_numpy_on_any_shape(batch, height, width, channels):
    x = np.random.default_rng(batch * 1000 + height * 100 + width * 10 + channels).standard_normal(
        (batch, height, width, channels)
    ).astype("float32")
    real, imag = spectral.rfft2(x)
    expected = np.fft.rfft2(x, axes=(1, 2), norm="ortho")
    np.testing.assert_allclose(numpy(real), expected.real, atol=2e-6 * max(1, np.abs(x).max()))
    np.testing.assert_allclose(numpy(imag), expected.imag, atol=2e-6 * max(1, np.abs(x).max()))


# === channel pooling ===
@pytest.mark.parametrize("in_channels,out_channels", [(384, 192), (13, 5), (9, 6), (7, 3), (768, 96), (5, 5), (6, 1)])
def test_pool_channels_matches_torch_adaptive_pool(rng, in_channels, out_channels):
    x = random(rng, (2, 3, 4, in_channels))
    expected = ref.pool_channels(ref.to_nchw(x), out_channels).permute(0, 2, 3, 1).numpy()
    assert_close(spectral.pool_channels(x, out_channels), expected, atol=1e-6)


def test_pooling_matrix_windows_follow_floor_ceil_rule():
    matrix = spectral.channel_pooling_matrix(13, 5)
    for i in range(5):
        start, end = (i * 13) // 5, -((-(i + 1) * 13) // 5)
        column = matrix[:, i]
        assert np.allclose(column[start:end], 1.0 / (end - start))
        assert np.count_nonzero(column) == end - start
    # Overlapping windows for a non-divisible ratio: channel 2 feeds outputs 0 and 1.
    assert matrix[2, 0] > 0 and matrix[2, 1] > 0


# === the loss ===
@pytest.mark.parametrize("student_shape,teacher_shape", PAIR_SHAPES)
def test_pair_loss_matches_torch_reference(rng, student_shape, teacher_shape):
    student, teacher = random(rng, student_shape), random(rng, teacher_shape)
    expected = ref.spectral_pair_loss(ref.to_nchw(student), ref.to_nchw(teacher)).item()
    assert_close(spectral.spectral_pair_loss(student, teacher), expected)


@pytest.mark.parametrize("student_shape,teacher_shape", PAIR_SHAPES)
def test_pair_loss_equals_fft_free_identity(rng, student_shape, teacher_shape):
    """Unitarity: sum over rfft2 bins of |X|^2 = (||D||^2 + ||col_0||^2 + ||col_nyq||^2) / 2."""
    student, teacher = random(rng, student_shape), random(rng, teacher_shape)
    pooled = ref.pool_channels(ref.to_nchw(teacher), student_shape[-1]).permute(0, 2, 3, 1).numpy()
    diff = (student - pooled).astype(np.float64)
    batch, height, width, channels = diff.shape
    col_0 = diff.sum(axis=2) / np.sqrt(width)
    energy = np.sum(diff**2) + np.sum(col_0**2)
    if width % 2 == 0:
        signs = (-1.0) ** np.arange(width)
        col_nyq = np.einsum("bhwc,w->bhc", diff, signs) / np.sqrt(width)
        energy += np.sum(col_nyq**2)
    expected = (energy / 2) / (2 * batch * channels * height * (width // 2 + 1))
    assert_close(spectral.spectral_pair_loss(student, teacher), expected)


def test_alignment_loss_is_unweighted_mean_of_pairs(rng):
    students = [random(rng, (2, 7, 7, 6)), random(rng, (2, 4, 4, 6)), random(rng, (2, 7, 7, 3))]
    teachers = [random(rng, (2, 7, 7, 12)), random(rng, (2, 4, 4, 6)), random(rng, (2, 7, 7, 9))]
    total, pairs = spectral.spectral_alignment_loss(students, teachers, return_pair_losses=True)
    expected_total, expected_pairs = ref.spectral_alignment_loss(
        [ref.to_nchw(s) for s in students], [ref.to_nchw(t) for t in teachers]
    )
    assert len(pairs) == 3
    for ours, theirs in zip(pairs, expected_pairs):
        assert_close(ours, theirs.item())
    assert_close(total, expected_total.item())
    assert_close(spectral.spectral_alignment_loss(students, teachers), expected_total.item())


def test_token_sequences_with_grid_equal_maps(rng):
    student, teacher = random(rng, (2, 14, 14, 6)), random(rng, (2, 14, 14, 12))
    as_maps = spectral.spectral_pair_loss(student, teacher)
    as_tokens = spectral.spectral_pair_loss(
        student.reshape(2, 196, 6), teacher.reshape(2, 196, 12), grid=(14, 14)
    )
    assert_close(as_tokens, float(numpy(as_maps)))


def test_loss_is_zero_for_identical_maps_and_positive_otherwise(rng):
    x = random(rng, (2, 5, 5, 4))
    assert float(numpy(spectral.spectral_pair_loss(x, x))) == 0.0
    assert float(numpy(spectral.spectral_pair_loss(x, x + 0.1))) > 0.0


def test_loss_keeps_phase(rng):
    """A spatially shifted copy has the same magnitude spectrum but a different loss."""
    x = random(rng, (1, 8, 8, 4))
    shifted = np.roll(x, 1, axis=2)
    assert np.allclose(
        np.abs(np.fft.rfft2(x, axes=(1, 2))), np.abs(np.fft.rfft2(shifted, axes=(1, 2))), atol=1e-4
    )
    assert float(numpy(spectral.spectral_pair_loss(x, shifted))) > 1e-3


def test_gradients_match_torch_autograd(rng):
    student, teacher = random(rng, (2, 7, 6, 5)), random(rng, (2, 7, 6, 13))
    value, (grad_student, grad_teacher) = value_and_grads(
        lambda s, t: spectral.spectral_pair_loss(s, t), [student, teacher]
    )
    s_t = ref.to_nchw(student).requires_grad_(True)
    t_t = ref.to_nchw(teacher).requires_grad_(True)
    expected = ref.spectral_pair_loss(s_t, t_t)
    expected.backward()
    np.testing.assert_allclose(value, expected.item(), rtol=RTOL)
    for ours, theirs in ((grad_student, s_t.grad), (grad_teacher, t_t.grad)):
        theirs = theirs.permute(0, 2, 3, 1).numpy()
        assert np.all(np.isfinite(ours))
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=RTOL * np.abs(theirs).max())


def test_loss_under_jit_equals_eager(rng):
    student, teacher = random(rng, (2, 14, 14, 8)), random(rng, (2, 14, 14, 16))
    eager = float(numpy(spectral.spectral_alignment_loss([student], [teacher])))
    compiled = jit(lambda s, t: spectral.spectral_alignment_loss([s], [t]))
    np.testing.assert_allclose(float(numpy(compiled(student, teacher))), eager, rtol=RTOL)


def test_loss_is_float32_for_low_precision_inputs(rng):
    student, teacher = random(rng, (2, 7, 7, 4)), random(rng, (2, 7, 7, 8))
    low_s = keras.ops.cast(student, "bfloat16")
    low_t = keras.ops.cast(teacher, "bfloat16")
    loss = spectral.spectral_pair_loss(low_s, low_t)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    expected = ref.spectral_pair_loss(
        ref.to_nchw(numpy(keras.ops.cast(low_s, "float32"))),
        ref.to_nchw(numpy(keras.ops.cast(low_t, "float32"))),
    ).item()
    assert_close(loss, expected)


# === bad input ===
@pytest.mark.parametrize(
    "student_shape,teacher_shape,message",
    [
        ((2, 7, 7, 16), (2, 7, 7, 8), "wider than the teacher"),
        ((2, 7, 7, 8), (2, 14, 14, 8), "Spatial grids differ"),
        ((2, 7, 8), (2, 7, 7, 8), "token sequence"),
        ((2, 7, 7, 8, 1), (2, 7, 7, 8), "rank 5"),
    ],
)
def test_pair_loss_rejects_bad_shapes(rng, student_shape, teacher_shape, message):
    with pytest.raises(ValueError, match=message) as error:
        spectral.spectral_pair_loss(random(rng, student_shape), random(rng, teacher_shape))
    assert str(student_shape[:2])[:-1] in str(error.value) or "rank" in str(error.value)


def test_token_grid_mismatch_is_reported(rng):
    with pytest.raises(ValueError, match=r"196 tokens.*grid=\(7, 7\)"):
        spectral.spectral_pair_loss(random(rng, (2, 196, 4)), random(rng, (2, 196, 4)), grid=(7, 7))


def test_alignment_loss_rejects_bad_lists(rng):
    x = random(rng, (1, 4, 4, 2))
    with pytest.raises(ValueError, match="2 student maps but 1 teacher"):
        spectral.spectral_alignment_loss([x, x], [x])
    with pytest.raises(ValueError, match="at least one pair"):
        spectral.spectral_alignment_loss([], [])


# === analysis transforms ===
@pytest.mark.parametrize("shape", [(2, 14, 14, 192), (3, 7, 7, 5), (2, 50, 7)])
def test_channel_spectrum_matches_numpy(rng, shape):
    x = random(rng, shape) * 3 + 1
    channels = shape[-1]
    expected = np.abs(np.fft.fft(x, axis=-1) / channels).mean(axis=tuple(range(len(shape) - 1)))
    assert_close(spectral.channel_spectrum(x), expected, atol=1e-6)
    assert_close(spectral.frequency_intensity(x), expected.mean())


def test_channel_spectrum_of_a_known_cosine():
    """cos(2 pi k0 c / C) along channels has S[k0] = S[C - k0] = 1/2 and zero elsewhere."""
    channels, k0 = 16, 3
    wave = np.cos(2 * np.pi * k0 * np.arange(channels) / channels).astype("float32")
    x = np.broadcast_to(wave, (2, 4, 4, channels)).copy()
    spectrum = numpy(spectral.channel_spectrum(x))
    expected = np.zeros(channels)
    expected[k0] = expected[channels - k0] = 0.5
    np.testing.assert_allclose(spectrum, expected, atol=1e-6)
    np.testing.assert_allclose(float(numpy(spectral.frequency_intensity(x))), 1.0 / channels, rtol=1e-5)
