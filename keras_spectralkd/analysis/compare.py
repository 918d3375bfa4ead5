"""Comparing two spectral profiles: the numbers behind "distilled students mirror their teachers".

Two models (teacher and student, or one model before and after training) rarely have the same
depth or width, so the comparison aligns them on two normalised axes:

- Depth: each unit sits at relative depth unit / (depth - 1) in [0, 1] (first unit 0, last 1).
  The profile with fewer units is linearly interpolated onto the relative depths of the other,
  and the Pearson correlation of the two intensity curves is taken over those points. Pearson is
  invariant to scale and offset, which matters: for noise-like features L(X) scales like
  1/sqrt(C) (SPEC.md 5), so profiles of different widths are compared by shape, not height.
  The same is offered for the entropy and the magnitude.
- Frequency: a unit's layer-wise spectrum S[k], k = 0..C//2-1, lives on the normalised
  frequencies k / C in [0, 0.5). Two units of different widths are compared on the frequency
  grid of the narrower one, the wider spectrum linearly interpolated onto it. The distance is
  the root-mean-square difference of the two spectra, each first divided by its mean over those
  bins (shape only, for the same 1/sqrt(C) reason); `normalize=False` compares raw heights.

Pairs of units are the given layer pairs (e.g. the Distiller's `(student_unit, teacher_unit)`),
or by default: unit i with unit i for equal depths, else each unit of the shallower profile with
the unit of the deeper one nearest in relative depth.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class ProfileComparison:
    """How close `other` is to `reference` (see the module doc for the definitions).

    Attributes:
        intensity_correlation: Pearson r of the depth-aligned intensity profiles (nan when a
            profile is constant or has a single unit).
        entropy_correlation: same for the channel entropy (nan if either lacks entropy).
        magnitude_correlation: same for mean |X|.
        pairs: the (other_unit, reference_unit) pairs whose spectra were compared.
        pair_distances: per pair, the RMS distance of the spectra on normalised frequency.
        spectral_distance: mean of `pair_distances`.
    """

    intensity_correlation: float
    entropy_correlation: float
    magnitude_correlation: float
    pairs: list
    pair_distances: list
    spectral_distance: float

    def to_dict(self):
        return {
            "intensity_correlation": float(self.intensity_correlation),
            "entropy_correlation": float(self.entropy_correlation),
            "magnitude_correlation": float(self.magnitude_correlation),
            "pairs": [list(p) for p in self.pairs],
            "pair_distances": [float(d) for d in self.pair_distances],
            "spectral_distance": float(self.spectral_distance),
        }


def aligned_curves(reference_depth, reference_values, other_depth, other_values):
    """Puts two curves over relative depth on common points; returns (x, reference, other).

    The curve with fewer points is linearly interpolated onto the relative depths of the other
    (equal counts: the reference's points). Relative depths must be increasing.
    """
    reference_depth, reference_values, other_depth, other_values = (
        np.asarray(v, dtype=np.float64)
        for v in (reference_depth, reference_values, other_depth, other_values)
    )
    for name, x in (("reference", reference_depth), ("other", other_depth)):
        if len(x) > 1 and np.any(np.diff(x) <= 0):
            raise ValueError(f"The {name} profile's relative depths are not increasing: {x}.")
    if len(other_depth) > len(reference_depth):
        x = other_depth
        return x, np.interp(x, reference_depth, reference_values), other_values
    x = reference_depth
    return x, reference_values, np.interp(x, other_depth, other_values)


def profile_correlation(reference, other, quantity="intensity"):
    """Pearson r of two profiles' `quantity` ("intensity", "entropy", "magnitude") over depth.

    Returns nan when it is undefined (a constant curve, fewer than 2 points, missing entropy).
    """
    if quantity not in ("intensity", "entropy", "magnitude"):
        raise ValueError(
            f"`quantity` must be 'intensity', 'entropy' or 'magnitude'; got {quantity!r}."
        )
    if getattr(reference, quantity) is None or getattr(other, quantity) is None:
        return float("nan")
    return pearson(*_aligned_profiles(reference, other, quantity))


def level_distance(reference, other):
    """RMS difference of two profiles' L(X) over relative depth (aligned as in
    `profile_correlation`).

    Unlike the correlation it sees the level, so it includes the 1/sqrt(C) width effect of
    SPEC.md 5: compare it across students of one width, not to zero.
    """
    a, b = _aligned_profiles(reference, other, "intensity")
    return float(np.sqrt(np.mean((b - a) ** 2)))


def _aligned_profiles(reference, other, quantity):
    """Two profiles' `quantity` on `aligned_curves`' common depths: (reference, other)."""
    return aligned_curves(
        reference.relative_depth, getattr(reference, quantity),
        other.relative_depth, getattr(other, quantity),
    )[1:]


def pearson(a, b):
    """Pearson correlation of two equal-length vectors; nan if either is constant or too short."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"Cannot correlate vectors of shapes {a.shape} and {b.shape}.")
    if a.size < 2:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    if denominator == 0 or not np.isfinite(denominator):
        return float("nan")
    return float((a * b).sum() / denominator)


def spectrum_distance(frequency_a, spectrum_a, frequency_b, spectrum_b, normalize=True):
    """RMS distance of two layer-wise spectra on normalised frequency.

    Args:
        frequency_a, spectrum_a: normalised frequencies (increasing, in [0, 0.5)) and S values.
        frequency_b, spectrum_b: the same for the other layer (any width).
        normalize: divide each spectrum by its mean over the compared bins first (shape only).
    Returns:
        sqrt(mean over the narrower layer's bins of (a - b)^2), the wider spectrum interpolated.
    """
    frequency_a, spectrum_a, frequency_b, spectrum_b = (
        np.asarray(v, dtype=np.float64) for v in (frequency_a, spectrum_a, frequency_b, spectrum_b)
    )
    if len(frequency_a) != len(spectrum_a) or len(frequency_b) != len(spectrum_b):
        raise ValueError(
            "Frequencies and spectra differ in length: "
            f"{len(frequency_a)} vs {len(spectrum_a)}, {len(frequency_b)} vs {len(spectrum_b)}."
        )
    if len(frequency_a) == 0 or len(frequency_b) == 0:
        raise ValueError("Cannot compare an empty spectrum (a layer with C < 2 channels).")
    # The narrower grid lies inside the wider one's range (up to 1/(2C) for odd widths, where
    # np.interp holds the last value), so no frequency is extrapolated beyond a bin.
    if len(frequency_a) <= len(frequency_b):
        a, b = spectrum_a, np.interp(frequency_a, frequency_b, spectrum_b)
    else:
        a, b = np.interp(frequency_b, frequency_a, spectrum_a), spectrum_b
    if normalize:
        a = a / a.mean() if a.mean() != 0 else a
        b = b / b.mean() if b.mean() != 0 else b
    return float(np.sqrt(np.mean((a - b) ** 2)))


def default_pairs(reference, other):
    """(other_unit, reference_unit) pairs: i with i for equal depths, else nearest relative depth.

    Each unit of the profile with fewer units is paired with the unit of the other profile
    nearest to it in relative depth (ties to the shallower unit), so every pair is unique on the
    shorter side.
    """
    if list(reference.units) == list(other.units) and reference.depth == other.depth:
        return [(u, u) for u in other.units]
    ref_depth, other_depth = reference.relative_depth, other.relative_depth
    if len(other.units) <= len(reference.units):
        return [(unit, reference.units[int(np.argmin(np.abs(ref_depth - x)))])
                for unit, x in zip(other.units, other_depth)]
    return [(other.units[int(np.argmin(np.abs(other_depth - x)))], unit)
            for unit, x in zip(reference.units, ref_depth)]


def _unit_of(profile, unit):
    """A pair's entry as a unit index of `profile` (a layer name of a named profile included)."""
    unit_of = getattr(profile, "unit_of", None)
    return unit_of(unit) if unit_of is not None else unit


def compare_profiles(reference, other, pairs=None, normalize=True):
    """Compares `other` (e.g. a student) with `reference` (e.g. its teacher).

    Args:
        reference: the `Profile` compared against (teacher, or the model before training).
        other: the other `Profile`.
        pairs: (other_unit, reference_unit) pairs whose spectra are compared, e.g. the
            Distiller's `layer_pairs` (student, teacher), layer names included for a profile
            made by names; default `default_pairs`.
        normalize: spectra compared by shape (each divided by its mean); see the module doc.
    Returns:
        A `ProfileComparison`.
    """
    if pairs is None:
        pairs = default_pairs(reference, other)
    else:
        pairs = [(_unit_of(other, o), _unit_of(reference, r)) for o, r in pairs]
    if not pairs:
        raise ValueError("`pairs` is empty; expected at least one (other_unit, reference_unit).")
    reference_position = {unit: i for i, unit in enumerate(reference.units)}
    other_position = {unit: i for i, unit in enumerate(other.units)}
    distances = []
    for other_unit, reference_unit in pairs:
        if other_unit not in other_position or reference_unit not in reference_position:
            raise ValueError(
                f"Pair ({other_unit}, {reference_unit}) names a unit that was not profiled: "
                f"other units {other.units}, reference units {reference.units}."
            )
        i, j = other_position[other_unit], reference_position[reference_unit]
        distances.append(
            spectrum_distance(
                other.normalized_frequency(i),
                other.half_spectrum(i),
                reference.normalized_frequency(j),
                reference.half_spectrum(j),
                normalize=normalize,
            )
        )
    return ProfileComparison(
        intensity_correlation=profile_correlation(reference, other, "intensity"),
        entropy_correlation=profile_correlation(reference, other, "entropy"),
        magnitude_correlation=profile_correlation(reference, other, "magnitude"),
        pairs=pairs,
        pair_distances=distances,
        spectral_distance=float(np.mean(distances)),
    )
