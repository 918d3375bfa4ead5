"""Plots: written as non-empty PNGs, returned as figures, with the expected content."""

import numpy as np
import pytest
from analysis_helpers import cait_like_profile
from analysis_helpers import make_profile
from matplotlib.figure import Figure
from matplotlib.image import imread

from keras_spectralkd.analysis import IntensityPlot
from keras_spectralkd.analysis import plot_entropy_magnitude
from keras_spectralkd.analysis import plot_intensity
from keras_spectralkd.analysis import plot_layer_spectra
from keras_spectralkd.analysis import save_profile_figures
from keras_spectralkd.analysis import select_layer_pairs


@pytest.fixture(scope="module")
def profiles():
    def decaying(f):
        return np.exp(-5 * f) + 0.2

    teacher = make_profile(
        cait_like_profile(),
        widths=[384] * 24,
        spectrum_fn=decaying,
        entropy=np.linspace(4, 5, 24),
        name="teacher",
    )
    student = make_profile(
        cait_like_profile()[::2],
        widths=[192] * 12,
        spectrum_fn=decaying,
        entropy=np.linspace(4, 5, 12),
        name="student",
    )
    swin = make_profile(
        [0.5, 0.3, 0.2, 0.4], widths=[96, 192, 384, 768], spectrum_fn=decaying, name="swin"
    )
    return teacher, student, swin


def assert_png(path, min_width=600):
    image = imread(path)
    assert image.ndim == 3 and image.shape[1] >= min_width
    # Not blank: a real drawing has many non-white pixels.
    assert np.mean(image[..., :3] < 0.9) > 0.01


def test_intensity_plot(tmp_path, profiles):
    teacher, student, _ = profiles
    pairs = select_layer_pairs(teacher, 12)
    path = tmp_path / "intensity.png"
    figure = plot_intensity([teacher, student], ["T", "S"], layer_pairs=pairs, path=path)
    assert isinstance(figure, Figure)
    assert_png(path)
    axis = figure.axes[0]
    curves = [line for line in axis.lines if len(line.get_xdata()) > 2]
    np.testing.assert_allclose(curves[0].get_ydata(), teacher.intensity)
    np.testing.assert_allclose(curves[1].get_xdata(), student.relative_depth)
    connectors = [line for line in axis.lines if line.get_linestyle() == "--"]
    assert len(connectors) == len(pairs)
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert legend[0].startswith("T") and "selected layer pairs (8)" in legend[-1]
    assert axis.get_xlabel().startswith("Relative depth")


def test_intensity_plot_variants(profiles):
    teacher, student, _ = profiles
    figure = plot_intensity(teacher, normalize="mean", layer_pairs=[(0, 0), (11, 23)])
    np.testing.assert_allclose(figure.axes[0].lines[0].get_ydata().mean(), 1.0)
    with pytest.raises(ValueError, match="normalize"):
        plot_intensity(teacher, normalize="max")
    with pytest.raises(ValueError, match="teacher unit 30"):
        plot_intensity([teacher, student], layer_pairs=[(0, 30)])
    with pytest.raises(ValueError, match="student unit 12"):
        plot_intensity([teacher, student], layer_pairs=[(12, 0)])
    # Pairs drawn to the third profile (e.g. the SpectralKD student among several students).
    figure = plot_intensity(
        [teacher, student, student], layer_pairs=[(0, 0), (11, 23)], pairs_with=2
    )
    connectors = [line for line in figure.axes[0].lines if line.get_linestyle() == "--"]
    assert len(connectors) == 2
    with pytest.raises(ValueError, match="pairs_with"):
        plot_intensity([teacher, student], layer_pairs=[(0, 0)], pairs_with=2)
    with pytest.raises(ValueError, match="2 labels for 1 profiles"):
        plot_intensity(teacher, labels=["a", "b"])


def rgb(figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


@pytest.mark.parametrize("normalize", [None, "mean"])
def test_an_updated_intensity_plot_draws_as_a_new_one(profiles, normalize):
    teacher, student, swin = profiles
    pairs = select_layer_pairs(teacher, 12)
    # The student after "training": other values (a wider range, so the y axis moves too).
    trained = make_profile(
        np.linspace(0.9, 0.1, 12) ** 2, widths=[192] * 12, spectrum_fn=lambda f: np.exp(-f),
        name="student",
    )
    plot = IntensityPlot([teacher, student], ["T", "S"], layer_pairs=pairs, normalize=normalize,
                         title="epoch 1")
    rgb(plot.figure)  # drawn once before, as a callback does
    assert plot.fits([teacher, trained])
    updated = rgb(plot.update([teacher, trained], title="epoch 2"))
    fresh = rgb(plot_intensity([teacher, trained], ["T", "S"], layer_pairs=pairs,
                               normalize=normalize, title="epoch 2"))
    np.testing.assert_array_equal(updated, fresh)
    assert not np.array_equal(updated, rgb(plot_intensity(
        [teacher, student], ["T", "S"], layer_pairs=pairs, normalize=normalize, title="epoch 2")))
    # Other units or widths need a new plot (the legend and the pair markers name them).
    assert not plot.fits([teacher, swin]) and not plot.fits([teacher])
    with pytest.raises(ValueError, match="units, depths and widths"):
        plot.update([teacher, swin])


def test_layer_spectra_plot(tmp_path, profiles):
    teacher, student, swin = profiles
    path = tmp_path / "spectra.png"
    figure = plot_layer_spectra([teacher, swin], path=path)
    assert_png(path, min_width=1000)
    teacher_axis, swin_axis = figure.axes[:2]
    assert len(teacher_axis.lines) == 24 and len(swin_axis.lines) == 4
    # Several widths on one axis: each curve spans [0, 0.5) in normalised frequency.
    for line, channels in zip(swin_axis.lines, [96, 192, 384, 768]):
        assert len(line.get_xdata()) == channels // 2
        assert line.get_xdata()[-1] == pytest.approx(0.5 - 1 / channels)
    # Coloured by depth: first and last curve differ; one shared colorbar.
    assert teacher_axis.lines[0].get_color() != teacher_axis.lines[-1].get_color()
    assert figure.axes[-1].get_ylabel() == "Relative depth"
    assert teacher_axis.get_yscale() == "log"
    assert len(plot_layer_spectra(student, log_scale=False).axes) == 2  # panel + colorbar


def test_entropy_magnitude_plot(tmp_path, profiles):
    teacher, student, swin = profiles
    path = tmp_path / "em.png"
    figure = plot_entropy_magnitude([teacher, student, swin], path=path)
    assert_png(path)
    entropy_axis, magnitude_axis = figure.axes
    assert len(entropy_axis.lines) == 2  # the swin profile has no entropy
    assert len(magnitude_axis.lines) == 3
    np.testing.assert_allclose(magnitude_axis.lines[0].get_ydata(), teacher.magnitude)
    assert "bits" in entropy_axis.get_ylabel()


def test_save_profile_figures(tmp_path, profiles):
    teacher, student, _ = profiles
    paths = save_profile_figures(
        tmp_path / "figs", [teacher, student], layer_pairs=select_layer_pairs(teacher, 12)
    )
    assert set(paths) == {"intensity", "spectra", "entropy_magnitude"}
    for path in paths.values():
        assert_png(path)
