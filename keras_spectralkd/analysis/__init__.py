"""Spectral analysis of backbones: profiling, comparison, layer-pair selection, plots (SPEC.md 5, 6)."""

from keras_spectralkd.analysis.compare import ProfileComparison
from keras_spectralkd.analysis.compare import compare_profiles
from keras_spectralkd.analysis.compare import profile_correlation
from keras_spectralkd.analysis.compare import spectrum_distance
from keras_spectralkd.analysis.plots import plot_entropy_magnitude
from keras_spectralkd.analysis.plots import plot_intensity
from keras_spectralkd.analysis.plots import plot_layer_spectra
from keras_spectralkd.analysis.plots import save_profile_figures
from keras_spectralkd.analysis.profile import Profile
from keras_spectralkd.analysis.profile import profile_model
from keras_spectralkd.analysis.selection import format_layer_pairs
from keras_spectralkd.analysis.selection import parse_layer_pairs
from keras_spectralkd.analysis.selection import profile_ends
from keras_spectralkd.analysis.selection import select_layer_pairs
