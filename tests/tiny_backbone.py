"""A minimal model following the backbone protocol, for tests that need no real transformer."""

import keras
from keras import layers

from keras_spectralkd.models.backbone import Backbone


@keras.saving.register_keras_serializable(package="keras_spectralkd_tests")
class TinyBackbone(Backbone):
    """Patchify, then `depth` residual token-MLP units of width `width`, then pool and classify.

    Unit i's map is (B, image_size / patch, image_size / patch, width).
    """

    def __init__(self, image_size=8, patch_size=2, width=6, depth=3, num_classes=4, **kwargs):
        images = keras.Input((image_size, image_size, 3), name="images")
        x = layers.Conv2D(width, patch_size, strides=patch_size, name="patch_embed")(images)
        units = []
        for i in range(depth):
            branch = layers.Dense(width, activation="tanh", name=f"unit_{i}_fc")(x)
            x = layers.Add(name=f"unit_{i}")([x, branch])
            units.append(x)
        pooled = layers.GlobalAveragePooling2D(name="pool")(x)
        logits = layers.Dense(num_classes, name="head")(pooled)
        grid = image_size // patch_size
        info = [
            {"module": f"unit_{i}", "num_chs": width, "reduction": patch_size, "grid": (grid, grid)}
            for i in range(depth)
        ]
        super().__init__(images, logits, unit_outputs=units, feature_info=info, **kwargs)
        self.image_size, self.patch_size = image_size, patch_size
        self.width, self.depth, self.num_classes = width, depth, num_classes

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=self.image_size,
            patch_size=self.patch_size,
            width=self.width,
            depth=self.depth,
            num_classes=self.num_classes,
        )
        return config
