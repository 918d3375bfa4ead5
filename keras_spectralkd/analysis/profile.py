"""Spectral profiling of a backbone over a dataset (SPEC.md section 5).

`profile_model(model, data)` runs any model that follows the backbone protocol
(`forward_intermediates(images, indices, training) -> (logits, maps)`, maps (B, h, w, C)) over
an iterable of image batches and returns a `Profile`: per unit,

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
"""

import contextlib
import csv
import dataclasses
import io
import json
import math
import os

import keras
import numpy as np

# Histogram bins of the channel entropy (SPEC.md 5).
DEFAULT_ENTROPY_BINS = 100
# Tokens per chunk when histogramming: bounds the (tokens, bins) count matrix (~8 MB).
_ENTROPY_CHUNK_TOKENS = 8192
# Tokens per chunk of the channel FFT (complex128 of 8192 x 768 is ~100 MB at most).
_SPECTRUM_CHUNK_TOKENS = 8192
_FORMAT = "keras_spectralkd.profile/1"


# === The result type ===
@dataclasses.dataclass
class Profile:
    """Per-unit spectral statistics of one model over a set of images.

    Attributes:
        model_name: a label for the model (its name by default).
        depth: the model's total number of units (blocks or stages); with `units` it gives each
            unit's relative depth, also when only a subset was profiled.
        units: the 0-based unit indices profiled, in order.
        num_channels: C of each unit's map.
        grids: (h, w) of each unit's map.
        spectra: per unit, the channel spectrum S[k], k = 0..C-1, a float64 array of length C.
        intensity: (num_units,) L(X) = mean_k S[k].
        entropy: (num_units,) mean per-token channel entropy in bits, or None if not computed.
        magnitude: (num_units,) mean |X|.
        num_images: how many images were analysed.
        entropy_bins: histogram bins of the entropy.
        entropy_ranges: per unit, the (min, max) histogram range used (None if no entropy).
    """

    model_name: str
    depth: int
    units: list
    num_channels: list
    grids: list
    spectra: list
    intensity: np.ndarray
    entropy: np.ndarray | None
    magnitude: np.ndarray
    num_images: int
    entropy_bins: int = DEFAULT_ENTROPY_BINS
    entropy_ranges: list | None = None

    def __post_init__(self):
        self.units = [int(u) for u in self.units]
        self.num_channels = [int(c) for c in self.num_channels]
        self.grids = [tuple(int(v) for v in g) for g in self.grids]
        self.spectra = [np.asarray(s, dtype=np.float64) for s in self.spectra]
        self.intensity = np.asarray(self.intensity, dtype=np.float64)
        self.magnitude = np.asarray(self.magnitude, dtype=np.float64)
        if self.entropy is not None:
            self.entropy = np.asarray(self.entropy, dtype=np.float64)
        if self.entropy_ranges is not None:
            self.entropy_ranges = [tuple(float(v) for v in r) for r in self.entropy_ranges]
        n = len(self.units)
        lengths = {
            "num_channels": len(self.num_channels),
            "grids": len(self.grids),
            "spectra": len(self.spectra),
            "intensity": len(self.intensity),
            "magnitude": len(self.magnitude),
        }
        if self.entropy is not None:
            lengths["entropy"] = len(self.entropy)
        if self.entropy_ranges is not None:
            lengths["entropy_ranges"] = len(self.entropy_ranges)
        wrong = {k: v for k, v in lengths.items() if v != n}
        if wrong:
            raise ValueError(
                f"Profile of {n} units (units={self.units}) has fields of other lengths: {wrong}."
            )
        for unit in self.units:
            if not 0 <= unit < self.depth:
                raise ValueError(
                    f"Unit {unit} is outside 0..{self.depth - 1} (depth={self.depth})."
                )
        for unit, channels, spectrum in zip(self.units, self.num_channels, self.spectra):
            if spectrum.shape != (channels,):
                raise ValueError(
                    f"Unit {unit}: spectrum has shape {spectrum.shape}, expected ({channels},)."
                )

    def __len__(self):
        return len(self.units)

    # === Derived views ===
    @property
    def relative_depth(self):
        """(num_units,) position of each unit in [0, 1]: unit / (depth - 1); first 0, last 1.

        Profiles of different depths are aligned on this axis (first with first, last with last).
        """
        if self.depth == 1:
            return np.zeros(len(self.units))
        return np.asarray(self.units, dtype=np.float64) / (self.depth - 1)

    def normalized_frequency(self, position):
        """`fftfreq(C)[:C//2]` of the unit at `position` (0..len-1): cycles/channel, [0, 0.5)."""
        channels = self.num_channels[position]
        return np.fft.fftfreq(channels)[: channels // 2]

    def half_spectrum(self, position):
        """S[k], k = 0..C//2-1, of the unit at `position`: the layer-wise spectrum (SPEC.md 5).

        The channel signal is real, so S is symmetric (S[k] = S[C-k]) and the first half carries
        everything.
        """
        channels = self.num_channels[position]
        return self.spectra[position][: channels // 2]

    # === Serialisation ===
    def to_dict(self):
        """A JSON-ready dict (floats kept exactly: json writes repr, which round-trips)."""
        return {
            "format": _FORMAT,
            "model_name": self.model_name,
            "depth": int(self.depth),
            "num_images": int(self.num_images),
            "entropy_bins": int(self.entropy_bins),
            "units": [
                {
                    "unit": unit,
                    "relative_depth": float(rel),
                    "num_channels": channels,
                    "grid": list(grid),
                    "intensity": float(self.intensity[i]),
                    "entropy": None if self.entropy is None else float(self.entropy[i]),
                    "magnitude": float(self.magnitude[i]),
                    "entropy_range": (
                        None if self.entropy_ranges is None else list(self.entropy_ranges[i])
                    ),
                    "spectrum": [float(v) for v in self.spectra[i]],
                }
                for i, (unit, rel, channels, grid) in enumerate(
                    zip(self.units, self.relative_depth, self.num_channels, self.grids)
                )
            ],
        }

    @classmethod
    def from_dict(cls, data):
        if data.get("format") != _FORMAT:
            raise ValueError(
                f"Not a keras_spectralkd profile: format={data.get('format')!r}, "
                f"expected {_FORMAT!r}."
            )
        rows = data["units"]
        has_entropy = all(row["entropy"] is not None for row in rows) and bool(rows)
        has_ranges = all(row.get("entropy_range") is not None for row in rows) and bool(rows)
        return cls(
            model_name=data["model_name"],
            depth=data["depth"],
            units=[row["unit"] for row in rows],
            num_channels=[row["num_channels"] for row in rows],
            grids=[row["grid"] for row in rows],
            spectra=[row["spectrum"] for row in rows],
            intensity=[row["intensity"] for row in rows],
            entropy=[row["entropy"] for row in rows] if has_entropy else None,
            magnitude=[row["magnitude"] for row in rows],
            num_images=data["num_images"],
            entropy_bins=data["entropy_bins"],
            entropy_ranges=[row["entropy_range"] for row in rows] if has_ranges else None,
        )

    def to_json(self):
        return json.dumps(self.to_dict(), indent=1)

    def to_csv(self):
        """One row per unit; the first line is a `#` comment holding the model-level fields as JSON.

        Columns: unit, relative_depth, num_channels, grid_h, grid_w, intensity, entropy (empty if
        not computed), magnitude, entropy_min, entropy_max, spectrum (the C values of S,
        space-separated). Readable with `pandas.read_csv(path, comment="#")`.
        """
        header = {
            "format": _FORMAT,
            "model_name": self.model_name,
            "depth": int(self.depth),
            "num_images": int(self.num_images),
            "entropy_bins": int(self.entropy_bins),
        }
        buffer = io.StringIO()
        buffer.write("# " + json.dumps(header) + "\n")
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(_CSV_COLUMNS)
        for row in self.to_dict()["units"]:
            lo, hi = row["entropy_range"] if row["entropy_range"] is not None else ("", "")
            writer.writerow(
                [
                    row["unit"],
                    repr(row["relative_depth"]),
                    row["num_channels"],
                    row["grid"][0],
                    row["grid"][1],
                    repr(row["intensity"]),
                    "" if row["entropy"] is None else repr(row["entropy"]),
                    repr(row["magnitude"]),
                    repr(lo) if lo != "" else "",
                    repr(hi) if hi != "" else "",
                    " ".join(repr(v) for v in row["spectrum"]),
                ]
            )
        return buffer.getvalue()

    @classmethod
    def from_csv(cls, text):
        lines = text.splitlines()
        if not lines or not lines[0].startswith("#"):
            raise ValueError(
                "Not a keras_spectralkd profile CSV: the first line must be '# {...}'."
            )
        header = json.loads(lines[0][1:])
        reader = csv.DictReader(lines[1:])
        if reader.fieldnames != _CSV_COLUMNS:
            raise ValueError(
                f"Profile CSV columns are {reader.fieldnames}, expected {_CSV_COLUMNS}."
            )
        units = []
        for row in reader:
            has_range = row["entropy_min"] != ""
            units.append(
                {
                    "unit": int(row["unit"]),
                    "num_channels": int(row["num_channels"]),
                    "grid": [int(row["grid_h"]), int(row["grid_w"])],
                    "intensity": float(row["intensity"]),
                    "entropy": float(row["entropy"]) if row["entropy"] != "" else None,
                    "magnitude": float(row["magnitude"]),
                    "entropy_range": (
                        [float(row["entropy_min"]), float(row["entropy_max"])]
                        if has_range
                        else None
                    ),
                    "spectrum": [float(v) for v in row["spectrum"].split()],
                }
            )
        return cls.from_dict(dict(header, units=units))

    def save(self, path):
        """Writes `path`; the format follows the extension: `.json` or `.csv`."""
        path = os.fspath(path)
        if path.endswith(".json"):
            text = self.to_json()
        elif path.endswith(".csv"):
            text = self.to_csv()
        else:
            raise ValueError(f"Profile path {path!r} must end in .json or .csv.")
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(path, "w") as file:
            file.write(text)
        return path

    @classmethod
    def load(cls, path):
        """Reads a profile written by `save` (`.json` or `.csv`)."""
        path = os.fspath(path)
        with open(path) as file:
            text = file.read()
        if path.endswith(".json"):
            return cls.from_dict(json.loads(text))
        if path.endswith(".csv"):
            return cls.from_csv(text)
        raise ValueError(f"Profile path {path!r} must end in .json or .csv.")


_CSV_COLUMNS = [
    "unit",
    "relative_depth",
    "num_channels",
    "grid_h",
    "grid_w",
    "intensity",
    "entropy",
    "magnitude",
    "entropy_min",
    "entropy_max",
    "spectrum",
]


# === Per-batch numpy math (SPEC.md 5) ===
def channel_spectrum_sum(feature_map):
    """Sum over images and tokens of |DFT over channels| / C, and the number of tokens.

    Args:
        feature_map: (B, h, w, C) array (or any (..., C)).
    Returns:
        ((C,) float64 sum, token count). Dividing gives SPEC.md 5's S[k] for this batch.
    """
    values = np.asarray(feature_map)
    channels = values.shape[-1]
    tokens = values.reshape(-1, channels)
    total = np.zeros(channels, dtype=np.float64)
    # In chunks of tokens: the complex128 FFT of a whole Swin stage-0 batch would take GBs.
    for start in range(0, tokens.shape[0], _SPECTRUM_CHUNK_TOKENS):
        chunk = tokens[start : start + _SPECTRUM_CHUNK_TOKENS].astype(np.float64)
        total += (np.abs(np.fft.fft(chunk, axis=-1)) / channels).sum(axis=0)
    return total, tokens.shape[0]


def histogram_bin_indices(values, low, high, bins):
    """Bin index of each value in `bins` equal bins over [low, high], as `np.histogram` assigns.

    Same arithmetic as numpy's uniform-bin fast path (float64), including its +-1 ULP corrections
    at the edges and the closed last bin, so counts equal `np.histogram(v, bins, (low, high))` for
    float64 data. Values must lie in [low, high]. `low == high` widens the range by +-0.5 as numpy.
    """
    values = np.asarray(values, dtype=np.float64)
    low, high = float(low), float(high)
    if low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1, endpoint=True)
    indices = ((values - low) / (high - low) * bins).astype(np.intp)
    indices[indices == bins] -= 1
    indices[values < edges[indices]] -= 1
    indices[(values >= edges[indices + 1]) & (indices != bins - 1)] += 1
    return indices


def token_entropy_sum(feature_map, low, high, bins=DEFAULT_ENTROPY_BINS):
    """Sum over tokens of the channel entropy (bits), and the token count.

    Each token's C channel values are histogrammed into `bins` equal bins over [low, high];
    p = counts / C; H = -sum_{p>0} p log2 p.

    Args:
        feature_map: (B, h, w, C) array with every value in [low, high].
        low, high: the histogram range (the unit's global min and max).
        bins: number of bins.
    Returns:
        (float64 sum of entropies, token count).
    """
    values = np.asarray(feature_map)
    channels = values.shape[-1]
    tokens = values.reshape(-1, channels)
    if tokens.size and (tokens.min() < low or tokens.max() > high):
        raise ValueError(
            f"Feature values span [{tokens.min()}, {tokens.max()}], outside the entropy histogram "
            f"range [{low}, {high}]."
        )
    total = 0.0
    for start in range(0, tokens.shape[0], _ENTROPY_CHUNK_TOKENS):
        chunk = tokens[start : start + _ENTROPY_CHUNK_TOKENS]
        count = chunk.shape[0]
        indices = histogram_bin_indices(chunk, low, high, bins)
        # One bincount for the whole chunk: offset each token's bins into its own row.
        flat = (indices + np.arange(count)[:, None] * bins).ravel()
        counts = np.bincount(flat, minlength=count * bins).reshape(count, bins)
        probabilities = counts / channels
        safe = np.where(counts > 0, probabilities, 1.0)  # log2(1) = 0 for empty bins
        total += float(-(probabilities * np.log2(safe)).sum())
    return total, tokens.shape[0]


# === Profiling ===
class _UnitStatistics:
    """Running float64 sums of one unit's statistics."""

    def __init__(self, channels):
        self.spectrum_sum = np.zeros(channels, dtype=np.float64)
        self.abs_sum = 0.0
        self.num_values = 0
        self.num_tokens = 0
        self.minimum = math.inf
        self.maximum = -math.inf
        self.entropy_sum = 0.0
        self.entropy_tokens = 0
        self.grid = None


def profile_model(
    model,
    data,
    *,
    indices=None,
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
            `num_units` gives the depth; without either, the depth is the number of maps.
        data: image batches (B, H, W, 3), channels-last, already preprocessed: a (N, H, W, 3)
            array (split into `batch_size` batches), a `tf.data.Dataset`, or any iterable of
            batches. A batch may also be a tuple/list (images first, e.g. `(images, labels)`) or
            a dict with an `"images"` or `"image"` key.
        indices: the units to profile (None: all), as in `forward_intermediates`.
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
    if not hasattr(model, "forward_intermediates"):
        raise ValueError(
            f"{type(model).__name__} has no `forward_intermediates`; expected a backbone that "
            "follows the protocol of keras_spectralkd.models.backbone."
        )
    if num_images is not None and int(num_images) < 1:
        raise ValueError(f"`num_images` must be >= 1 or None; got {num_images}.")
    if int(entropy_bins) < 1:
        raise ValueError(f"`entropy_bins` must be >= 1; got {entropy_bins}.")
    depth = _model_depth(model)
    if indices is None and depth is not None:
        units = list(range(depth))
    elif indices is None:
        units = None  # learnt from the first batch
    else:
        units = _normalize_indices(indices, depth)
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
        model, data, units, num_images, batch_size, verbose, "pass 1/2" if two_pass else None
    ):
        if units is None:
            units = list(range(len(maps)))
        if depth is None:
            depth = max(units) + 1
        if stats is None:
            stats = [_UnitStatistics(m.shape[-1]) for m in maps]
            if entropy and not two_pass:
                ranges = _fixed_entropy_ranges(entropy_range, units)
        fingerprints.append(_fingerprint(images))
        seen += images.shape[0]
        for position, (unit, stat, feature_map) in enumerate(zip(units, stats, maps)):
            _check_map(unit, stat, feature_map)
            _accumulate(stat, feature_map)
            if ranges is not None:
                _accumulate_entropy(unit, stat, feature_map, ranges[position], entropy_bins)
    if stats is None:
        raise ValueError("`data` yielded no images; nothing to profile.")

    if two_pass:
        ranges = [(stat.minimum, stat.maximum) for stat in stats]
        batches = _forward_batches(model, data, units, num_images, batch_size, verbose, "pass 2/2")
        for batch_index, (images, maps) in enumerate(batches):
            if (
                batch_index >= len(fingerprints)
                or _fingerprint(images) != fingerprints[batch_index]
            ):
                raise ValueError(
                    "`data` yielded different images on the entropy pass than on the first pass "
                    f"(batch {batch_index}); the two-pass entropy needs the same images in the "
                    "same order. Disable shuffling (or reshuffle_each_iteration=False), or pass "
                    "`entropy=False`."
                )
            for unit, stat, feature_map, value_range in zip(units, stats, maps, ranges):
                _accumulate_entropy(unit, stat, feature_map, value_range, entropy_bins)
        if stats[0].entropy_tokens != stats[0].num_tokens:
            raise ValueError(
                f"`data` yielded fewer images on the entropy pass than the {seen} of pass 1."
            )

    name = name if name is not None else getattr(model, "name", type(model).__name__)
    return _finish_profile(stats, units, depth, name, seen, entropy, entropy_bins, ranges)


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
    stats = [_UnitStatistics(m.shape[-1]) for m in maps]
    ranges = [(float(m.min()), float(m.max())) for m in maps] if entropy else None
    for position, (unit, stat, feature_map) in enumerate(zip(units, stats, maps)):
        _check_map(unit, stat, feature_map)
        _accumulate(stat, feature_map)
        if entropy:
            _accumulate_entropy(unit, stat, feature_map, ranges[position], entropy_bins)
    return _finish_profile(
        stats, units, depth, name, maps[0].shape[0], entropy, entropy_bins, ranges
    )


def _accumulate(stat, feature_map):
    spectrum_sum, tokens = channel_spectrum_sum(feature_map)
    stat.spectrum_sum += spectrum_sum
    stat.num_tokens += tokens
    stat.abs_sum += float(np.abs(feature_map).sum(dtype=np.float64))
    stat.num_values += feature_map.size
    stat.minimum = min(stat.minimum, float(feature_map.min()))
    stat.maximum = max(stat.maximum, float(feature_map.max()))


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


def _accumulate_entropy(unit, stat, feature_map, value_range, bins):
    low, high = value_range
    if feature_map.min() < low or feature_map.max() > high:
        raise ValueError(
            f"Unit {unit}: features span [{feature_map.min()}, {feature_map.max()}], outside "
            f"the entropy histogram range ({low}, {high})."
        )
    entropy_sum, tokens = token_entropy_sum(feature_map, low, high, bins)
    stat.entropy_sum += entropy_sum
    stat.entropy_tokens += tokens


def _check_map(unit, stat, feature_map):
    if feature_map.ndim != 4:
        raise ValueError(
            f"Unit {unit}: expected a (B, h, w, C) map from forward_intermediates, got shape "
            f"{feature_map.shape}."
        )
    grid = tuple(feature_map.shape[1:3])
    if stat.grid is None:
        stat.grid = grid
    if grid != stat.grid or feature_map.shape[-1] != len(stat.spectrum_sum):
        raise ValueError(
            f"Unit {unit}: map shape changed between batches: {feature_map.shape} after "
            f"(B, {stat.grid[0]}, {stat.grid[1]}, {len(stat.spectrum_sum)})."
        )


def _fingerprint(images):
    return (images.shape, float(np.sum(images, dtype=np.float64)))


def _model_depth(model):
    info = getattr(model, "feature_info", None)
    if info is not None:
        return len(info)
    units = getattr(model, "num_units", None)
    return int(units) if units is not None else None


def _normalize_indices(indices, depth):
    if isinstance(indices, int) and not isinstance(indices, bool):
        if depth is None or not 0 < indices <= depth:
            raise ValueError(
                f"`indices`={indices} (the last n units) needs 1 <= n <= depth={depth}."
            )
        return list(range(depth - indices, depth))
    units = [int(i) for i in indices]
    if not units:
        raise ValueError("`indices` is empty; expected None, an int or unit indices.")
    for unit in units:
        if unit < 0 or (depth is not None and unit >= depth):
            raise ValueError(f"Unit index {unit} is out of range 0..{depth - 1 if depth else '?'}.")
    return units


def to_float_array(x):
    """A backend tensor or array as numpy: float64 stays float64, anything else becomes float32
    (bfloat16/float16 maps under mixed precision are analysed in float32)."""
    array = np.asarray(keras.ops.convert_to_numpy(x))
    return array if array.dtype == np.float64 else array.astype(np.float32)


def no_grad():
    """Inference without an autograd tape where the backend keeps one by default (torch)."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def _forward_batches(model, data, units, num_images, batch_size, verbose, label):
    """Yields (images (B, H, W, 3) float32 numpy, [maps as float32 numpy]) per batch."""
    progbar = None
    if verbose:
        target = num_images
        if target is None and hasattr(data, "shape") and len(getattr(data, "shape", ())) == 4:
            target = int(data.shape[0])
        if label:
            print(f"Profiling {getattr(model, 'name', type(model).__name__)} ({label})")
        progbar = keras.utils.Progbar(target, unit_name="image")
    seen = 0
    for images in _iterate_images(data, batch_size):
        if num_images is not None:
            if seen >= num_images:
                break
            images = images[: num_images - seen]
        with no_grad():
            _, maps = model.forward_intermediates(images, indices=units, training=False)
        maps = [to_float_array(m) for m in maps]
        seen += images.shape[0]
        if progbar is not None:
            progbar.update(seen)
        yield images, maps


def _iterate_images(data, batch_size):
    """Yields (B, H, W, C) float32 numpy batches from the supported `data` forms."""
    if _is_array(data):
        array = _to_numpy(data)
        _check_images(array, "data")
        for start in range(0, array.shape[0], batch_size):
            yield array[start : start + batch_size].astype(np.float32, copy=False)
        return
    iterable = data.as_numpy_iterator() if hasattr(data, "as_numpy_iterator") else data
    for element in iterable:
        if isinstance(element, dict):
            key = "images" if "images" in element else "image" if "image" in element else None
            if key is None:
                raise ValueError(
                    f"A dict batch needs an 'images' or 'image' key; got keys {sorted(element)}."
                )
            element = element[key]
        elif isinstance(element, (tuple, list)):
            element = element[0]
        images = _to_numpy(element).astype(np.float32, copy=False)
        _check_images(images, "a batch")
        yield images


def _is_array(value):
    return isinstance(value, np.ndarray) or (
        hasattr(value, "shape")
        and hasattr(value, "dtype")
        and not hasattr(value, "as_numpy_iterator")
    )


def _to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(keras.ops.convert_to_numpy(value))
    except Exception:  # noqa: BLE001 - tensors of another framework (e.g. tf on torch)
        return np.asarray(value)


def _check_images(images, what):
    if images.ndim != 4:
        raise ValueError(
            f"Expected {what} of images shaped (B, H, W, C), channels-last; got shape "
            f"{images.shape}."
        )
