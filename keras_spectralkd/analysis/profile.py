"""Spectral profiling of a backbone over a dataset (SPEC.md section 5).

`profile_model(model, data)` runs any model that follows the backbone protocol
(`forward_intermediates(images, indices, training) -> (logits, maps)`, maps (B, h, w, C)), or
`profile_model(model, data, layer_names=[...])` any functional Keras model at the named layers
(through `keras_spectralkd.taps`, the Distiller's reader: the same layouts, the same one
forward), over an iterable of image batches and returns a `Profile`: per unit,

- the channel spectrum S[k] = mean over images and tokens of |DFT_C(x)[k]| / C, k = 0..C-1
  (numpy: `np.abs(np.fft.fft(X, axis=-1) / C).mean(axis=(0, 1, 2))`);
- the frequency intensity L(X) = mean_k S[k] ("Eq. 5"; one number per unit, the profile);
- the channel entropy: per token, the Shannon entropy (bits) of the 100-bin histogram of its C
  channel values over the unit's global [min, max], averaged over tokens and images;
- the mean activation magnitude mean|X|.

Streaming. Nothing is kept across batches but per-unit sums, so memory does not grow with the
number of images. Every quantity except the entropy is a mean over tokens (or values), hence a
token-count-weighted running sum. The entropy's histogram range is the GLOBAL min..max of the
unit's features over all analysed images, which is only known at the end; the rule here is two
passes over the data: pass 1 accumulates everything else and each unit's min and max, pass 2
re-runs the model and accumulates per-token entropies on the now fixed range. The result equals
the one-batch definition exactly (tested). The cost is a second forward pass; `entropy=False`
skips it, and `entropy_range=` (e.g. another profile's `entropy_ranges`, to compare two models on
one binning) fixes the range so one pass suffices. Pass 2 checks that the data yields the same
images again (a reshuffling tf.data pipeline would not) and fails loudly otherwise.

All accumulation is float64 numpy on the maps brought back with `keras.ops.convert_to_numpy`:
the analysis is not part of the training graph, and float64 keeps the running sums exact enough
that streaming and one-batch results agree to ~1e-12.

This module is the driver (running the model, the two passes); the per-batch math and its running
sums are in `statistics`, the `Profile` record and its files in `record`, and the accepted forms
of `data` in `batches`.
"""

import contextlib

import keras
import numpy as np

from keras_spectralkd.analysis.batches import iterate_images
from keras_spectralkd.analysis.batches import to_float_array
from keras_spectralkd.analysis.record import Profile
from keras_spectralkd.analysis.statistics import DEFAULT_ENTROPY_BINS
from keras_spectralkd.analysis.statistics import UnitStatistics
from keras_spectralkd.models.backbone import normalize_indices
from keras_spectralkd.taps import FeatureTap
from keras_spectralkd.taps import spatial_layer_names


# === Profiling ===
def profile_model(
    model,
    data,
    *,
    indices=None,
    layer_names=None,
    num_images=None,
    batch_size=32,
    entropy=True,
    entropy_bins=DEFAULT_ENTROPY_BINS,
    entropy_range=None,
    name=None,
    verbose=1,
):
    """Runs `model` over `data` in inference mode and returns its spectral `Profile`.

    Args:
        model: a backbone: `forward_intermediates(images, indices, training=False)` returning
            `(logits, maps)`, maps (B, h, w, C). `feature_info` (a list, one entry per unit) or
            `num_units` gives the depth; without either, the depth is the number of maps (and
            `indices` must be None). Or, with `layer_names`, any functional Keras model.
        data: image batches (B, H, W, 3), channels-last, already preprocessed: a (N, H, W, 3)
            array (split into `batch_size` batches), a `tf.data.Dataset`, or any iterable of
            batches. A batch may also be a tuple/list (images first, e.g. `(images, labels)`) or
            a dict with an `"images"` or `"image"` key.
        indices: the units to profile (None: all), as in `forward_intermediates`.
        layer_names: profile these layers of a functional `model` instead (any Keras model:
            (B, H, W, C) or (B, C, H, W) maps, (B, N, C) token sequences; `keras_spectralkd.taps`
            says how each becomes a map). The profile's units are then the positions 0..len-1
            in this list, its depth is their number, and `Profile.layer_names` keeps the names.
        num_images: stop after this many images (None: all of `data`).
        batch_size: batch size when `data` is one array.
        entropy: compute the channel entropy (a second pass over `data`, see the module doc).
        entropy_bins: histogram bins (SPEC.md 5: 100).
        entropy_range: None (each unit's global min..max, two passes), or a fixed (low, high)
            for every unit, or a list of per-unit (low, high) (e.g. `other.entropy_ranges`).
            With a fixed range, values outside it are an error.
        name: `Profile.model_name` (default: the model's `name`).
        verbose: 1 shows a progress bar per pass, 0 is silent.
    Returns:
        A `Profile`.
    """
    forward, layer_names = _forward_function(model, indices, layer_names)
    if num_images is not None and int(num_images) < 1:
        raise ValueError(f"`num_images` must be >= 1 or None; got {num_images}.")
    if int(entropy_bins) < 1:
        raise ValueError(f"`entropy_bins` must be >= 1; got {entropy_bins}.")
    if layer_names is None:
        depth = _model_depth(model)
        units = _profiled_units(model, indices, depth)
    else:
        depth, units = len(layer_names), list(range(len(layer_names)))
    if entropy and entropy_range is None and iter(data) is data:
        raise ValueError(
            "The channel entropy needs two passes over `data` (global min..max first), but "
            f"`data` is a one-shot iterator ({type(data).__name__}). Pass a re-iterable "
            "(array, list, tf.data.Dataset), a fixed `entropy_range`, or `entropy=False`."
        )

    two_pass = entropy and entropy_range is None
    stats = None
    ranges = None
    fingerprints = []
    seen = 0
    for images, maps in _forward_batches(
        forward, model, data, units, num_images, batch_size, verbose,
        "pass 1/2" if two_pass else None,
    ):
        if units is None:
            units = list(range(len(maps)))
        if depth is None:
            depth = max(units) + 1
        if stats is None:
            stats = [UnitStatistics(unit, m.shape[-1]) for unit, m in zip(units, maps)]
            if entropy and not two_pass:
                ranges = _fixed_entropy_ranges(entropy_range, units)
        fingerprints.append(_fingerprint(images))
        seen += images.shape[0]
        _add_maps(stats, maps, ranges, entropy_bins)
    if stats is None:
        raise ValueError("`data` yielded no images; nothing to profile.")

    if two_pass:
        ranges = [(stat.minimum, stat.maximum) for stat in stats]
        batches = _forward_batches(
            forward, model, data, units, num_images, batch_size, verbose, "pass 2/2"
        )
        for batch_index, (images, maps) in enumerate(batches):
            expected = fingerprints[batch_index] if batch_index < len(fingerprints) else None
            if _fingerprint(images) != expected:
                raise ValueError(
                    "`data` yielded different images on the entropy pass than on the first pass "
                    f"(batch {batch_index}); the two-pass entropy needs the same images in the "
                    "same order. Disable shuffling (or reshuffle_each_iteration=False), or pass "
                    "`entropy=False`."
                )
            for stat, feature_map, value_range in zip(stats, maps, ranges):
                stat.add_entropy(feature_map, value_range, entropy_bins)
        if stats[0].entropy_tokens != stats[0].num_tokens:
            raise ValueError(
                f"`data` yielded fewer images on the entropy pass than the {seen} of pass 1."
            )

    name = name if name is not None else getattr(model, "name", type(model).__name__)
    profile = _finish_profile(stats, units, depth, name, seen, entropy, entropy_bins, ranges)
    profile.layer_names = layer_names
    return profile


def _forward_function(model, indices, layer_names):
    """`(forward, layer_names)`: `forward(images, units) -> maps` through the named layers' tap
    or the backbone protocol; the names as a list, or None."""
    if layer_names is not None:
        if isinstance(layer_names, str):
            layer_names = [layer_names]
        layer_names = list(layer_names)
        if not layer_names:
            raise ValueError("`layer_names` is empty; name at least one layer to profile.")
        if indices is not None:
            raise ValueError(
                f"Pass `indices` (units of a backbone) or `layer_names` (layers of a functional "
                f"model), not both; got indices={indices!r} and layer_names={layer_names!r}."
            )
        tap = FeatureTap(model, layer_names, "model")
        return (lambda images, units: tap(images, training=False)[1]), layer_names
    if not hasattr(model, "forward_intermediates"):
        spatial = spatial_layer_names(model) if getattr(model, "inputs", None) else []
        hint = (f" or name its layers with `layer_names` (its layers with a spatial output: "
                f"{', '.join(spatial[:20])}{', ...' if len(spatial) > 20 else ''}; "
                f"{len(spatial)} in all)" if spatial else "")
        raise ValueError(
            f"{type(model).__name__} {getattr(model, 'name', '')!r} has no "
            "`forward_intermediates`; expected a backbone that follows the protocol of "
            f"keras_spectralkd.models.backbone{hint}."
        )

    def forward(images, units):
        return model.forward_intermediates(images, indices=units, training=False)[1]

    return forward, None


def profile_maps(
    maps, units=None, depth=None, name="model", entropy=True, entropy_bins=DEFAULT_ENTROPY_BINS
):
    """The `Profile` of maps already computed (one batch; no model run).

    Used where the maps are at hand anyway (e.g. `SpectralTensorBoard`, which also needs them for
    the pair losses). Same definitions as `profile_model`; the entropy range is each map's own
    min..max.

    Args:
        maps: list of (B, h, w, C) arrays or backend tensors, one per unit.
        units: their unit indices (default 0..len(maps)-1).
        depth: the model's total number of units (default max(units) + 1).
        name: `Profile.model_name`.
        entropy: compute the channel entropy.
        entropy_bins: histogram bins.
    Returns:
        A `Profile`.
    """
    maps = [to_float_array(m) for m in maps]
    if not maps:
        raise ValueError("`maps` is empty; expected one (B, h, w, C) map per unit.")
    units = list(range(len(maps))) if units is None else [int(u) for u in units]
    if len(units) != len(maps):
        raise ValueError(f"Got {len(maps)} maps but {len(units)} units ({units}).")
    depth = max(units) + 1 if depth is None else int(depth)
    stats = [UnitStatistics(unit, m.shape[-1]) for unit, m in zip(units, maps)]
    ranges = [(float(m.min()), float(m.max())) for m in maps] if entropy else None
    _add_maps(stats, maps, ranges, entropy_bins)
    return _finish_profile(
        stats, units, depth, name, maps[0].shape[0], entropy, entropy_bins, ranges
    )


def _add_maps(stats, maps, ranges, entropy_bins):
    """Adds one batch's maps to the units' sums; the entropy too when `ranges` is given."""
    for position, (stat, feature_map) in enumerate(zip(stats, maps)):
        stat.add(feature_map)
        if ranges is not None:
            stat.add_entropy(feature_map, ranges[position], entropy_bins)


def _finish_profile(stats, units, depth, name, num_images, entropy, entropy_bins, ranges):
    spectra = [stat.spectrum_sum / stat.num_tokens for stat in stats]
    return Profile(
        model_name=name,
        depth=depth,
        units=units,
        num_channels=[len(s) for s in spectra],
        grids=[stat.grid for stat in stats],
        spectra=spectra,
        intensity=[s.mean() for s in spectra],
        entropy=[stat.entropy_sum / stat.entropy_tokens for stat in stats] if entropy else None,
        magnitude=[stat.abs_sum / stat.num_values for stat in stats],
        num_images=num_images,
        entropy_bins=int(entropy_bins),
        entropy_ranges=ranges,
    )


def _fixed_entropy_ranges(entropy_range, units):
    ranges = list(entropy_range)
    if len(ranges) == 2 and all(np.isscalar(v) for v in ranges):
        ranges = [tuple(ranges)] * len(units)
    if len(ranges) != len(units):
        raise ValueError(
            f"`entropy_range` has {len(ranges)} entries but {len(units)} units are profiled "
            f"({units}); expected one (low, high) or one per unit."
        )
    result = []
    for unit, value_range in zip(units, ranges):
        low, high = (float(v) for v in value_range)
        if not low <= high:
            raise ValueError(f"Unit {unit}: entropy range ({low}, {high}) has low > high.")
        result.append((low, high))
    return result


def _fingerprint(images):
    return (images.shape, float(np.sum(images, dtype=np.float64)))


def _model_depth(model):
    info = getattr(model, "feature_info", None)
    if info is not None:
        return len(info)
    units = getattr(model, "num_units", None)
    return int(units) if units is not None else None


def _profiled_units(model, indices, depth):
    """The unit indices to profile, by the backbone's own rules (`normalize_indices`); None when
    the model does not say its depth and `indices` is None (then learnt from the first batch)."""
    if depth is None:
        if indices is None:
            return None
        raise ValueError(
            f"`indices`={indices!r} needs the model's number of units, but "
            f"{type(model).__name__} has neither `feature_info` nor `num_units`; pass "
            "indices=None (every unit) or give the model one of them."
        )
    units = normalize_indices(indices, depth)
    if not units:
        raise ValueError(f"`indices`={indices!r} selects no unit; expected at least one.")
    return units


def no_grad():
    """Inference without an autograd tape where the backend keeps one by default (torch)."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def _forward_batches(forward, model, data, units, num_images, batch_size, verbose, label):
    """Yields (images (B, H, W, 3) float32 numpy, [maps as float32 numpy]) per batch;
    `forward(images, units) -> maps` runs the model."""
    progbar = None
    if verbose:
        target = num_images
        if target is None and len(getattr(data, "shape", ())) == 4:
            target = int(data.shape[0])
        if label:
            print(f"Profiling {getattr(model, 'name', type(model).__name__)} ({label})")
        progbar = keras.utils.Progbar(target, unit_name="image")
    seen = 0
    for images in iterate_images(data, batch_size):
        if num_images is not None:
            if seen >= num_images:
                break
            images = images[: num_images - seen]
        with no_grad():
            maps = forward(images, units)
        maps = [to_float_array(m) for m in maps]
        seen += images.shape[0]
        if progbar is not None:
            progbar.update(seen)
        yield images, maps
