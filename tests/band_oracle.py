"""SPEC.md 2.1's common-band pair loss in numpy float64 (maps on different grids): the tests'
oracle, independent of `keras_spectralkd.spectral` (numpy's rfft2 and the PyTorch channel
pooling of tests/torch_objective.py)."""

import numpy as np

import torch_objective as ref


def band_bins(feature_map, grid):
    """rfft2 bins of a (B, H, W, C) map at the frequencies of `grid`, on its ortho scale."""
    height, width = feature_map.shape[1:3]
    grid_h, grid_w = grid
    spectrum = np.fft.rfft2(np.asarray(feature_map, np.float64), axes=(1, 2))
    rows = (np.fft.fftfreq(grid_h) * grid_h).astype(int) % height
    return spectrum[:, rows][:, :, : grid_w // 2 + 1] * np.sqrt(grid_h * grid_w) / (height * width)


def band_pair_loss(student_map, teacher_map):
    """Teacher channels pooled to the student's, then the mean squared difference of the real
    and imaginary parts of both maps' bins on the common grid (min H, min W)."""
    teacher_nchw = ref.pool_channels(ref.to_nchw(teacher_map), student_map.shape[-1])
    teacher_map = teacher_nchw.permute(0, 2, 3, 1).numpy()
    grid = (min(student_map.shape[1], teacher_map.shape[1]),
            min(student_map.shape[2], teacher_map.shape[2]))
    diff = band_bins(student_map, grid) - band_bins(teacher_map, grid)
    return 0.5 * (np.mean(diff.real ** 2) + np.mean(diff.imag ** 2))
