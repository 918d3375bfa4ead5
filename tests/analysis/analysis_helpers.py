"""Stand-in models for the analysis tests, and SPEC.md 5's numpy definitions written out.

(A uniquely named module, not conftest: tests import from it by name.)
"""

import keras
import numpy as np
from keras import layers

from keras_spectralkd.analysis import Profile
from keras_spectralkd.models.backbone import Backbone


# === SPEC.md 5, literally (the oracle) ===
def numpy_channel_spectrum(x):
    x = np.asarray(x, dtype=np.float64)
    channels = x.shape[-1]
    return np.abs(np.fft.fft(x, axis=-1) / channels).mean(axis=(0, 1, 2))


def numpy_intensity(x):
    return numpy_channel_spectrum(x).mean()


def numpy_entropy(x, bins=100):
    """Per token: np.histogram over the global min..max of x, p = counts / C, -sum p log2 p;
    averaged over tokens and images. A plain loop: slow but obviously the definition."""
    x = np.asarray(x, dtype=np.float64)
    low, high = x.min(), x.max()
    tokens = x.reshape(-1, x.shape[-1])
    entropies = []
    for token in tokens:
        counts, _ = np.histogram(token, bins=bins, range=(low, high))
        p = counts[counts > 0] / counts.sum()
        entropies.append(-(p * np.log2(p)).sum())
    return float(np.mean(entropies))


def numpy_magnitude(x):
    return float(np.abs(np.asarray(x, dtype=np.float64)).mean())


# === Stand-ins following the backbone protocol ===
class NumpyBackbone:
    """Protocol stand-in without Keras: each unit's map is a fixed numpy function of each image,
    so maps do not depend on how images are batched (streaming can be tested for exact equality).

    Unit i: (B, h_i, w_i, C_i) = a random projection of the image's pixels, squashed, plus a
    per-unit offset. Widths and grids may differ per unit (like Swin stages).
    """

    def __init__(self, widths=(6, 8, 12, 5), grids=(4, 4, 2, 2), image_size=8, seed=0):
        rng = np.random.default_rng(seed)
        self.name = "numpy_backbone"
        self.image_size = image_size
        self.widths, self.grids = list(widths), list(grids)
        self._weights = [
            rng.normal(size=(3 * (image_size // g) ** 2, c)) for c, g in zip(widths, grids)
        ]
        self._offsets = rng.normal(size=len(widths))
        self.calls = 0

    @property
    def feature_info(self):
        return [
            {"module": f"unit_{i}", "num_chs": c, "reduction": self.image_size // g, "grid": (g, g)}
            for i, (c, g) in enumerate(zip(self.widths, self.grids))
        ]

    def unit_map(self, images, unit):
        images = np.asarray(images, dtype=np.float64)
        batch, grid = images.shape[0], self.grids[unit]
        patch = self.image_size // grid
        patches = images.reshape(batch, grid, patch, grid, patch, 3).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(batch, grid, grid, -1)
        return (np.tanh(patches @ self._weights[unit]) * (unit + 1) + self._offsets[unit]).astype(
            np.float32
        )

    def forward_intermediates(self, images, indices=None, training=False):
        self.calls += 1
        indices = range(len(self.widths)) if indices is None else indices
        logits = np.zeros((np.asarray(images).shape[0], 3), dtype=np.float32)
        return logits, [self.unit_map(images, i) for i in indices]


@keras.saving.register_keras_serializable(package="keras_spectralkd_tests")
class WideningBackbone(Backbone):
    """A Keras backbone whose units widen and downsample like Swin stages.

    Patchify to `widths[0]` channels, then per unit: a residual tanh MLP; units after the first
    first merge 2x2 patches (space-to-depth + Dense to the unit's width). Map i is
    (B, grid / 2^i, grid / 2^i, widths[i]) with grid = image_size / patch_size.
    """

    def __init__(self, image_size=16, patch_size=2, widths=(6, 8, 12), num_classes=5, **kwargs):
        images = keras.Input((image_size, image_size, 3), name="images")
        x = layers.Conv2D(widths[0], patch_size, strides=patch_size, name="patch_embed")(images)
        grid = image_size // patch_size
        units, info = [], []
        for i, width in enumerate(widths):
            if i > 0:
                x = layers.Reshape((grid // 2, 2, grid // 2, 2, x.shape[-1]))(x)
                x = layers.Permute((1, 3, 2, 4, 5))(x)
                x = layers.Reshape((grid // 2, grid // 2, 4 * x.shape[-1]))(x)
                x = layers.Dense(width, name=f"merge_{i}")(x)
                grid //= 2
            branch = layers.Dense(width, activation="tanh", name=f"unit_{i}_fc")(x)
            x = layers.Add(name=f"unit_{i}")([x, branch])
            units.append(x)
            info.append(
                {
                    "module": f"unit_{i}",
                    "num_chs": width,
                    "reduction": image_size // grid,
                    "grid": (grid, grid),
                }
            )
        logits = layers.Dense(num_classes, name="head")(layers.GlobalAveragePooling2D()(x))
        super().__init__(images, logits, unit_outputs=units, feature_info=info, **kwargs)
        self.image_size, self.patch_size = image_size, patch_size
        self.widths, self.num_classes = list(widths), num_classes

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=self.image_size,
            patch_size=self.patch_size,
            widths=self.widths,
            num_classes=self.num_classes,
        )
        return config


# === Hand-made profiles ===
def make_profile(intensity, widths=None, spectrum_fn=None, entropy=None, name="m"):
    """A Profile with the given intensities; spectra follow `spectrum_fn(normalised f)`, scaled
    so that their mean is the unit's intensity."""
    intensity = np.asarray(intensity, dtype=np.float64)
    depth = len(intensity)
    widths = widths or [16] * depth
    spectra = []
    for value, channels in zip(intensity, widths):
        frequency = np.abs(np.fft.fftfreq(channels))  # symmetric, as a real signal's spectrum
        shape = spectrum_fn(frequency) if spectrum_fn else np.ones(channels)
        spectra.append(shape / shape.mean() * value)
    return Profile(
        model_name=name,
        depth=depth,
        units=list(range(depth)),
        num_channels=widths,
        grids=[(2, 2)] * depth,
        spectra=spectra,
        intensity=[s.mean() for s in spectra],
        entropy=entropy,
        magnitude=intensity * 2,
        num_images=1,
    )


def cait_like_profile(
    floor=0.2, rise=(0.36, 0.40, 0.45, 0.52, 0.60, 0.75), front=(0.62, 0.48), noise=0.0, seed=0
):
    """24 units: 2 high first blocks, a long low floor (16 blocks), 6 last blocks rising
    gradually: the U that made the paper pick teacher blocks 0 1 18..23."""
    rng = np.random.default_rng(seed)
    middle = floor + np.linspace(0.0, 0.04, 16) + noise * rng.standard_normal(16)
    return np.concatenate([front, middle, rise])
