"""The statistics of the package: the spectral profile's per-batch math, and the t-intervals of
paired-seed comparisons.

- Per-batch numpy math of the spectral profile (SPEC.md section 5), and its running sums:
  everything works on one (B, h, w, C) float array at a time and returns float64 sums with their
  counts, so that a caller can stream over any number of batches (`UnitStatistics`) and divide
  at the end. Large maps are processed in chunks of tokens to bound memory.
- Student's t (`t_cdf`, `t_quantile`, pure Python, no SciPy), `mean_interval` and
  `paired_difference`: the intervals of the study's paired design (same initial weights and
  batches per seed, one arm differing); `paired_t_power` and `seeds_for_power`: how many seeds
  a difference of a given size needs to be seen.
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


# === Paired-seed statistics (the study) ===
def _log_beta_continued_fraction(a, b, x):
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def regularized_incomplete_beta(a, b, x):
    """I_x(a, b) for a, b > 0 and x in [0, 1] (Numerical Recipes' `betai`, to ~1e-14)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1]; got {x!r}.")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _log_beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _log_beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with `df` > 0 degrees of freedom."""
    if df <= 0:
        raise ValueError(f"Degrees of freedom must be > 0; got {df!r}.")
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p, df):
    """The p-quantile of Student's t with `df` degrees of freedom (bisection on `t_cdf`).

    E.g. `t_quantile(0.975, 2)` = 4.3027, the factor of a 95% interval from 3 paired seeds.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1); got {p!r}.")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def mean_interval(values, confidence=0.95):
    """Mean, sample std (ddof 1) and the t-interval of the mean of `values`.

    Returns a dict: n, mean, std, low, high (std, low and high are nan for fewer than 2 values).
    """
    values = np.asarray(values, dtype=np.float64)
    n = int(values.size)
    if n == 0:
        raise ValueError("No values to summarise.")
    mean = float(values.mean())
    if n < 2:
        return dict(n=n, mean=mean, std=float("nan"), low=float("nan"), high=float("nan"))
    std = float(values.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return dict(n=n, mean=mean, std=std, low=mean - half, high=mean + half)


def paired_difference(values, baseline, confidence=0.95):
    """`mean_interval` of the per-seed differences values[s] - baseline[s] (seeds in both)."""
    seeds = sorted(set(values) & set(baseline))
    if not seeds:
        raise ValueError("No seed has both results; nothing to pair.")
    summary = mean_interval([values[s] - baseline[s] for s in seeds], confidence)
    summary["seeds"] = seeds
    return summary


def _normal_cdf(x):
    return 0.5 * np.array([math.erfc(-v / math.sqrt(2.0)) for v in np.ravel(x)]).reshape(
        np.shape(x))


def paired_t_power(effect, std, n, confidence=0.95):
    """Power of the two-sided paired t-test at `n` seeds: the chance that the `confidence`
    t-interval of the mean difference excludes zero when the true mean difference is `effect`
    and the per-seed differences have standard deviation `std`.

    Exact up to quadrature: with T = (Z + lambda) / S, lambda = effect sqrt(n) / std and
    S^2 = V / (n - 1), V chi-square, the power is E[Phi(lambda - c S) + Phi(-lambda - c S)] for
    the critical value c; the expectation is a midpoint sum over sqrt(V), whose density is
    smooth and bounded for every n >= 2.
    """
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an integer >= 2; got {n!r}.")
    if not (std > 0 and math.isfinite(std)) or not math.isfinite(effect):
        raise ValueError(f"std must be finite and > 0, effect finite; got std={std!r}, "
                         f"effect={effect!r}.")
    df = int(n) - 1
    critical = t_quantile(0.5 + confidence / 2.0, df)
    shift = abs(effect) * math.sqrt(n) / std
    # w = sqrt(V): density 2 w f_chi2(w^2), negligible beyond sqrt(df) + 12.
    step = (math.sqrt(df) + 12.0) / 4000
    w = (np.arange(4000) + 0.5) * step
    log_density = (math.log(2.0) + (df - 1) * np.log(w) - w * w / 2.0
                   - (df / 2.0 - 1.0) * math.log(2.0) - math.lgamma(df / 2.0) - math.log(2.0))
    density = np.exp(log_density)
    scale = w / math.sqrt(df)
    inner = _normal_cdf(shift - critical * scale) + _normal_cdf(-shift - critical * scale)
    return float(np.sum(density * inner) * step)


def seeds_for_power(effect, std, power=0.8, confidence=0.95, max_seeds=10_000):
    """The fewest seeds (>= 2) at which `paired_t_power` reaches `power`: e.g. how many seeds a
    0.5-point difference needs, given the per-seed spread `std` of a study's differences."""
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1); got {power!r}.")
    if effect == 0:
        raise ValueError("effect must be non-zero: no number of seeds detects no difference.")
    for n in range(2, max_seeds + 1):
        if paired_t_power(effect, std, n, confidence) >= power:
            return n
    raise ValueError(f"More than {max_seeds} seeds would be needed for effect={effect!r} at "
                     f"std={std!r}.")
