"""Property-based checks (hypothesis) of the input validation: random valid inputs never raise,
random invalid inputs raise ValueError and nothing else (no TypeError, KeyError, shape errors
from deep inside a backend)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_spectralkd import spectral
from keras_spectralkd.analysis import parse_layer_pairs
from keras_spectralkd.distiller import _check_number, normalize_layer_pairs
from keras_spectralkd.models.layers import check_image_size

CHEAP = settings(max_examples=25, deadline=None)
# Every new shape is a new compilation on JAX (about a second each): fewer, smaller examples.
SHAPES = settings(max_examples=10, deadline=None)

units = st.integers(min_value=0, max_value=10_000)
pair_lists = st.lists(st.tuples(units, units), min_size=1, max_size=8)
spaces = st.sampled_from(["", " ", "  "])


def _raises_only_value_error(fn, *args):
    """Calls fn; returns its result, or None if it raised ValueError (anything else fails)."""
    try:
        return fn(*args)
    except ValueError:
        return None


# === parse_layer_pairs ===
@CHEAP
@given(pair_lists, spaces, spaces)
def test_parse_layer_pairs_reads_every_valid_text(pairs, before, after):
    text = ",".join(f"{before}{s}:{t}{after}" for s, t in pairs)
    assert parse_layer_pairs(text) == pairs


@CHEAP
@given(st.text(alphabet="0123456789:,- x", max_size=20))
def test_parse_layer_pairs_rejects_junk_with_value_error(text):
    result = _raises_only_value_error(parse_layer_pairs, text)
    if result is not None:  # the random text happened to be valid: it must round-trip
        assert all(s >= 0 and t >= 0 for s, t in result)
        assert parse_layer_pairs(",".join(f"{s}:{t}" for s, t in result)) == result


@CHEAP
@given(st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=3), st.just("")))
def test_parse_layer_pairs_rejects_non_text(value):
    with pytest.raises(ValueError):
        parse_layer_pairs(value)


# === image size and patch checks ===
patches = st.integers(min_value=1, max_value=32)


@CHEAP
@given(patches, st.integers(min_value=1, max_value=20), st.integers(min_value=1, max_value=20),
       st.booleans())
def test_valid_image_sizes_pass(patch, rows, cols, as_pair):
    size = (rows * patch, cols * patch) if as_pair else rows * patch
    expected = (rows * patch, cols * patch) if as_pair else (rows * patch, rows * patch)
    assert check_image_size(size, patch, f"patch_size={patch}") == expected


bad_sizes = st.one_of(
    st.integers(max_value=0),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.none(),
    st.booleans(),
    st.lists(st.integers(min_value=1, max_value=64), min_size=0, max_size=4).filter(
        lambda sides: len(sides) != 2),
    st.tuples(st.integers(min_value=1, max_value=64), st.floats()),
)


@CHEAP
@given(bad_sizes, patches)
def test_invalid_image_sizes_raise_value_error(size, patch):
    with pytest.raises(ValueError, match="image_size"):
        check_image_size(size, patch, f"patch_size={patch}")


@CHEAP
@given(st.integers(min_value=2, max_value=16), st.integers(min_value=1, max_value=40))
def test_sizes_that_the_patch_does_not_divide_raise_value_error(patch, size):
    if size % patch == 0:
        size += 1
    with pytest.raises(ValueError, match=f"multiple of {patch}"):
        check_image_size(size, patch, f"patch_size={patch}")


# === the spectral loss's shape handling ===
dims = st.integers(min_value=1, max_value=4)


@SHAPES
@given(dims, dims, dims, dims, st.integers(min_value=0, max_value=4))
def test_spectral_loss_takes_every_valid_pair_of_shapes(batch, height, width, student_c, extra):
    rng = np.random.default_rng(0)
    student = rng.normal(size=(batch, height, width, student_c)).astype("float32")
    teacher = rng.normal(size=(batch, height, width, student_c + extra)).astype("float32")
    loss = float(spectral.spectral_pair_loss(student, teacher))
    assert np.isfinite(loss) and loss >= 0


@SHAPES
@given(st.lists(dims, min_size=1, max_size=5), st.lists(dims, min_size=1, max_size=5))
def test_spectral_loss_rejects_bad_shapes_with_value_error(student_shape, teacher_shape):
    student_shape, teacher_shape = tuple(student_shape), tuple(teacher_shape)
    valid = (len(student_shape) == len(teacher_shape) == 4
             and student_shape[:3] == teacher_shape[:3]
             and student_shape[3] <= teacher_shape[3])
    student = np.zeros(student_shape, "float32")
    teacher = np.zeros(teacher_shape, "float32")
    if valid:
        assert float(spectral.spectral_pair_loss(student, teacher)) == 0.0
    else:
        with pytest.raises(ValueError):
            spectral.spectral_pair_loss(student, teacher)


# === Distiller arguments ===

# (name, low, high, keyword bounds) as the Distiller checks them
NUMBERS = [("alpha", 0.0, 1.0, {}), ("beta", 0.0, None, {}),
           ("temperature", 0.0, None, {"low_open": True}),
           ("label_smoothing", 0.0, 1.0, {"high_open": True})]


@CHEAP
@given(st.sampled_from(NUMBERS), st.floats(allow_nan=True, allow_infinity=True))
def test_numbers_pass_inside_their_range_and_raise_value_error_naming_them_outside(spec, value):
    name, low, high, bounds = spec
    inside = (np.isfinite(value) and value >= low and (value > low or not bounds.get("low_open"))
              and (high is None or value < high or (value == high and not bounds.get("high_open"))))
    if inside:
        assert _check_number(name, value, low, high, **bounds) == value
    else:
        with pytest.raises(ValueError, match=f"`{name}` must be"):
            _check_number(name, value, low, high, **bounds)


@CHEAP
@given(st.sampled_from(NUMBERS),
       st.one_of(st.booleans(), st.text(max_size=4), st.none(), st.lists(st.floats(), max_size=2)))
def test_non_numbers_raise_value_error_naming_the_argument(spec, value):
    name, low, high, bounds = spec
    with pytest.raises(ValueError, match=f"`{name}` must be a number"):
        _check_number(name, value, low, high, **bounds)


@CHEAP
@given(st.lists(st.integers(min_value=0, max_value=40), unique=True, max_size=6),
       st.lists(st.integers(min_value=0, max_value=40), unique=True, max_size=6))
def test_increasing_int_pairs_pass(student_units, teacher_units):
    count = min(len(student_units), len(teacher_units))
    pairs = list(zip(sorted(student_units)[:count], sorted(teacher_units)[:count]))
    assert normalize_layer_pairs(pairs) == pairs
    assert normalize_layer_pairs([[np.int64(s), t] for s, t in pairs]) == pairs


junk_units = st.one_of(st.integers(min_value=-5, max_value=5),
                       st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                       st.text(max_size=2))
junk_pairs = st.one_of(st.tuples(junk_units, junk_units), st.lists(junk_units, max_size=3),
                       junk_units)


@CHEAP
@given(st.one_of(st.lists(junk_pairs, max_size=4), junk_units, st.tuples(junk_units, junk_units)))
def test_layer_pairs_junk_raises_value_error_only(layer_pairs):
    result = _raises_only_value_error(normalize_layer_pairs, layer_pairs)
    if result is not None:  # valid by chance: per side non-negative ints or non-empty names
        for side in zip(*result):
            assert (all(type(u) is int and u >= 0 for u in side)
                    or all(type(u) is str and u for u in side)), result
