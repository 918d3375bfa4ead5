"""`TeacherCache`: the frozen teacher's outputs, computed once, fed to the `Distiller`.

The teacher is frozen and runs in inference mode, so on data that is not augmented its logits
and feature maps are a function of the image alone: every epoch, every seed and every arm of a
study that trains on the same images recomputes the same numbers. Computing them once and
passing them in the Distiller's inputs skips the teacher's forward in every training step
(in the miniature, the teacher's forward costs about three times the student's whole step).

    cache = TeacherCache.compute(teacher, x_train, units=[0, 5])
    distiller = Distiller(teacher, student, layer_pairs=[(0, 0), (3, 5)])
    distiller.fit(cache.inputs(x_train, units=[0, 5]), y_train, batch_size=128, epochs=8)

`inputs` gives the dict the Distiller takes instead of images, `{"images", "teacher_logits",
"teacher_maps"}`, row-aligned with the images, so Keras may shuffle and batch it like any input.
The loss and its gradients are those of the online teacher (tests/test_teacher_cache.py). With
augmentation (random crops, MixUp, RandAugment) the teacher sees a new image at every visit and
no cache applies: the runner refuses `cache_teacher` there.
"""

import os

import numpy as np


def _as_units(units):
    units = list(units or ())
    if len(set(units)) != len(units):
        raise ValueError(f"`units` must not repeat a unit; got {units}.")
    return units


class TeacherCache:
    """A teacher's logits and the maps of some of its units (or named layers) on N images.

    Args:
        logits: (N, K) array.
        maps: {unit: (N, h, w, C) array}, the units' maps as the Distiller aligns them.
    """

    def __init__(self, logits, maps=None):
        self.logits = np.asarray(logits)
        self.maps = {unit: np.asarray(m) for unit, m in (maps or {}).items()}
        if self.logits.ndim != 2:
            raise ValueError(f"`logits` must be (N, K); got shape {self.logits.shape}.")
        for unit, feature_map in self.maps.items():
            if feature_map.ndim != 4 or len(feature_map) != len(self.logits):
                raise ValueError(
                    f"The map of unit {unit!r} must be ({len(self.logits)}, h, w, C), one per "
                    f"image of the logits; got shape {feature_map.shape}.")

    def __len__(self):
        return len(self.logits)

    @property
    def units(self):
        return list(self.maps)

    @classmethod
    def compute(cls, teacher, images, units=(), batch_size=256):
        """Runs `teacher` (inference mode) over `images` in batches of `batch_size`.

        Args:
            teacher: the frozen teacher: a backbone with `forward_intermediates` for unit
                indices, or a functional model for layer names (`taps.FeatureTap`). Pass the
                Distiller's own `distiller.teacher` when it has a `teacher_dtype`, so the cache
                holds what that copy computes.
            images: (N, H, W, C) array, in the order `inputs` will be given.
            units: the units (ints) or layer names (strs) whose maps to keep: the union of the
                teacher sides of every `layer_pairs` that will use this cache.
        """
        import keras

        from keras_spectralkd import taps

        units = _as_units(units)
        images = np.asarray(images)
        if images.ndim != 4 or not len(images):
            raise ValueError(f"`images` must be a non-empty (N, H, W, C) array; got shape "
                             f"{images.shape}.")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
        named = [u for u in units if isinstance(u, str)]
        if named and len(named) != len(units):
            raise ValueError(f"`units` must be all unit indices or all layer names; got {units}.")
        if named:
            tap = taps.FeatureTap(teacher, named, "teacher")
            forward = lambda x: tap(x, training=False)  # noqa: E731
        elif units:
            forward = lambda x: teacher.forward_intermediates(  # noqa: E731
                x, indices=units, training=False)
        else:
            forward = lambda x: (teacher(x, training=False), [])  # noqa: E731
        logits, maps = [], [[] for _ in units]
        for start in range(0, len(images), int(batch_size)):
            batch_logits, batch_maps = forward(images[start:start + int(batch_size)])
            logits.append(keras.ops.convert_to_numpy(batch_logits))
            for kept, feature_map in zip(maps, batch_maps):
                kept.append(keras.ops.convert_to_numpy(feature_map))
        return cls(np.concatenate(logits),
                   {unit: np.concatenate(parts) for unit, parts in zip(units, maps)})

    def inputs(self, images, units=()):
        """The Distiller's input dict for `images` (the ones the cache was computed on, in
        that order) with the maps of `units` (the Distiller's teacher units, in its order)."""
        units = _as_units(units)
        if len(images) != len(self):
            raise ValueError(f"The cache holds {len(self)} images' outputs; got {len(images)} "
                             "images (give the images it was computed on, in that order).")
        missing = [u for u in units if u not in self.maps]
        if missing:
            raise ValueError(f"The cache has no maps of units {missing}; it holds "
                             f"{self.units}. Compute it with units covering every pair.")
        return {"images": images, "teacher_logits": self.logits,
                "teacher_maps": [self.maps[u] for u in units]}

    # === Files ===
    def save(self, path):
        """Writes an `.npz` file atomically (a killed write leaves no partial cache)."""
        arrays = {"logits": self.logits}
        keys = []
        for index, (unit, feature_map) in enumerate(self.maps.items()):
            arrays[f"map_{index}"] = feature_map
            keys.append(unit)
        arrays["units"] = np.array([repr(u) for u in keys], dtype=str)
        tmp = f"{path}.tmp-{os.getpid()}.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path):
        import ast

        with np.load(path) as data:
            units = [ast.literal_eval(u) for u in data["units"]]
            return cls(data["logits"], {u: data[f"map_{i}"] for i, u in enumerate(units)})
