"""Profiling: every quantity against SPEC.md 5's numpy definitions; streaming equals one batch."""

import json

import keras
import numpy as np
import pytest
from analysis_helpers import NumpyBackbone
from analysis_helpers import WideningBackbone
from analysis_helpers import numpy_channel_spectrum
from analysis_helpers import numpy_entropy
from analysis_helpers import numpy_intensity
from analysis_helpers import numpy_magnitude

from keras_spectralkd import spectral
from keras_spectralkd.analysis import Profile
from keras_spectralkd.analysis import profile_model
from keras_spectralkd.analysis import profile_maps
from keras_spectralkd.analysis.statistics import channel_spectrum_sum
from keras_spectralkd.analysis.statistics import histogram_bin_indices
from keras_spectralkd.analysis.statistics import token_entropy_sum
from keras_spectralkd.models.backbone import normalize_indices


# === The per-batch math ===
@pytest.mark.parametrize("shape", [(2, 3, 4, 8), (1, 2, 2, 7), (3, 5, 1, 1), (2, 14, 14, 192)])
def test_channel_spectrum_matches_numpy_definition(rng, shape):
    x = rng.normal(size=shape).astype(np.float32)
    total, tokens = channel_spectrum_sum(x)
    assert tokens == shape[0] * shape[1] * shape[2]
    np.testing.assert_allclose(total / tokens, numpy_channel_spectrum(x), rtol=1e-12, atol=1e-15)


def test_channel_spectrum_of_a_pure_cosine(rng):
    # x[c] = b + a cos(2 pi f c / C): the DFT / C has |b| at k=0 and a/2 at k=f and C-f only.
    channels, frequency, amplitude, offset = 16, 3, 2.5, -0.7
    c = np.arange(channels)
    token = offset + amplitude * np.cos(2 * np.pi * frequency * c / channels + 0.4)
    x = np.broadcast_to(token, (2, 3, 3, channels)).astype(np.float64)
    profile = profile_maps([x], entropy=False)
    expected = np.zeros(channels)
    expected[0] = abs(offset)
    expected[frequency] = expected[channels - frequency] = amplitude / 2
    np.testing.assert_allclose(profile.spectra[0], expected, atol=1e-12)
    np.testing.assert_allclose(
        profile.intensity[0], (abs(offset) + amplitude) / channels, rtol=1e-12
    )
    # The layer-wise spectrum: first half on fftfreq(C)[:C//2] = k / C.
    np.testing.assert_allclose(profile.normalized_frequency(0), c[: channels // 2] / channels)
    np.testing.assert_allclose(profile.half_spectrum(0), expected[: channels // 2], atol=1e-12)
    # Magnitude: mean |x|.
    np.testing.assert_allclose(profile.magnitude[0], np.abs(token).mean(), rtol=1e-12)


def test_channel_spectrum_agrees_with_the_keras_ops_version(rng):
    x = rng.normal(size=(2, 4, 4, 24)).astype(np.float32)
    profile = profile_maps([x], entropy=False)
    ours = keras.ops.convert_to_numpy(spectral.channel_spectrum(x))
    np.testing.assert_allclose(profile.spectra[0], ours, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(
        profile.intensity[0],
        float(keras.ops.convert_to_numpy(spectral.frequency_intensity(x))),
        rtol=2e-5,
    )


def test_histogram_bins_equal_numpy_histogram(rng):
    values = rng.normal(size=5000)
    low, high = values.min(), values.max()
    edges = np.linspace(low, high, 101)
    # Values exactly on every bin edge stress numpy's +-1 ULP corrections and the closed last bin.
    values = np.concatenate([values, edges, [low, high, high]])
    ours = np.bincount(histogram_bin_indices(values, low, high, 100), minlength=100)
    expected, _ = np.histogram(values, bins=100, range=(low, high))
    np.testing.assert_array_equal(ours, expected)


def test_entropy_of_constructed_tokens():
    # Global range [0, 1], 100 bins. Token 1: 8 values in 8 different bins -> log2(8) = 3 bits.
    # Token 2: all values equal -> 0 bits. Token 3: half 0, half 1 -> 1 bit.
    spread = np.linspace(0.0, 1.0, 8)
    tokens = np.stack([spread, np.full(8, 0.42), np.repeat([0.0, 1.0], 4)])
    x = tokens.reshape(1, 1, 3, 8)
    total, count = token_entropy_sum(x, 0.0, 1.0, 100)
    assert count == 3
    np.testing.assert_allclose(total, 3.0 + 0.0 + 1.0, rtol=1e-12)
    profile = profile_maps([x])
    np.testing.assert_allclose(profile.entropy[0], 4.0 / 3.0, rtol=1e-12)
    assert profile.entropy_ranges == [(0.0, 1.0)]


@pytest.mark.parametrize("bins", [100, 7])
def test_entropy_matches_numpy_definition(rng, bins):
    x = rng.normal(size=(2, 3, 3, 40)) * rng.uniform(0.1, 3.0, size=(2, 3, 3, 1))
    profile = profile_maps([x], entropy_bins=bins)
    np.testing.assert_allclose(profile.entropy[0], numpy_entropy(x, bins), rtol=1e-12)


def test_chunking_over_tokens_does_not_change_the_result(rng, monkeypatch):
    from keras_spectralkd.analysis import statistics

    x = rng.normal(size=(3, 5, 5, 9))
    whole_entropy, _ = token_entropy_sum(x, x.min(), x.max())
    whole_spectrum, _ = channel_spectrum_sum(x)
    monkeypatch.setattr(statistics, "_ENTROPY_CHUNK_TOKENS", 7)
    monkeypatch.setattr(statistics, "_SPECTRUM_CHUNK_TOKENS", 7)
    chunked_entropy, _ = token_entropy_sum(x, x.min(), x.max())
    chunked_spectrum, _ = channel_spectrum_sum(x)
    np.testing.assert_allclose(chunked_entropy, whole_entropy, rtol=1e-12)
    np.testing.assert_allclose(chunked_spectrum, whole_spectrum, rtol=1e-12)


def test_entropy_rejects_values_outside_the_range():
    with pytest.raises(ValueError, match="outside the entropy histogram range"):
        token_entropy_sum(np.array([[[[0.0, 2.0]]]]), 0.0, 1.0)


# === Streaming over a dataset ===
def _reference_profile(model, images):
    """SPEC.md 5 on all images at once (one batch), unit by unit."""
    _, maps = model.forward_intermediates(images)
    maps = [keras.ops.convert_to_numpy(m) for m in maps]
    return {
        "spectra": [numpy_channel_spectrum(m) for m in maps],
        "intensity": [numpy_intensity(m) for m in maps],
        "entropy": [numpy_entropy(m) for m in maps],
        "magnitude": [numpy_magnitude(m) for m in maps],
        "grids": [tuple(m.shape[1:3]) for m in maps],
    }


def _assert_profile_equals(profile, reference, rtol):
    for ours, expected in zip(profile.spectra, reference["spectra"]):
        np.testing.assert_allclose(ours, expected, rtol=rtol, atol=1e-12)
    for field in ("intensity", "entropy", "magnitude"):
        np.testing.assert_allclose(getattr(profile, field), reference[field], rtol=rtol)
    assert profile.grids == reference["grids"]


@pytest.mark.parametrize("batch_size", [1, 3, 7, 50])
def test_streaming_equals_one_batch_definition(numpy_backbone, images, batch_size):
    # The stand-in's maps do not depend on batching, so equality is exact up to float64 sums.
    profile = profile_model(numpy_backbone, images, batch_size=batch_size, verbose=0)
    reference = _reference_profile(numpy_backbone, images)
    _assert_profile_equals(profile, reference, rtol=1e-12)
    assert profile.num_images == 7
    assert profile.units == [0, 1, 2, 3] and profile.depth == 4
    assert profile.num_channels == [6, 8, 12, 5]
    np.testing.assert_allclose(profile.relative_depth, [0, 1 / 3, 2 / 3, 1])
    # The entropy range is the GLOBAL min..max over all images.
    _, maps = numpy_backbone.forward_intermediates(images)
    assert profile.entropy_ranges == [(float(m.min()), float(m.max())) for m in maps]


def test_streaming_runs_two_passes_only_for_the_entropy(numpy_backbone, images):
    profile_model(numpy_backbone, images, batch_size=4, verbose=0)
    assert numpy_backbone.calls == 4  # 2 batches x 2 passes
    numpy_backbone.calls = 0
    profile = profile_model(numpy_backbone, images, batch_size=4, entropy=False, verbose=0)
    assert numpy_backbone.calls == 2
    assert profile.entropy is None and profile.entropy_ranges is None


def test_fixed_entropy_range_needs_one_pass(numpy_backbone, images):
    two_pass = profile_model(numpy_backbone, images, batch_size=3, verbose=0)
    numpy_backbone.calls = 0
    one_pass = profile_model(
        numpy_backbone, images, batch_size=3, entropy_range=two_pass.entropy_ranges, verbose=0
    )
    assert numpy_backbone.calls == 3
    np.testing.assert_allclose(one_pass.entropy, two_pass.entropy, rtol=1e-12)
    # A wider common range is allowed (and changes the binning, hence the entropy).
    wide = profile_model(numpy_backbone, images, entropy_range=(-50.0, 50.0), verbose=0)
    assert np.all(wide.entropy < two_pass.entropy)
    with pytest.raises(ValueError, match="outside the entropy histogram range"):
        profile_model(numpy_backbone, images, entropy_range=(-0.1, 0.1), verbose=0)
    with pytest.raises(ValueError, match="has 2 entries but 4 units"):
        profile_model(numpy_backbone, images, entropy_range=[(0, 1), (0, 1)], verbose=0)


def test_num_images_and_indices(numpy_backbone, images):
    profile = profile_model(
        numpy_backbone, images, num_images=5, batch_size=2, indices=[1, 3], verbose=0
    )
    reference = _reference_profile(NumpyBackbone(), images[:5])
    assert profile.num_images == 5 and profile.units == [1, 3] and profile.depth == 4
    np.testing.assert_allclose(
        profile.intensity, np.asarray(reference["intensity"])[[1, 3]], rtol=1e-12
    )
    np.testing.assert_allclose(profile.relative_depth, [1 / 3, 1])
    last_two = profile_model(numpy_backbone, images, indices=2, entropy=False, verbose=0)
    assert last_two.units == [2, 3]


def test_data_forms(numpy_backbone, images):
    expected = profile_model(numpy_backbone, images, batch_size=3, verbose=0)
    labels = np.arange(7)
    batches = [images[i : i + 3] for i in range(0, 7, 3)]
    forms = {
        "list of batches": batches,
        "(images, labels) tuples": [(b, labels[: len(b)]) for b in batches],
        "dicts": [{"image": b, "label": labels[: len(b)]} for b in batches],
    }
    import tensorflow as tf

    forms["tf.data"] = tf.data.Dataset.from_tensor_slices((images, labels)).batch(3)
    for name, data in forms.items():
        profile = profile_model(numpy_backbone, data, verbose=0)
        np.testing.assert_allclose(profile.entropy, expected.entropy, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(profile.intensity, expected.intensity, rtol=1e-12, err_msg=name)


def test_one_shot_iterators_and_reshuffled_data_are_refused(numpy_backbone, images):
    generator = (images[i : i + 2] for i in range(0, 7, 2))
    with pytest.raises(ValueError, match="one-shot iterator"):
        profile_model(numpy_backbone, generator, verbose=0)
    generator = (images[i : i + 2] for i in range(0, 7, 2))
    profile = profile_model(numpy_backbone, generator, entropy=False, verbose=0)
    assert profile.num_images == 7

    class Reshuffling:
        def __init__(self):
            self.epoch = 0

        def __iter__(self):
            order = np.random.default_rng(self.epoch).permutation(7)
            self.epoch += 1
            return iter([images[order[:4]], images[order[4:]]])

    with pytest.raises(ValueError, match="different images on the entropy pass"):
        profile_model(numpy_backbone, Reshuffling(), verbose=0)


def test_bad_inputs(numpy_backbone, images):
    with pytest.raises(ValueError, match="no `forward_intermediates`"):
        profile_model(object(), images)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\).*\(8, 8, 3\)"):
        profile_model(numpy_backbone, images[0])
    with pytest.raises(ValueError, match="no images"):
        profile_model(numpy_backbone, [], verbose=0)
    with pytest.raises(ValueError, match="num_images"):
        profile_model(numpy_backbone, images, num_images=0)
    with pytest.raises(ValueError, match="out of range"):
        profile_model(numpy_backbone, images, indices=[4])



@pytest.mark.parametrize("indices", [None, 1, 4, [3, 0], (2,), np.array([1, 2])])
def test_indices_follow_the_backbone_rules(numpy_backbone, images, indices):
    # One normaliser for the whole package: the units profiled are the maps a backbone returns.
    profile = profile_model(numpy_backbone, images, indices=indices, entropy=False, verbose=0)
    assert profile.units == normalize_indices(indices, 4)


def test_bad_indices(numpy_backbone, images):
    for bad, error, message in [
        (True, TypeError, "must be None, an int or a sequence"),
        (5, ValueError, "the model has 4 units; expected 1..4"),
        ([-1], ValueError, "out of range"),
        ([], ValueError, "selects no unit"),
    ]:
        with pytest.raises(error, match=message):
            profile_model(numpy_backbone, images, indices=bad, verbose=0)

    class Depthless(NumpyBackbone):
        feature_info = None  # neither feature_info nor num_units: the depth is unknown

    profile = profile_model(Depthless(), images, entropy=False, verbose=0)
    assert profile.units == [0, 1, 2, 3] and profile.depth == 4
    with pytest.raises(ValueError, match="neither `feature_info` nor `num_units`"):
        profile_model(Depthless(), images, indices=[1], verbose=0)

def test_progress_bar(numpy_backbone, images, capsys):
    profile_model(numpy_backbone, images, batch_size=4, verbose=1)
    out = capsys.readouterr().out
    assert "pass 1/2" in out and "pass 2/2" in out and "7/7" in out


def test_keras_backbone_streaming(images):
    # A real Keras model on the current backend: batching may change float32 maps by ~1 ULP, so
    # the comparison with the one-batch definition is to float32 precision.
    model = WideningBackbone(image_size=8, patch_size=2, widths=(6, 8, 12))
    images = images[:6]  # batches of 3 and one of 6: two shapes to compile on JAX
    profile = profile_model(model, images, batch_size=3, verbose=0)
    reference = _reference_profile(model, images)
    _assert_profile_equals(profile, reference, rtol=2e-5)
    assert profile.num_channels == [6, 8, 12] and profile.grids == [(4, 4), (2, 2), (1, 1)]
    assert profile.model_name == model.name


# === The Profile type ===
def _profile(numpy_backbone, images, entropy=True):
    return profile_model(numpy_backbone, images, batch_size=4, entropy=entropy, name="m", verbose=0)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
@pytest.mark.parametrize("entropy", [True, False])
def test_save_and_load_round_trip_exactly(tmp_path, numpy_backbone, images, suffix, entropy):
    profile = _profile(numpy_backbone, images, entropy)
    path = profile.save(tmp_path / "sub" / f"profile{suffix}")
    loaded = Profile.load(path)
    for field in (
        "model_name",
        "depth",
        "units",
        "num_channels",
        "grids",
        "num_images",
        "entropy_bins",
        "entropy_ranges",
    ):
        assert getattr(loaded, field) == getattr(profile, field), field
    for field in ("intensity", "magnitude", "entropy"):
        if getattr(profile, field) is None:
            assert getattr(loaded, field) is None
        else:
            np.testing.assert_array_equal(getattr(loaded, field), getattr(profile, field))
    for a, b in zip(loaded.spectra, profile.spectra):
        np.testing.assert_array_equal(a, b)


def test_file_formats_are_readable_by_other_tools(tmp_path, numpy_backbone, images):
    profile = _profile(numpy_backbone, images)
    data = json.loads(open(profile.save(tmp_path / "p.json")).read())
    assert data["units"][2]["num_channels"] == 12 and len(data["units"][2]["spectrum"]) == 12
    import csv

    lines = open(profile.save(tmp_path / "p.csv")).read().splitlines()
    assert lines[0].startswith("# {")
    rows = list(csv.DictReader(lines[1:]))
    assert [int(r["unit"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[1]["intensity"]) == profile.intensity[1]


def test_profile_validation(tmp_path, numpy_backbone, images):
    profile = _profile(numpy_backbone, images)
    with pytest.raises(ValueError, match="must end in .json or .csv"):
        profile.save(tmp_path / "p.txt")
    with pytest.raises(ValueError, match="fields of other lengths"):
        Profile(
            "m",
            4,
            [0, 1],
            [6, 8],
            [(4, 4), (4, 4)],
            [np.ones(6), np.ones(8)],
            [1.0],
            None,
            [1.0, 1.0],
            3,
        )
    with pytest.raises(ValueError, match="spectrum has shape"):
        Profile("m", 4, [0], [6], [(4, 4)], [np.ones(5)], [1.0], None, [1.0], 3)
    with pytest.raises(ValueError, match="outside 0..3"):
        Profile("m", 4, [4], [6], [(4, 4)], [np.ones(6)], [1.0], None, [1.0], 3)
    with pytest.raises(ValueError, match="Not a keras_spectralkd profile"):
        Profile.from_dict({"format": "other"})


def test_a_real_backbone_matches_its_feature_info(rng):
    from keras_spectralkd import models

    model = models.create(
        "deit_tiny_patch16_224",
        num_classes=3,
        image_size=16,
        patch_size=8,
        embed_dim=12,
        depth=3,
        num_heads=2,
    )
    # One batch shape only: eager JAX compiles every op once per shape.
    images = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
    profile = profile_model(model, images, batch_size=2, verbose=0)
    info = model.feature_info
    assert profile.depth == len(info) == 3
    assert profile.num_channels == [entry["num_chs"] for entry in info]
    assert profile.grids == [tuple(entry["grid"]) for entry in info]
    _assert_profile_equals(profile, _reference_profile(model, images), rtol=2e-5)
