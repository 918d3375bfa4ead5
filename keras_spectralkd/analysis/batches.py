"""The data adapter of the analysis: whatever the user passes as `data`, numpy image batches out.

`profile_model` accepts a (N, H, W, C) array, a `tf.data.Dataset`, or any iterable of batches
(arrays, `(images, labels)` tuples, dicts with an `"images"`/`"image"` key), on any backend;
`iterate_images` turns each into (B, H, W, C) float32 numpy batches, and `to_float_array` brings
backend tensors (feature maps) back to numpy for the float64 statistics.
"""

import keras
import numpy as np


def to_float_array(x):
    """A backend tensor or array as numpy: float64 stays float64, anything else becomes float32
    (bfloat16/float16 maps under mixed precision are analysed in float32)."""
    array = np.asarray(keras.ops.convert_to_numpy(x))
    return array if array.dtype == np.float64 else array.astype(np.float32)


def iterate_images(data, batch_size):
    """Yields (B, H, W, C) float32 numpy batches from the supported `data` forms.

    Args:
        data: a (N, H, W, C) array or tensor (cut into `batch_size` batches), a
            `tf.data.Dataset` or any iterable of batches; a batch may be an array, a tuple/list
            with the images first, or a dict with an `"images"` or `"image"` key.
        batch_size: batch size when `data` is one array.
    """
    if _is_array(data):
        array = _to_numpy(data)
        _check_images(array, "data")
        for start in range(0, array.shape[0], batch_size):
            yield array[start : start + batch_size].astype(np.float32, copy=False)
        return
    iterable = data.as_numpy_iterator() if hasattr(data, "as_numpy_iterator") else data
    for element in iterable:
        if isinstance(element, dict):
            key = "images" if "images" in element else "image" if "image" in element else None
            if key is None:
                raise ValueError(
                    f"A dict batch needs an 'images' or 'image' key; got keys {sorted(element)}."
                )
            element = element[key]
        elif isinstance(element, (tuple, list)):
            element = element[0]
        images = _to_numpy(element).astype(np.float32, copy=False)
        _check_images(images, "a batch")
        yield images


def _is_array(value):
    """True for one array or tensor of images (not a dataset or a list of batches)."""
    return isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and hasattr(value, "dtype")
        and not hasattr(value, "as_numpy_iterator")
    )


def _to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(keras.ops.convert_to_numpy(value))
    except Exception:  # noqa: BLE001 - tensors of another framework (e.g. tf on torch)
        return np.asarray(value)


def _check_images(images, what):
    if images.ndim != 4:
        raise ValueError(
            f"Expected {what} of images shaped (B, H, W, C), channels-last; got shape "
            f"{images.shape}."
        )
