"""keras_spectralkd: spectral analysis and SpectralKD distillation of vision transformers.

The public API: `import keras_spectralkd as ks`, then `ks.models.create(...)`,
`ks.convert.from_timm(...)`, `ks.Distiller`, `ks.TeacherCache`, `ks.SpectralDistillation`, `ks.analysis`,
`ks.callbacks.SpectralTensorBoard`, `ks.data`, `ks.taps` (named layers of any Keras model),
`ks.training`, `ks.precision` (what `precision="auto"` picks on this machine) and the spectral
functions. Each
is imported on first use (PEP 562), so importing the package imports neither Keras nor a
backend, and changes nothing in the process. See README.md for what each piece computes;
"SPEC.md N" in docstrings refers to section N of keras_spectralkd/SPEC.md, shipped with the
package.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it (the module itself where the names are the same).
_EXPORTS = {
    "analysis": "keras_spectralkd.analysis",
    "callbacks": "keras_spectralkd.callbacks",
    "convert": "keras_spectralkd.convert",
    "data": "keras_spectralkd.data",
    "models": "keras_spectralkd.models",
    "precision": "keras_spectralkd.precision",
    "spectral": "keras_spectralkd.spectral",
    "taps": "keras_spectralkd.taps",
    "training": "keras_spectralkd.training",
    "Distiller": "keras_spectralkd.distiller",
    "SpectralDistillation": "keras_spectralkd.distillation_loss",
    "TeacherCache": "keras_spectralkd.teacher_cache",
    "channel_spectrum": "keras_spectralkd.spectral",
    "frequency_intensity": "keras_spectralkd.spectral",
    "pool_channels": "keras_spectralkd.spectral",
    "rfft2": "keras_spectralkd.spectral",
    "spectral_alignment_loss": "keras_spectralkd.spectral",
    "spectral_pair_loss": "keras_spectralkd.spectral",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if _EXPORTS[name] == f"{__name__}.{name}" else getattr(module, name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
