"""DeiT's image transforms for tf.data, built from Keras core augmentation layers (SPEC.md 7).

Train (per image): RandomResizedCrop(224, scale 0.08-1, ratio 3/4-4/3, bicubic) -> horizontal
flip -> RandAugment (m9, mstd 0.5) -> normalise (ImageNet mean/std) -> RandomErasing (p 0.25,
per-pixel normal noise). MixUp / CutMix are available on batches and off by default, as in the
reference. Eval: resize the shorter side to 256 (bicubic) -> center crop 224 -> normalise.

Everything here runs inside `tf.data` (which the Keras layers support on every backend) and
returns float32 channels-last images, so the pipelines feed `fit` on TensorFlow, JAX and torch.

How this differs from timm's `rand-m9-mstd0.5-inc1` (the reference's transform), and why:
- Keras core has the same 15 operations (AutoContrast, Equalize, Invert, Rotate, Posterize,
  Solarize, SolarizeAdd, Color, Contrast, Brightness, Sharpness, ShearX/Y, TranslateX/Y), but its
  layers draw each strength uniformly from a range instead of timm's fixed magnitude plus a
  N(0, 0.5) jitter. Where a Keras layer takes a (low, high) range with a random sign (Shear) we
  use magnitudes 8.5-9.5 (timm's m9 +- one mstd); elsewhere the range runs from 0 (or the
  identity) to timm's strength at m9.5, so our average strength is lower than timm's.
- Color can only desaturate in Keras (timm also over-saturates); Brightness is additive in Keras
  (timm multiplies) and is set to a comparable mean shift (+-0.36 of the range); SolarizeAdd
  adds to every pixel (timm only below 128).
- Equalize is PIL's algorithm written in TensorFlow (Keras' `Equalization` takes ~10 s to
  trace inside tf.data when the global backend is JAX); the 14 others are Keras layers.
- As in timm: 2 operations per image, drawn uniformly with replacement, each applied with
  probability 0.5, chosen independently for every image (Keras' own `RandAugment` layer draws
  one choice per batch and spans much larger strengths, e.g. rotations up to 180 degrees).
- RandomResizedCrop uses `tf.image.sample_distorted_bounding_box` (10 attempts, aspect ratio
  drawn uniformly, not log-uniformly; falls back to the whole image, timm to a center crop).
- Random erasing is timm's algorithm written in TensorFlow (`random_erasing`: area U(0.02, 1/3),
  log-uniform aspect ratio in 0.3-3.3, up to 10 draws, N(0, 1) noise per pixel in normalised
  space as timm's `mode="pixel"`), seeded per image like the crop and the flip. Keras'
  `RandomErasing` draws the box's sides as independent sqrt-uniform fractions of the image's
  (a box shaped like the image, not square on average) and draws a whole image of noise.
- Resizing is TensorFlow's bicubic with antialiasing when downscaling (PIL's bicubic, used by
  timm, also filters when downscaling; values differ by small interpolation error).
"""

import math

import keras
import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875  # resize 256 -> crop 224 (DeiT)
# timm's fill for geometric ops: the ImageNet mean in pixel units (one value: Keras takes one).
FILL_VALUE = round(255 * sum(IMAGENET_MEAN) / 3)


# === Helpers ===
def _as_pair(value, name):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair; got {value!r}.")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _check_range(value, name, low=0.0, high=None):
    if not isinstance(value, (tuple, list)) or len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high; got {value!r}.")
    if value[0] < low or (high is not None and value[1] > high):
        raise ValueError(f"{name}={value!r} must lie within [{low}, {high}].")
    return float(value[0]), float(value[1])


def decode_image(image):
    """Encoded bytes (JPEG/PNG, any channels) or a uint8 tensor -> (H, W, 3) uint8."""
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
    if image.shape.rank == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return image


def normalize(image, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Pixels in [0, 255] -> `(x / 255 - mean) / std`, float32, channels last."""
    image = tf.cast(image, tf.float32)
    channels = len(mean)
    # One multiply and one add per pixel, (x / 255 - m) / s = x * (1 / (255 s)) - m / s, over
    # rows of (width x channels) values: Eigen broadcasts a vector as long as a row much faster
    # than a 3-vector (docs/performance.md, input pipeline).
    scale = tf.constant([1.0 / (255.0 * s) for s in std], tf.float32)
    offset = tf.constant([-m / s for m, s in zip(mean, std)], tf.float32)
    shape = tf.shape(image)
    width = shape[-2]
    rows = tf.reshape(image, tf.stack([-1, width * channels]))
    out = tf.reshape(rows * tf.tile(scale, [width]) + tf.tile(offset, [width]), shape)
    out.set_shape(image.shape)
    return out


def resize(image, size, method="bicubic"):
    """Resizes to `size` (h, w) with antialiasing; float32 output clipped to [0, 255].

    Antialiasing only changes downscaling; an upscale (both sides grow) takes TensorFlow's plain
    kernel, faster and as close to PIL's bicubic (timm's) as the antialiased one: the two
    differ by how they compute the kernel weights (tests/data/test_transforms.py bounds it).
    """
    image = tf.cast(image, tf.float32)
    size = tf.convert_to_tensor(size, tf.int32)
    upscale = tf.reduce_all(tf.shape(image)[-3:-1] <= size)
    image = tf.cond(
        upscale,
        lambda: tf.image.resize(image, size, method=method, antialias=False),
        lambda: tf.image.resize(image, size, method=method, antialias=True),
    )
    return tf.clip_by_value(image, 0.0, 255.0)


def resize_shorter_and_center_crop(image, image_size, crop_pct=DEFAULT_CROP_PCT,
                                   method="bicubic"):
    """DeiT's eval transform minus normalisation: shorter side -> image_size / crop_pct
    (256 for 224), then the central `image_size` square. (H, W, 3) -> float32 [0, 255]."""
    height, width = _as_pair(image_size, "image_size")
    image = decode_image(image)
    shape = tf.shape(image)
    in_h, in_w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    # torchvision's Resize(int) scales the shorter side to int(size / crop_pct).
    target = float(math.floor(max(height, width) / crop_pct))
    # torchvision's Resize(int): the shorter side becomes `target`, the longer one
    # int(target * long / short) (floored); the center crop offsets round half to even.
    new_h = tf.cast(tf.where(in_h <= in_w, target, tf.floor(target * in_h / in_w)), tf.int32)
    new_w = tf.cast(tf.where(in_w < in_h, target, tf.floor(target * in_w / in_h)), tf.int32)
    image = resize(image, tf.stack([new_h, new_w]), method)
    top = tf.cast(tf.round(tf.cast(new_h - height, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_w - width, tf.float32) / 2.0), tf.int32)
    image = image[top:top + height, left:left + width]
    image.set_shape((height, width, 3))
    return image


def random_resized_crop(image, image_size, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        method="bicubic"):
    """timm's RandomResizedCrop for one image, with a stateless `seed` ((2,) int tensor).

    Args:
        image: encoded bytes (decoded only inside the crop window for JPEGs, which is much
            faster) or an (H, W, C) uint8 tensor.
        image_size: output side (int) or (h, w).
        seed: a (2,) int32/int64 tensor; the same seed gives the same crop.
        scale: range of the crop's area as a fraction of the image.
        ratio: range of the crop's aspect ratio (width / height).
    Returns:
        (h, w, 3) float32 in [0, 255].
    """
    size = _as_pair(image_size, "image_size")

    def window(shape):
        begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape,
            bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
            seed=seed,
            min_object_covered=0.0,
            aspect_ratio_range=ratio,
            area_range=scale,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        return begin[0], begin[1], crop_size[0], crop_size[1]

    def crop_decoded(decoded):
        top, left, height, width = window(tf.shape(decoded))
        return decoded[top:top + height, left:left + width]

    if image.dtype == tf.string:

        def crop_jpeg():
            top, left, height, width = window(tf.image.extract_jpeg_shape(image))
            return tf.image.decode_and_crop_jpeg(
                image, tf.stack([top, left, height, width]), channels=3
            )

        # A few ImageNet "JPEG"s are PNGs: those are decoded whole, then cropped.
        crop = tf.cond(
            tf.io.is_jpeg(image), crop_jpeg, lambda: crop_decoded(decode_image(image))
        )
    else:
        crop = crop_decoded(decode_image(image))
    crop = decode_image(crop)
    out = resize(crop, size, method)
    out.set_shape(size + (3,))
    return out


# === Random erasing ===
def random_erasing(image, seed, probability=0.25, scale=(0.02, 1.0 / 3.0), ratio=(0.3, 1.0 / 0.3),
                   attempts=10):
    """timm's `RandomErasing(mode="pixel")` for one normalised image, with a stateless `seed`.

    With probability `probability`, a box of area U(scale) x the image's and aspect ratio
    (height / width) log-uniform in `ratio` (up to `attempts` draws until one fits) is filled
    with N(0, 1) noise, one value per pixel and channel, as timm does after normalisation.
    Only the erased box's noise is drawn, and nothing is computed for the 75% of images left
    alone, where Keras' `RandomErasing` layer draws a full image of noise per image (a large
    share of the transform's time) and its sides as sqrt-uniform fractions instead.

    Args:
        image: (H, W, C) float32 (normalised pixels).
        seed: a (2,) int tensor; the same seed gives the same box and noise.
    Returns:
        the image, erased or not, float32.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1]; got {probability!r}.")
    scale = _check_range(scale, "scale", 0.0, 1.0)
    ratio = _check_range(ratio, "ratio", 1e-6)
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1; got {attempts!r}.")
    image = tf.convert_to_tensor(image, tf.float32)
    apply_seed, box_seed, noise_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    )

    def erase():
        shape = tf.shape(image)
        height, width = shape[0], shape[1]
        draws = tf.random.stateless_uniform((4, attempts), box_seed)
        area = tf.cast(height * width, tf.float32) * (scale[0] + (scale[1] - scale[0]) * draws[0])
        log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
        aspect = tf.exp(log_low + (log_high - log_low) * draws[1])
        # Python's round (timm's) rounds halves to even, as tf.round does.
        box_h = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
        box_w = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
        fits = (box_h < height) & (box_w < width)
        first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)  # the first that fits
        box_h = tf.where(fits[first], box_h[first], 0)
        box_w = tf.where(fits[first], box_w[first], 0)
        # random.randint(0, H - h): both ends included.
        top = tf.cast(draws[2, first] * tf.cast(height - box_h + 1, tf.float32), tf.int32)
        left = tf.cast(draws[3, first] * tf.cast(width - box_w + 1, tf.float32), tf.int32)
        top, left = tf.minimum(top, height - box_h), tf.minimum(left, width - box_w)
        noise = tf.random.stateless_normal(tf.stack([box_h, box_w, shape[2]]), noise_seed)
        noise = tf.pad(noise, [[top, height - top - box_h], [left, width - left - box_w], [0, 0]])
        rows = tf.range(height)[:, None, None]
        cols = tf.range(width)[None, :, None]
        inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
        return tf.where(inside, noise, image)

    return tf.cond(tf.random.stateless_uniform((), apply_seed) < probability, erase,
                   lambda: tf.identity(image))


# === RandAugment ===
def equalize(image):
    """PIL's `ImageOps.equalize` (what timm applies), per channel, on (H, W, 3) in [0, 255]."""

    def channel(values):
        pixels = tf.cast(tf.clip_by_value(tf.round(values), 0, 255), tf.int32)
        histogram = tf.math.bincount(tf.reshape(pixels, [-1]), minlength=256, maxlength=256)
        last = tf.gather(histogram, tf.reduce_max(tf.where(histogram > 0)))
        step = (tf.reduce_sum(histogram) - tf.cast(last, histogram.dtype)) // 255
        lut = (tf.cumsum(histogram, exclusive=True) + step // 2) // tf.maximum(step, 1)
        lut = tf.cast(tf.clip_by_value(lut, 0, 255), tf.float32)
        return tf.where(step > 0, tf.gather(lut, pixels), values)

    image = tf.cast(image, tf.float32)
    return tf.stack([channel(image[..., c]) for c in range(3)], axis=-1)


class RandAugment:
    """timm-style RandAugment (`rand-m9-mstd0.5-inc1`) made of Keras core layers, per image.

    Each image gets `num_ops` operations drawn uniformly (with replacement) from the 15 of timm's
    "increasing" set, each applied with probability `prob`; only the chosen operation is
    computed. See the module docstring for how the strengths map onto the Keras layers.

    Args:
        num_ops: operations per image (2).
        magnitude: timm's magnitude on its 0-10 scale (9).
        magnitude_std: timm's magnitude jitter (0.5); sets the span of the strength ranges.
        prob: probability of applying each drawn operation (0.5, timm's default).
        fill_value: pixel value filling the area uncovered by rotations/shears/translations.
        seed: seed of the Keras layers' random generators.
    Call: `(image (H, W, 3) float in [0, 255], seed (2,) int tensor) -> same shape, float32`.
    """

    OPS = (
        "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
        "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
        "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
        "TranslateYRel",
    )

    def __init__(self, num_ops=2, magnitude=9, magnitude_std=0.5, prob=0.5,
                 fill_value=FILL_VALUE, seed=None):
        if num_ops < 0:
            raise ValueError(f"num_ops must be >= 0; got {num_ops!r}.")
        if not 0 <= magnitude <= 10:
            raise ValueError(f"magnitude is on timm's 0-10 scale; got {magnitude!r}.")
        if magnitude_std < 0:
            raise ValueError(f"magnitude_std must be >= 0; got {magnitude_std!r}.")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1]; got {prob!r}.")
        self.num_ops = int(num_ops)
        self.magnitude = float(magnitude)
        self.magnitude_std = float(magnitude_std)
        self.prob = float(prob)
        self.fill_value = float(fill_value)
        self.seed = seed
        low = max(0.0, self.magnitude - self.magnitude_std) / 10.0
        high = min(10.0, self.magnitude + self.magnitude_std) / 10.0
        self.layers = self._make_layers(low, high)
        self._augment_fn = None

    def _make_layers(self, low, high):
        seed = self.seed
        layers = keras.layers
        value_range = (0, 255)
        common = dict(dtype="float32")  # never the global mixed policy: pixels stay float32

        def next_seed(offset):
            return None if seed is None else seed + offset

        geometry = dict(fill_mode="constant", fill_value=self.fill_value, **common)
        return {
            "AutoContrast": layers.AutoContrast(value_range=value_range, **common),
            # Keras' Equalization traces a 256-step loop per channel when the global backend is
            # JAX, even inside tf.data (~10 s per trace); PIL's algorithm in TF is exact and fast.
            "Equalize": equalize,
            "Invert": layers.RandomInvert(
                factor=(1.0, 1.0), value_range=value_range, seed=next_seed(1), **common
            ),
            # timm: +-30 degrees * m / 10.
            "Rotate": layers.RandomRotation(
                factor=30.0 * high / 360.0, seed=next_seed(2), **geometry
            ),
            # timm: keep 4 - int(4 m / 10) bits (1 bit at m9).
            "PosterizeIncreasing": layers.RandomPosterization(
                factor=max(1, 4 - int(4 * (self.magnitude / 10.0))), value_range=value_range,
                seed=next_seed(3), **common
            ),
            # timm: invert pixels above 256 - 256 m / 10.
            "SolarizeIncreasing": layers.Solarization(
                threshold_factor=(1.0 - high, 1.0 - low), value_range=value_range,
                seed=next_seed(4), **common
            ),
            # timm: add 110 m / 10 to pixels below 128.
            "SolarizeAdd": layers.Solarization(
                addition_factor=(110 * low / 255, 110 * high / 255), threshold_factor=(1.0, 1.0),
                value_range=value_range, seed=next_seed(5), **common
            ),
            # timm: enhance factor 1 +- 0.9 m / 10; Keras can only desaturate.
            "ColorIncreasing": layers.RandomColorDegeneration(
                factor=(0.0, 0.9 * high), seed=next_seed(6), **common
            ),
            "ContrastIncreasing": layers.RandomContrast(
                factor=0.9 * high, value_range=value_range, seed=next_seed(7), **common
            ),
            # timm multiplies by 1 +- 0.9 m / 10; on an average pixel (~115) that shifts it by
            # about +-0.36 of the range, which Keras' additive brightness takes as its range.
            "BrightnessIncreasing": layers.RandomBrightness(
                factor=0.9 * high * 115.0 / 255.0, value_range=value_range, seed=next_seed(8),
                **common
            ),
            # Keras: 0 blurs fully, 0.5 is the identity, 1 sharpens: timm's factor / 2.
            "SharpnessIncreasing": layers.RandomSharpness(
                factor=((1.0 - 0.9 * high) / 2.0, (1.0 + 0.9 * high) / 2.0),
                value_range=value_range, seed=next_seed(9), **common
            ),
            # timm: shear 0.3 m / 10 with a random sign (Keras draws the sign too).
            "ShearX": layers.RandomShear(
                x_factor=(0.3 * low, 0.3 * high), y_factor=0.0, seed=next_seed(10), **geometry
            ),
            "ShearY": layers.RandomShear(
                x_factor=0.0, y_factor=(0.3 * low, 0.3 * high), seed=next_seed(11), **geometry
            ),
            # timm: translate 0.45 m / 10 of the side with a random sign.
            "TranslateXRel": layers.RandomTranslation(
                height_factor=0.0, width_factor=0.45 * high, seed=next_seed(12), **geometry
            ),
            "TranslateYRel": layers.RandomTranslation(
                height_factor=0.45 * high, width_factor=0.0, seed=next_seed(13), **geometry
            ),
        }

    def __call__(self, image, seed):
        image = tf.cast(image, tf.float32)
        if self.num_ops == 0:
            return image
        # A tf.function kept by this object: every pipeline built over it (one per epoch)
        # reuses the same trace instead of re-tracing the 15 Keras layers.
        if self._augment_fn is None:
            self._augment_fn = tf.function(self._augment)
        return self._augment_fn(image, tf.cast(seed, tf.int64))

    def _augment(self, image, seed):
        shape = image.shape
        choice_seed, apply_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, num=2)
        )
        choices = tf.random.stateless_uniform(
            (self.num_ops,), choice_seed, minval=0, maxval=len(self.OPS), dtype=tf.int32
        )
        applies = tf.random.stateless_uniform((self.num_ops,), apply_seed) < self.prob
        branches = [self._branch(name) for name in self.OPS]

        # One switch traced once (in a loop over the ops), not once per op: tracing the 15
        # Keras layers is the slow part of building the pipeline.
        # `tf.cond`, not `tf.where`: an operation drawn but not applied (half of them) is
        # not computed at all.
        def body(i, image):
            image = tf.cond(
                applies[i],
                lambda: tf.switch_case(choices[i], [lambda b=b: b(image) for b in branches]),
                lambda: image,
            )
            image.set_shape(shape)
            return i + 1, image

        _, image = tf.while_loop(
            lambda i, _: i < self.num_ops, body, [tf.constant(0), image]
        )
        image.set_shape(shape)
        return image

    def _branch(self, name):
        layer = self.layers[name]

        def apply(image):
            if isinstance(layer, keras.layers.Layer):
                out = tf.convert_to_tensor(layer(image, training=True))
            else:
                out = layer(image)
            return tf.clip_by_value(tf.cast(out, tf.float32), 0.0, 255.0)

        return apply


# === The DeiT train and eval transforms ===
class TrainTransform:
    """DeiT's training transform for one image (see the module docstring).

    Args:
        image_size: output side (224) or (h, w).
        scale, ratio: RandomResizedCrop's area and aspect-ratio ranges.
        hflip: probability of a horizontal flip (0.5).
        rand_augment: a `RandAugment`, True for the paper's (m9, mstd 0.5), or None/False.
        random_erasing: probability of erasing a box (0.25); 0 for none.
        mean, std: normalisation (ImageNet's).
        interpolation: resize method ("bicubic").
        seed: seed of the Keras layers' generators (with the per-image seed given to the call,
            the transform is deterministic when the pipeline runs its map sequentially).
    Call: `(image (encoded bytes or (H, W, C) uint8), seed (2,) int tensor) -> (h, w, 3)
    float32 normalised`.
    """

    def __init__(self, image_size=224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5,
                 rand_augment=True, random_erasing=0.25, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 interpolation="bicubic", seed=None):
        self.image_size = _as_pair(image_size, "image_size")
        self.scale = _check_range(scale, "scale", 0.0, 1.0)
        self.ratio = _check_range(ratio, "ratio", 1e-6)
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip must be a probability in [0, 1]; got {hflip!r}.")
        if not 0.0 <= random_erasing <= 1.0:
            raise ValueError(f"random_erasing must be in [0, 1]; got {random_erasing!r}.")
        self.hflip = float(hflip)
        if rand_augment is True:
            rand_augment = RandAugment(seed=None if seed is None else seed + 100)
        self.rand_augment = rand_augment or None
        self.mean, self.std = tuple(mean), tuple(std)
        self.interpolation = interpolation
        self.random_erasing = float(random_erasing)

    def __call__(self, image, seed):
        crop_seed, flip_seed, augment_seed, erase_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, num=4)
        )
        image = random_resized_crop(image, self.image_size, crop_seed, self.scale, self.ratio,
                                    self.interpolation)
        if self.hflip > 0:
            flip = tf.random.stateless_uniform((), flip_seed) < self.hflip
            image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
        if self.rand_augment is not None:
            image = self.rand_augment(image, augment_seed)
        image = normalize(image, self.mean, self.std)
        if self.random_erasing > 0:
            image = random_erasing(image, erase_seed, self.random_erasing)
        image.set_shape(self.image_size + (3,))
        return image


class EvalTransform:
    """DeiT's evaluation transform: resize the shorter side to size / crop_pct (bicubic),
    center crop, normalise. Call: `image -> (h, w, 3) float32`."""

    def __init__(self, image_size=224, crop_pct=DEFAULT_CROP_PCT, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, interpolation="bicubic"):
        if not 0.0 < crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1]; got {crop_pct!r}.")
        self.image_size = _as_pair(image_size, "image_size")
        self.crop_pct = float(crop_pct)
        self.mean, self.std = tuple(mean), tuple(std)
        self.interpolation = interpolation

    def __call__(self, image):
        image = resize_shorter_and_center_crop(image, self.image_size, self.crop_pct,
                                               self.interpolation)
        return normalize(image, self.mean, self.std)


# === Batch-level mixing (off by default) ===
class MixUpCutMix:
    """timm's Mixup/CutMix switch on batches, with Keras' `MixUp` and `CutMix` layers.

    Off in the paper's recipe (SPEC.md 7); offered for completeness. Each batch gets MixUp or
    CutMix (CutMix with probability `switch_prob` when both are on). Labels become soft targets
    (B, num_classes), which the Distiller accepts.

    Args:
        num_classes: number of classes (labels are one-hot encoded first).
        mixup_alpha, cutmix_alpha: Beta parameters; 0 turns that method off.
        switch_prob: probability of CutMix when both are on (timm: 0.5).
        seed: seed of the layers' generators.
    Call: `(images (B, H, W, 3), labels (B,) ints) -> (images, (B, num_classes) float32)`.
    """

    def __init__(self, num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5,
                 seed=None):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(
                f"mixup_alpha and cutmix_alpha must be >= 0; got {mixup_alpha!r}, "
                f"{cutmix_alpha!r}."
            )
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError("MixUpCutMix needs mixup_alpha > 0 or cutmix_alpha > 0.")
        self.num_classes = int(num_classes)
        self.switch_prob = float(switch_prob) if mixup_alpha and cutmix_alpha else (
            1.0 if cutmix_alpha else 0.0
        )
        self.seed = seed
        self.mixup = keras.layers.MixUp(alpha=mixup_alpha, seed=seed, dtype="float32") if (
            mixup_alpha
        ) else None
        self.cutmix = keras.layers.CutMix(
            factor=cutmix_alpha, seed=None if seed is None else seed + 1, dtype="float32"
        ) if cutmix_alpha else None

    def __call__(self, images, labels, seed):
        labels = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes, dtype=tf.float32)
        data = {"images": images, "labels": labels}

        def run(layer):
            out = layer(dict(data), training=True)
            return tf.cast(out["images"], tf.float32), tf.cast(out["labels"], tf.float32)

        if self.cutmix is None:
            return run(self.mixup)
        if self.mixup is None:
            return run(self.cutmix)
        use_cutmix = tf.random.stateless_uniform((), seed) < self.switch_prob
        return tf.cond(use_cutmix, lambda: run(self.cutmix), lambda: run(self.mixup))
