"""Per-batch numpy math of the spectral profile (SPEC.md section 5), and its running sums.

Everything here works on one (B, h, w, C) float array at a time and returns float64 sums with
their counts, so that a caller can stream over any number of batches (`UnitStatistics`) and
divide at the end. Large maps are processed in chunks of tokens to bound memory.
"""

import math

import numpy as np

# Histogram bins of the channel entropy (SPEC.md 5).
DEFAULT_ENTROPY_BINS = 100
# Tokens per chunk when histogramming: bounds the (tokens, bins) count matrix (~8 MB).
_ENTROPY_CHUNK_TOKENS = 8192
# Tokens per chunk of the channel FFT (complex128 of 8192 x 768 is ~100 MB at most).
_SPECTRUM_CHUNK_TOKENS = 8192


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


# === Running sums of one unit ===
class UnitStatistics:
    """Running float64 sums of one unit's statistics over the batches seen so far.

    `add` accumulates the spectrum, |X|, the token and value counts and the min/max; `add_entropy`
    the per-token entropies on a given histogram range (a separate pass when the range is the
    global min..max, see `keras_spectralkd.analysis.profile`). The means are the sums over their
    counts: `spectrum_sum / num_tokens`, `abs_sum / num_values`, `entropy_sum / entropy_tokens`.
    """

    def __init__(self, unit, channels):
        self.unit = unit
        self.spectrum_sum = np.zeros(channels, dtype=np.float64)
        self.abs_sum = 0.0
        self.num_values = 0
        self.num_tokens = 0
        self.minimum = math.inf
        self.maximum = -math.inf
        self.entropy_sum = 0.0
        self.entropy_tokens = 0
        self.grid = None

    def check(self, feature_map):
        """Fails unless `feature_map` is (B, h, w, C) with this unit's (h, w, C) so far."""
        if feature_map.ndim != 4:
            raise ValueError(
                f"Unit {self.unit}: expected a (B, h, w, C) map from forward_intermediates, got "
                f"shape {feature_map.shape}."
            )
        grid = tuple(feature_map.shape[1:3])
        if self.grid is None:
            self.grid = grid
        if grid != self.grid or feature_map.shape[-1] != len(self.spectrum_sum):
            raise ValueError(
                f"Unit {self.unit}: map shape changed between batches: {feature_map.shape} after "
                f"(B, {self.grid[0]}, {self.grid[1]}, {len(self.spectrum_sum)})."
            )

    def add(self, feature_map):
        """Adds one (B, h, w, C) batch to every sum except the entropy's."""
        self.check(feature_map)
        spectrum_sum, tokens = channel_spectrum_sum(feature_map)
        self.spectrum_sum += spectrum_sum
        self.num_tokens += tokens
        self.abs_sum += float(np.abs(feature_map).sum(dtype=np.float64))
        self.num_values += feature_map.size
        self.minimum = min(self.minimum, float(feature_map.min()))
        self.maximum = max(self.maximum, float(feature_map.max()))

    def add_entropy(self, feature_map, value_range, bins):
        """Adds one batch's per-token entropies, histogrammed on `value_range` = (low, high)."""
        low, high = value_range
        if feature_map.min() < low or feature_map.max() > high:
            raise ValueError(
                f"Unit {self.unit}: features span [{feature_map.min()}, {feature_map.max()}], "
                f"outside the entropy histogram range ({low}, {high})."
            )
        entropy_sum, tokens = token_entropy_sum(feature_map, low, high, bins)
        self.entropy_sum += entropy_sum
        self.entropy_tokens += tokens
