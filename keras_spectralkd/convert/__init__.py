"""Weight import from timm checkpoints."""

from keras_spectralkd.convert.timm import ConversionError, from_timm, load_state_dict
