"""Spectral analysis of backbones (SPEC.md 5, 6): profiling, comparison, layer pairs, plots."""

from keras_spectralkd.analysis.compare import ProfileComparison
from keras_spectralkd.analysis.compare import compare_profiles
from keras_spectralkd.analysis.compare import profile_correlation
from keras_spectralkd.analysis.compare import spectrum_distance
from keras_spectralkd.analysis.plots import IntensityPlot
from keras_spectralkd.analysis.plots import plot_entropy_magnitude
from keras_spectralkd.analysis.plots import plot_intensity
from keras_spectralkd.analysis.plots import plot_layer_spectra
from keras_spectralkd.analysis.plots import save_profile_figures
from keras_spectralkd.analysis.record import Profile
from keras_spectralkd.analysis.profile import profile_maps
from keras_spectralkd.analysis.profile import profile_model
from keras_spectralkd.analysis.selection import format_layer_pairs
from keras_spectralkd.analysis.selection import parse_layer_pairs
from keras_spectralkd.analysis.selection import profile_ends
from keras_spectralkd.analysis.selection import select_layer_pairs

__all__ = [
    "IntensityPlot",
    "Profile",
    "ProfileComparison",
    "compare_profiles",
    "format_layer_pairs",
    "parse_layer_pairs",
    "plot_entropy_magnitude",
    "plot_intensity",
    "plot_layer_spectra",
    "profile_correlation",
    "profile_ends",
    "profile_maps",
    "profile_model",
    "save_profile_figures",
    "select_layer_pairs",
    "spectrum_distance",
]
