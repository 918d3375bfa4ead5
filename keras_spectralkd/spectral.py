"""The spectral math of SpectralKD, in `keras.ops` only (SPEC.md sections 2 and 5).

Everything here works on every Keras backend, inside `jit`, and computes in float32 whatever the
input dtype (mixed precision included). Feature maps are channels-last, (B, H, W, C); token
sequences (B, N, C) are accepted where a `grid=(H, W)` says how to lay them out (row-major).

Two different transforms live here, not to be confused:
- the loss (`spectral_pair_loss`, `spectral_alignment_loss`) uses a 2D FFT over the SPATIAL axes;
- the analysis (`channel_spectrum`, `frequency_intensity`) uses a 1D FFT over the CHANNEL axis.
"""

import math

import numpy as np
from keras import ops

__all__ = [
    "rfft2",
    "pool_channels",
    "channel_pooling_matrix",
    "spectral_pair_loss",
    "spectral_alignment_loss",
    "common_grid",
    "channel_spectrum",
    "frequency_intensity",
]


# === Shapes ===
def _static_shape(x):
    return tuple(None if d is None else int(d) for d in x.shape)


def as_feature_map(x, grid=None, name="feature map"):
    """Returns `x` as a float32 (B, H, W, C) map; (B, N, C) tokens need `grid=(H, W)`."""
    shape = _static_shape(x)
    if len(shape) == 3:
        if grid is None:
            raise ValueError(
                f"The {name} has shape {shape}, a (B, N, C) token sequence; pass grid=(H, W) with "
                "H * W == N to lay the tokens out on the spatial grid."
            )
        height, width = (int(g) for g in grid)
        if shape[1] is not None and height * width != shape[1]:
            raise ValueError(
                f"The {name} has {shape[1]} tokens (shape {shape}) but grid={tuple(grid)} holds "
                f"{height * width}; expected N == H * W."
            )
        x = ops.reshape(x, (-1, height, width, shape[2]))
    elif len(shape) != 4:
        raise ValueError(
            f"The {name} must be a (B, H, W, C) map or a (B, N, C) token sequence; got rank "
            f"{len(shape)} with shape {shape}."
        )
    return ops.cast(x, "float32")


# === Transforms ===
def rfft2(x):
    """Orthonormal 2D real FFT over the spatial axes of a channels-last map.

    Equals `np.fft.rfft2(x, axes=(1, 2), norm="ortho")`: the full 2D DFT over (H, W), divided by
    sqrt(H * W), keeping frequency columns 0..W//2 of the W axis.

    Args:
        x: (B, H, W, C) real tensor (any float dtype; computed in float32).
    Returns:
        `(real, imag)`, each (B, H, W//2 + 1, C) float32.
    """
    x = as_feature_map(x)
    real, imag = _rfft2_channels_first(x)
    # (B, C, W//2+1, H) -> (B, H, W//2+1, C)
    return ops.transpose(real, (0, 3, 2, 1)), ops.transpose(imag, (0, 3, 2, 1))


def _rfft2_channels_first(x):
    """Ortho rfft2 of a (B, H, W, C) map, returned in the (B, C, W//2+1, H) layout.

    `keras.ops` transforms only the last axis and has no rfft2 or `norm=` (SPEC.md 9): rfft over
    W, then a complex FFT over H, then the 1/sqrt(H*W) scale. The loss is a mean over all bins,
    so it takes this layout as is and skips the transpose back.
    """
    height, width = x.shape[1], x.shape[2]
    x = ops.transpose(x, (0, 3, 1, 2))  # (B, C, H, W)
    real, imag = ops.rfft(x)  # over W: (B, C, H, W//2+1)
    real = ops.transpose(real, (0, 1, 3, 2))  # (B, C, W//2+1, H)
    imag = ops.transpose(imag, (0, 1, 3, 2))
    real, imag = ops.fft((real, imag))  # over H
    scale = 1.0 / math.sqrt(height * width)
    return real * scale, imag * scale


def _low_band_channels_first(x, grid):
    """The ortho rfft2 bins of a (B, H, W, C) map at the frequencies of the coarser `grid`
    (h <= H, w <= W), on that grid's orthonormal scale; layout (B, C, w//2 + 1, h).

    The frequencies kept are those of an (h, w) grid: rows `fftfreq(h) * h` of the H axis,
    columns 0..w//2 of the W axis. Scaling the unnormalised DFT by sqrt(h * w) / (H * W) instead
    of 1 / sqrt(H * W) is what band-limited resampling onto (h, w) does, so a map and its exact
    subsampling give the same bins (SPEC.md 2.1). For (h, w) == (H, W) this is
    `_rfft2_channels_first`.
    """
    height, width = x.shape[1], x.shape[2]
    grid_h, grid_w = grid
    x = ops.transpose(x, (0, 3, 1, 2))  # (B, C, H, W)
    real, imag = ops.rfft(x)  # over W: (B, C, H, W//2+1)
    # Columns above the coarse grid's Nyquist are dropped before the second FFT: less work.
    real = ops.transpose(real[..., : grid_w // 2 + 1], (0, 1, 3, 2))  # (B, C, w//2+1, H)
    imag = ops.transpose(imag[..., : grid_w // 2 + 1], (0, 1, 3, 2))
    real, imag = ops.fft((real, imag))  # over H
    if grid_h < height:
        # Rows 0..ceil(h/2)-1 and the last floor(h/2): the integer frequencies of fftfreq(h).
        keep_low, keep_high = (grid_h + 1) // 2, grid_h // 2
        parts_real, parts_imag = [real[..., :keep_low]], [imag[..., :keep_low]]
        if keep_high:
            parts_real.append(real[..., height - keep_high:])
            parts_imag.append(imag[..., height - keep_high:])
        real = ops.concatenate(parts_real, axis=-1)
        imag = ops.concatenate(parts_imag, axis=-1)
    scale = math.sqrt(grid_h * grid_w) / (height * width)
    return real * scale, imag * scale


def common_grid(student_shape, teacher_shape):
    """(min H, min W) of two (B, H, W, C) shapes: the grid whose frequencies both maps hold."""
    return (min(int(student_shape[1]), int(teacher_shape[1])),
            min(int(student_shape[2]), int(teacher_shape[2])))


# === Channel alignment ===
def channel_pooling_matrix(in_channels, out_channels):
    """(in, out) averaging matrix with PyTorch adaptive-average-pool semantics.

    Output channel i averages input channels [floor(i * in / out), ceil((i + 1) * in / out)); a
    non-divisible ratio gives overlapping windows, exactly as `torch.nn.AdaptiveAvgPool1d`.
    """
    if not 0 < out_channels <= in_channels:
        raise ValueError(
            f"Cannot pool {in_channels} channels down to {out_channels}: the student may not be "
            "wider than the teacher (expected 0 < student channels <= teacher channels)."
        )
    matrix = np.zeros((in_channels, out_channels), dtype=np.float32)
    for i in range(out_channels):
        start = (i * in_channels) // out_channels
        end = -((-(i + 1) * in_channels) // out_channels)  # ceil
        matrix[start:end, i] = 1.0 / (end - start)
    return matrix


def pool_channels(x, num_channels):
    """Average-pools the channel (last) axis of `x` down to `num_channels` (parameter-free).

    Args:
        x: (..., C_in) tensor; computed in float32.
        num_channels: C_out, with 0 < C_out <= C_in.
    Returns:
        (..., C_out) float32 tensor.
    """
    x = ops.cast(x, "float32")
    in_channels = int(x.shape[-1])
    num_channels = int(num_channels)
    if num_channels == in_channels:
        return x
    middle = tuple(x.shape[1:-1])
    divisible = num_channels > 0 and in_channels % num_channels == 0
    if divisible and None not in middle:
        # Equal, disjoint windows: a reshape and a mean, cheaper than the matrix.
        ratio = in_channels // num_channels
        grouped = ops.reshape(x, (-1,) + middle + (num_channels, ratio))
        return ops.mean(grouped, axis=-1)
    matrix = channel_pooling_matrix(in_channels, num_channels)
    return ops.matmul(x, ops.convert_to_tensor(matrix))


# === The loss ===
GRID_ALIGNMENTS = ("equal", "low_band")


def check_grid_alignment(grid_alignment):
    """`grid_alignment` if it is one of `GRID_ALIGNMENTS`, else a ValueError naming it."""
    if grid_alignment not in GRID_ALIGNMENTS:
        raise ValueError(
            f"`grid_alignment` must be one of {GRID_ALIGNMENTS}; got {grid_alignment!r}."
        )
    return grid_alignment


def check_pair_shapes(student_shape, teacher_shape, pair=None, grid_alignment="equal"):
    """Validates one (student, teacher) pair of (B, H, W, C) shapes; raises a clear ValueError.

    With `grid_alignment="low_band"` the grids may differ (SPEC.md 2.1); the channels are
    checked either way.
    """
    where = "" if pair is None else f" for layer pair {pair}"
    student_shape, teacher_shape = tuple(student_shape), tuple(teacher_shape)
    if grid_alignment != "low_band" and student_shape[1:3] != teacher_shape[1:3]:
        raise ValueError(
            f"Spatial grids differ{where}: student map {student_shape} vs teacher map "
            f"{teacher_shape} (B, H, W, C); the spectral loss needs equal (H, W)."
        )
    if student_shape[3] is not None and teacher_shape[3] is not None:
        if student_shape[3] > teacher_shape[3]:
            raise ValueError(
                f"The student map is wider than the teacher's{where}: {student_shape} vs "
                f"{teacher_shape}; SpectralKD pools the teacher's channels down, so it needs "
                "student channels <= teacher channels."
            )


def spectral_pair_loss(student_map, teacher_map, grid=None, grid_alignment="equal"):
    """SpectralKD loss of one pair of maps (SPEC.md 2.1-2.4).

    The teacher's channels are average-pooled down to the student's (no parameters), both maps
    are transformed by the orthonormal rfft2 over (H, W), and the loss is the mean squared
    difference of the real and imaginary parts, i.e.
    `sum |X_s - X_t|^2 / (2 * B * C * H * (W//2 + 1))`. Phase is kept.

    The FFT is linear, so on equal grids it is taken once, of `F_s - pool(F_t)`; this equals
    transforming both.

    Args:
        student_map: (B, H, W, C_s) map, or (B, N, C_s) tokens with `grid`.
        teacher_map: (B, H', W', C_t) map, or (B, N, C_t) tokens with `grid`; C_t >= C_s.
        grid: (H, W) for token inputs.
        grid_alignment: "equal" (the paper's setting: (H, W) == (H', W'), else a ValueError) or
            "low_band": maps on different grids are compared on the frequencies of the common
            grid (min(H, H'), min(W, W')), each on that grid's orthonormal scale (SPEC.md 2.1);
            on equal grids both give the same loss.
    Returns:
        scalar float32 tensor.
    """
    check_grid_alignment(grid_alignment)
    student_map = as_feature_map(student_map, grid, "student map")
    teacher_map = as_feature_map(teacher_map, grid, "teacher map")
    check_pair_shapes(student_map.shape, teacher_map.shape, grid_alignment=grid_alignment)
    teacher_map = pool_channels(teacher_map, student_map.shape[-1])
    if student_map.shape[1:3] == teacher_map.shape[1:3]:
        real, imag = _rfft2_channels_first(student_map - teacher_map)
    else:
        band = common_grid(student_map.shape, teacher_map.shape)
        student_real, student_imag = _low_band_channels_first(student_map, band)
        teacher_real, teacher_imag = _low_band_channels_first(teacher_map, band)
        real, imag = student_real - teacher_real, student_imag - teacher_imag
    return 0.5 * (ops.mean(ops.square(real)) + ops.mean(ops.square(imag)))


def spectral_alignment_loss(student_maps, teacher_maps, grid=None, return_pair_losses=False,
                            grid_alignment="equal"):
    """Unweighted mean of `spectral_pair_loss` over paired lists of maps (SPEC.md 2.5).

    Args:
        student_maps: list of P student maps.
        teacher_maps: list of P teacher maps, paired by position.
        grid: (H, W) for token inputs (the same for every pair).
        return_pair_losses: also return the list of the P per-pair losses.
        grid_alignment: "equal" or "low_band", as in `spectral_pair_loss`.
    Returns:
        scalar float32 tensor (and the list of per-pair losses if asked).
    """
    student_maps, teacher_maps = list(student_maps), list(teacher_maps)
    if not student_maps or not teacher_maps:
        raise ValueError(
            f"spectral_alignment_loss needs at least one pair of maps; got {len(student_maps)} "
            f"student and {len(teacher_maps)} teacher maps."
        )
    if len(student_maps) != len(teacher_maps):
        raise ValueError(
            f"Got {len(student_maps)} student maps but {len(teacher_maps)} teacher maps; they are "
            "paired by position and must have the same length."
        )
    pair_losses = [
        spectral_pair_loss(s, t, grid, grid_alignment)
        for s, t in zip(student_maps, teacher_maps)
    ]
    total = ops.mean(ops.stack(pair_losses))
    if return_pair_losses:
        return total, pair_losses
    return total


# === Analysis ===
def channel_spectrum(x):
    """Channel spectrum of one layer (SPEC.md 5): S[k], k = 0..C-1.

    A 1D DFT along the CHANNEL axis of every token, divided by C, magnitude taken, averaged over
    images and tokens: `np.abs(np.fft.fft(x, axis=-1) / C).mean(axis=all but last)`.

    Args:
        x: (B, H, W, C) map or (B, N, C) tokens (any rank >= 1, channels last).
    Returns:
        (C,) float32 tensor.
    """
    x = ops.cast(x, "float32")
    channels = int(x.shape[-1])
    real, imag = ops.fft((x, ops.zeros_like(x)))
    magnitude = ops.sqrt(ops.square(real) + ops.square(imag)) / channels
    axes = tuple(range(len(x.shape) - 1))
    return ops.mean(magnitude, axis=axes) if axes else magnitude


def frequency_intensity(x):
    """Model-wise frequency intensity L(X) ("Eq. 5"): the mean over all C bins of the channel
    spectrum; one number per layer. Returns a float32 scalar tensor."""
    return ops.mean(channel_spectrum(x))
