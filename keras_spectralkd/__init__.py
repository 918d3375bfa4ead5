"""keras_spectralkd: spectral analysis and SpectralKD distillation of vision transformers.

The public API, re-exported; see README.md and SPEC.md for what each piece computes.
"""

from keras_spectralkd import _startup

# Keras may import TensorFlow: without its C++ start-up lines on the console (see _startup).
_startup.quiet_import("keras")

from keras_spectralkd.spectral import (  # noqa: E402
    channel_spectrum,
    frequency_intensity,
    pool_channels,
    rfft2,
    spectral_alignment_loss,
    spectral_pair_loss,
)
from keras_spectralkd.distiller import Distiller  # noqa: E402
from keras_spectralkd.distillation_loss import SpectralDistillation  # noqa: E402

__version__ = "0.1.0"
