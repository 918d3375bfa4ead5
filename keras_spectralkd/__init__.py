"""keras_spectralkd: spectral analysis and SpectralKD distillation of vision transformers.

The public API, re-exported; see README.md and SPEC.md for what each piece computes.
"""

from keras_spectralkd.spectral import (
    channel_spectrum,
    frequency_intensity,
    pool_channels,
    rfft2,
    spectral_alignment_loss,
    spectral_pair_loss,
)
from keras_spectralkd.distiller import Distiller
from keras_spectralkd.distillation_loss import SpectralDistillation

__version__ = "0.1.0"
