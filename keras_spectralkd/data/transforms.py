"""DeiT's image transforms for tf.data, equal to timm's (SPEC.md 7; docs/data.md).

Train (per image): RandomResizedCrop(224, scale 0.08-1, ratio 3/4-4/3, bicubic) -> horizontal
flip -> RandAugment (`rand-m9-mstd0.5-inc1`) -> normalise (ImageNet mean/std) ->
RandomErasing (p 0.25, per-pixel normal noise). No colour jitter: timm's `create_transform`
turns it off when RandAugment is on, as with DeiT's arguments. MixUp / CutMix are available on
batches and off by default, as in the reference. Eval: resize the shorter side to 256
(bicubic) -> center crop 224 -> normalise.

Every random draw (crop box, flip, RandAugment's operations, magnitudes and signs, the erased
box and its noise) comes from the stateless per-image seed given to the call, so a transform
is a pure function of (image, seed). Everything runs inside `tf.data` and returns float32
channels-last images, so the pipelines feed `fit` on TensorFlow, JAX and torch.

Against timm (tests/data/test_rand_augment.py, test_transforms.py):
- RandAugment's 15 operations are PIL's arithmetic (what timm calls) in TensorFlow, on integer
  pixels: equal to timm's pixel for pixel, the geometric ones through PIL's bicubic transform
  kernel (a = -1) with timm's per-channel fill. The draws follow timm: two operations with
  replacement, each applied with probability 0.5, magnitude N(9, 0.5) clipped to [0, 10] per
  operation, a random sign for the signed ones. One difference: at a drawn magnitude of 10,
  PosterizeIncreasing keeps 0 bits (a black image, Pillow < 11's result), where timm with
  Pillow >= 11 raises (its posterize accepts 1-8 bits only); it happens to 2.3% of Posterize
  draws.
- The crop box is timm's `get_params` (area, log-uniform aspect, position, the center-crop
  fallback), except that a box rounded to a zero side is redrawn instead of failing.
- Resizing is TensorFlow's bicubic (a = -0.5) with antialiasing when downscaling; PIL's
  bicubic resize (timm's) also filters when downscaling: the two differ by interpolation error
  (bounded in the tests); both round to integer pixels as PIL's uint8 does.
- Random erasing is timm's algorithm (`random_erasing`: area U(0.02, 1/3), log-uniform
  aspect ratio in 0.3-3.3, up to 10 draws, N(0, 1) noise per pixel in normalised space as
  timm's `mode="pixel"`).
"""

import math

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875  # resize 256 -> crop 224 (DeiT)


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


# TensorFlow's default JPEG IDCT ("INTEGER_FAST") is off PIL's (timm's decoder) by about one
# level on average and up to 12 on photographs; the accurate one equals PIL's exactly.
_JPEG_DCT = "INTEGER_ACCURATE"
# Decoding a JPEG window, libjpeg upsamples the chroma at the window's edges without the
# pixels beyond them; a margin of one MCU (up to 16 px) around the window restores them.
_JPEG_MARGIN = 16


def decode_image(image):
    """Encoded bytes (JPEG/PNG, any channels) or a uint8 tensor -> (H, W, 3) uint8; JPEGs
    decode as PIL decodes them (timm's reader)."""
    if image.dtype == tf.string:
        encoded = image
        image = tf.cond(
            tf.io.is_jpeg(encoded),
            lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method=_JPEG_DCT),
            lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
        )
        image.set_shape((None, None, 3))
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
    # Rounded as PIL's resize (timm's eval transform) rounds to uint8.
    image = tf.round(image[top:top + height, left:left + width])
    image.set_shape((height, width, 3))
    return image


def crop_window(shape, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts=10):
    """timm's `RandomResizedCropAndInterpolation.get_params` with a stateless `seed`.

    Up to `attempts` draws of an area U(scale) x the image's and an aspect ratio (width /
    height) log-uniform in `ratio`, sides rounded half to even as Python's round; the first
    that fits is placed uniformly (both ends included). If none fits: the center crop of the
    whole image clamped to `ratio` (torchvision's and timm's fallback).

    Args:
        shape: the image's shape, (H, W, ...) int tensor.
        seed: a (2,) int tensor.
    Returns:
        (top, left, height, width) int32 scalars.
    """
    height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    draws = tf.random.stateless_uniform((4, attempts), tf.cast(seed, tf.int64), dtype=tf.float64)
    area = (scale[0] + (scale[1] - scale[0]) * draws[0]) * (height * width)
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = tf.exp(log_low + (log_high - log_low) * draws[1])
    crop_w = tf.round(tf.sqrt(area * aspect))
    crop_h = tf.round(tf.sqrt(area / aspect))
    fits = (crop_w <= width) & (crop_h <= height) & (crop_w >= 1) & (crop_h >= 1)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    # random.randint(0, H - h) includes both ends.
    top = tf.floor(draws[2, first] * (height - crop_h[first] + 1))
    left = tf.floor(draws[3, first] * (width - crop_w[first] + 1))
    in_ratio = width / height
    fallback_w = tf.where(in_ratio > max(ratio), tf.round(height * max(ratio)), width)
    fallback_h = tf.where(in_ratio < min(ratio), tf.round(width / min(ratio)), height)
    found = tf.reduce_any(fits)
    crop_h = tf.where(found, crop_h[first], fallback_h)
    crop_w = tf.where(found, crop_w[first], fallback_w)
    top = tf.where(found, tf.minimum(top, height - crop_h), tf.floor((height - crop_h) / 2))
    left = tf.where(found, tf.minimum(left, width - crop_w), tf.floor((width - crop_w) / 2))
    return tuple(tf.cast(v, tf.int32) for v in (top, left, crop_h, crop_w))


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
        (h, w, 3) float32 integers in [0, 255].
    """
    size = _as_pair(image_size, "image_size")

    def window(shape):
        return crop_window(shape, seed, scale, ratio)

    def crop_decoded(decoded):
        top, left, height, width = window(tf.shape(decoded))
        return decoded[top:top + height, left:left + width]

    if image.dtype == tf.string:

        def crop_jpeg():
            shape = tf.image.extract_jpeg_shape(image)
            top, left, height, width = window(shape)
            # The window plus a margin, then the window: equal to PIL's decode, cropped.
            outer_top = tf.maximum(top - _JPEG_MARGIN, 0)
            outer_left = tf.maximum(left - _JPEG_MARGIN, 0)
            outer_bottom = tf.minimum(top + height + _JPEG_MARGIN, shape[0])
            outer_right = tf.minimum(left + width + _JPEG_MARGIN, shape[1])
            outer = tf.image.decode_and_crop_jpeg(
                image, tf.stack([outer_top, outer_left, outer_bottom - outer_top,
                                 outer_right - outer_left]),
                channels=3, dct_method=_JPEG_DCT,
            )
            return outer[top - outer_top:top - outer_top + height,
                         left - outer_left:left - outer_left + width]

        # A few ImageNet "JPEG"s are PNGs: those are decoded whole, then cropped.
        crop = tf.cond(
            tf.io.is_jpeg(image), crop_jpeg, lambda: crop_decoded(decode_image(image))
        )
    else:
        crop = crop_decoded(decode_image(image))
    crop = decode_image(crop)
    # Rounded as PIL's resize (timm's) rounds to uint8: RandAugment works on those integers.
    out = tf.round(resize(crop, size, method))
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


# === RandAugment: timm's `rand-m9-mstd0.5-inc1`, with PIL's arithmetic ===
# timm's geometric ops fill what they uncover with the ImageNet mean in pixels, per channel
# (`img_mean` in timm's `create_transform`: round(255 * mean) = (124, 116, 104)).
FILL_COLOR = tuple(min(255, round(255 * m)) for m in IMAGENET_MEAN)
# timm's magnitude scale: a magnitude m gives an op's strength m / 10 of its maximum.
_LEVEL_DENOM = 10.0


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


def _blend(degenerate, image, factor):
    """PIL's `Image.blend(degenerate, image, factor)` (what every `ImageEnhance` does): in
    float32 as PIL's C code (`float alpha`), then truncated and clipped to [0, 255]."""
    factor = tf.cast(factor, tf.float32)
    return tf.floor(tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0))


def _grayscale(image):
    """PIL's RGB -> L conversion, (H, W, 1): (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
    pixels = tf.cast(image, tf.int32)
    weighted = tf.reduce_sum(pixels * tf.constant([19595, 38470, 7471], tf.int32), -1,
                             keepdims=True)
    return tf.cast(tf.bitwise.right_shift(weighted + 32768, 16), tf.float32)


def _smooth(image):
    """PIL's `ImageFilter.SMOOTH` (3x3 kernel of ones with 5 in the middle, / 13, rounded);
    the one-pixel border is copied unchanged, as PIL does."""
    pixels = tf.cast(image, tf.int32)
    shape = tf.shape(pixels)
    height, width = shape[0], shape[1]
    padded = tf.pad(pixels, [[1, 1], [1, 1], [0, 0]])
    total = 4 * pixels
    for dy in range(3):
        for dx in range(3):
            total += padded[dy:dy + height, dx:dx + width]
    # floor(S / 13 + 0.5) in integers: PIL's float sum is never within 1/13 of a tie.
    smoothed = tf.cast((2 * total + 13) // 26, tf.float32)
    rows = tf.range(height)[:, None, None]
    cols = tf.range(width)[None, :, None]
    inside = (rows >= 1) & (rows < height - 1) & (cols >= 1) & (cols < width - 1)
    return tf.where(inside, smoothed, tf.cast(image, tf.float32))


def _float64(value):
    """A float64 tensor of `value`; a Python float goes straight to float64 (tf.cast would
    round it through float32 first)."""
    if tf.is_tensor(value):
        return tf.cast(value, tf.float64)
    return tf.constant(value, tf.float64)


def _cubic(v1, v2, v3, v4, d):
    """PIL's transform kernel (`BICUBIC` in Geometry.c: a = -1), same operation order."""
    p1 = v2
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return p1 + d * (p2 + d * (p3 + d * p4))


def affine_bicubic(image, coefficients, fill=FILL_COLOR):
    """PIL's `image.transform(size, Image.AFFINE, coefficients, Image.BICUBIC, fillcolor=fill)`.

    The output pixel (x, y) samples the input at (a x' + b y' + c, d x' + e y' + f) with
    x' = x + 0.5, y' = y + 0.5, through PIL's bicubic (a = -1, edges clamped, float64,
    truncated to integers); pixels sampling outside the image get `fill`.

    Args:
        image: (H, W, 3) float32 holding integers in [0, 255].
        coefficients: six float64 scalars (a, b, c, d, e, f), PIL's inverse affine map.
        fill: the (r, g, b) of uncovered pixels.
    Returns:
        (H, W, 3) float32 integers.
    """
    a, b, c, d, e, f = (_float64(v) for v in coefficients)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    rows = tf.cast(tf.range(height), tf.float64)[:, None] + 0.5
    cols = tf.cast(tf.range(width), tf.float64)[None, :] + 0.5
    x_in = a * cols + b * rows + c
    y_in = d * cols + e * rows + f
    h, w = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    inside = (x_in >= 0.0) & (x_in < w) & (y_in >= 0.0) & (y_in < h)
    x_in, y_in = x_in - 0.5, y_in - 0.5
    x0, y0 = tf.floor(x_in), tf.floor(y_in)
    dx, dy = (x_in - x0)[..., None], (y_in - y0)[..., None]
    # PIL clamps the four columns and (through its row fallbacks) the four rows to the image.
    x0 = tf.cast(tf.clip_by_value(x0, -8.0, w + 8.0), tf.int32) - 1
    y0 = tf.cast(tf.clip_by_value(y0, -8.0, h + 8.0), tf.int32) - 1
    flat = tf.reshape(tf.cast(image, tf.float64), [-1, 3])
    columns = [tf.clip_by_value(x0 + k, 0, width - 1) for k in range(4)]
    row_values = []
    for k in range(4):
        row = tf.clip_by_value(y0 + k, 0, height - 1) * width
        taps = [tf.gather(flat, row + column) for column in columns]
        row_values.append(_cubic(*taps, dx))
    value = _cubic(*row_values, dy)
    out = tf.cast(tf.floor(tf.clip_by_value(value, 0.0, 255.0)), tf.float32)
    fill = tf.broadcast_to(tf.constant(fill, tf.float32), tf.shape(out))
    return tf.where(inside[..., None], out, fill)


def _affine_rows_bicubic(image, shear, offset, fill):
    """`affine_bicubic` with coefficients (1, shear, offset, 0, 1, 0) (ShearX, TranslateX): every
    output pixel samples its own row (PIL's vertical cubic at distance 0 returns that row
    exactly), so only the horizontal pass runs: same values, a quarter of the work."""
    shear, offset = _float64(shear), _float64(offset)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    rows = tf.cast(tf.range(height), tf.float64)[:, None] + 0.5
    cols = tf.cast(tf.range(width), tf.float64)[None, :] + 0.5
    x_in = 1.0 * cols + shear * rows + offset
    inside = (x_in >= 0.0) & (x_in < tf.cast(width, tf.float64))
    x_in = x_in - 0.5
    x0 = tf.floor(x_in)
    dx = (x_in - x0)[..., None]
    x0 = tf.cast(tf.clip_by_value(x0, -8.0, tf.cast(width, tf.float64) + 8.0), tf.int32) - 1
    pixels = tf.cast(image, tf.float64)
    taps = [tf.gather(pixels, tf.clip_by_value(x0 + k, 0, width - 1), axis=1, batch_dims=1)
            for k in range(4)]
    out = tf.cast(tf.floor(tf.clip_by_value(_cubic(*taps, dx), 0.0, 255.0)), tf.float32)
    fill = tf.broadcast_to(tf.constant(fill, tf.float32), tf.shape(out))
    return tf.where(inside[..., None], out, fill)


def _affine_columns_bicubic(image, shear, offset, fill):
    """`affine_bicubic` with coefficients (1, 0, 0, shear, 1, offset) (ShearY, TranslateY): the
    transposed problem of `_affine_rows_bicubic` (the same sums, added in the other order,
    which IEEE addition does not mind)."""
    transposed = tf.transpose(image, [1, 0, 2])
    return tf.transpose(_affine_rows_bicubic(transposed, shear, offset, fill), [1, 0, 2])


def _rotate(image, degrees, fill):
    """PIL's `image.rotate(degrees, BICUBIC, fillcolor=fill)` about the image's centre."""
    angle = tf.math.floormod(_float64(degrees), 360.0)
    theta = -(angle * (math.pi / 180.0))

    def round15(value):  # PIL rounds the matrix to 15 decimals
        return tf.round(value * 1e15) / 1e15

    cos, sin = round15(tf.cos(theta)), round15(tf.sin(theta))
    shape = tf.cast(tf.shape(image), tf.float64)
    center_x, center_y = shape[1] / 2.0, shape[0] / 2.0
    c = cos * -center_x + sin * -center_y + 0.0 + center_x
    f = -sin * -center_x + cos * -center_y + 0.0 + center_y
    # PIL copies the image for a zero angle (the bicubic would too, exactly).
    return tf.cond(angle == 0.0, lambda: tf.identity(image),
                   lambda: affine_bicubic(image, (cos, sin, c, -sin, cos, f), fill))


def _pixels(image):
    return tf.cast(image, tf.int32)


def _auto_contrast(image):
    """PIL's `ImageOps.autocontrast(image)`: each channel stretched from [min, max] to
    [0, 255] with int(x * scale + offset); a constant channel is left alone."""
    image64 = tf.cast(image, tf.float64)
    low = tf.reduce_min(image64, axis=[0, 1])
    high = tf.reduce_max(image64, axis=[0, 1])
    scale = 255.0 / tf.maximum(high - low, 1.0)
    offset = -low * scale
    out = tf.floor(tf.clip_by_value(image64 * scale + offset, 0.0, 255.0))
    return tf.cast(tf.where(high > low, out, image64), tf.float32)


def _posterize(image, bits):
    """PIL's `ImageOps.posterize`: keep the top `bits` bits (0 bits: black, as Pillow before
    its 1-8 check; timm's m10 asks for 0 bits, which Pillow >= 11 refuses)."""
    shift = 8 - tf.cast(bits, tf.int32)
    out = tf.bitwise.left_shift(tf.bitwise.right_shift(_pixels(image), shift), shift)
    return tf.cast(out, tf.float32)


def _solarize(image, threshold):
    """PIL's `ImageOps.solarize`: pixels >= threshold become 255 - x."""
    return tf.where(image < tf.cast(threshold, tf.float32), image, 255.0 - image)


def _solarize_add(image, add):
    """timm's `solarize_add`: pixels < 128 get `add` more, capped at 255."""
    return tf.where(image < 128.0, tf.minimum(image + tf.cast(add, tf.float32), 255.0), image)


def _contrast_degenerate(image):
    """PIL's `ImageEnhance.Contrast` degenerate: the grey image's mean, int(mean + 0.5)."""
    gray = tf.cast(_grayscale(image), tf.float64)
    mean = tf.reduce_sum(gray) / tf.cast(tf.size(gray), tf.float64)
    return tf.cast(tf.floor(mean + 0.5), tf.float32)


def _truncate(value):
    """Python's int() of a non-negative float64."""
    return tf.floor(value)


class RandAugment:
    """timm's RandAugment (`rand-m9-mstd0.5-inc1`, DeiT's `--aa`) for one image, stateless.

    Each image gets `num_ops` operations drawn uniformly, with replacement, from timm's 15
    "increasing" operations; each is applied with probability `prob`, at a magnitude drawn
    from N(magnitude, magnitude_std) clipped to [0, magnitude_max], with a random sign for
    the signed ones (rotation, shears, translations, and the enhance factors 1 +- 0.9 m / 10).
    Every operation is PIL's arithmetic written in TensorFlow (what timm calls), on integer
    pixels: the point operations equal PIL's exactly, the geometric ones use PIL's bicubic
    transform kernel (tests/data/test_rand_augment.py holds each against timm's). Every draw
    comes from the per-image seed given to the call, so the result is a function of it.

    Args:
        num_ops: operations per image (timm's `n`, 2).
        magnitude: timm's magnitude on its 0-10 scale (`m`, 9).
        magnitude_std: the magnitude's per-operation jitter (`mstd`, 0.5); `inf` draws it
            uniformly in [0, magnitude] (timm's `mstd101`).
        magnitude_max: the upper clip of a drawn magnitude (timm's `mmax`, 10).
        prob: probability of applying each drawn operation (timm's `p`, 0.5).
        translate_pct: the largest translation, a fraction of the side (timm's 0.45).
        fill: the (r, g, b) of pixels uncovered by geometric operations (timm: the ImageNet
            mean in pixels).
    Call: `(image (H, W, 3) in [0, 255], seed (2,) int tensor) -> (H, W, 3) float32`; the input
    is rounded to integers first, as timm's operations run on uint8 PIL images.
    """

    OPS = (
        "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
        "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
        "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
        "TranslateYRel",
    )

    def __init__(self, num_ops=2, magnitude=9, magnitude_std=0.5, magnitude_max=10, prob=0.5,
                 translate_pct=0.45, fill=FILL_COLOR):
        if num_ops < 0 or int(num_ops) != num_ops:
            raise ValueError(f"num_ops must be an integer >= 0; got {num_ops!r}.")
        if not 0 <= magnitude <= _LEVEL_DENOM:
            raise ValueError(f"magnitude is on timm's 0-10 scale; got {magnitude!r}.")
        if not magnitude_std >= 0:
            raise ValueError(f"magnitude_std must be >= 0 (or inf); got {magnitude_std!r}.")
        if not 0 < magnitude_max:
            raise ValueError(f"magnitude_max must be > 0; got {magnitude_max!r}.")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1]; got {prob!r}.")
        if not 0.0 <= translate_pct <= 1.0:
            raise ValueError(f"translate_pct must be in [0, 1]; got {translate_pct!r}.")
        if isinstance(fill, (int, float)):
            fill = (fill,) * 3
        if len(fill) != 3 or not all(0 <= v <= 255 for v in fill):
            raise ValueError(f"fill must be one pixel value or three in [0, 255]; got {fill!r}.")
        self.num_ops = int(num_ops)
        self.magnitude = float(magnitude)
        self.magnitude_std = float(magnitude_std)
        self.magnitude_max = float(magnitude_max)
        self.prob = float(prob)
        self.translate_pct = float(translate_pct)
        self.fill = tuple(float(v) for v in fill)
        self._augment_fn = None

    # --- One operation, its magnitude and sign given ---
    def apply(self, name, image, magnitude, negate=False):
        """timm's operation `name` at `magnitude` (0-10; after timm's jitter and clip), with
        the sign flipped where timm's `_randomly_negate` would. `image`: (H, W, 3) integers
        in [0, 255]. Returns (H, W, 3) float32 integers."""
        image = tf.cast(image, tf.float32)
        magnitude = _float64(magnitude)
        negate = tf.cast(negate, tf.bool)

        def signed(level):
            return tf.where(negate, -level, level)

        level = magnitude / _LEVEL_DENOM
        shape = tf.cast(tf.shape(image), tf.float64)
        if name == "AutoContrast":
            return _auto_contrast(image)
        if name == "Equalize":
            return equalize(image)
        if name == "Invert":
            return 255.0 - image
        if name == "Rotate":
            return _rotate(image, signed(level * 30.0), self.fill)
        if name == "PosterizeIncreasing":
            return _posterize(image, 4.0 - _truncate(level * 4))
        if name == "SolarizeIncreasing":
            return _solarize(image, 256.0 - tf.minimum(_truncate(level * 256), 256.0))
        if name == "SolarizeAdd":
            return _solarize_add(image, tf.minimum(_truncate(level * 110), 128.0))
        if name.endswith("Increasing"):  # the four ImageEnhance operations
            factor = tf.maximum(1.0 + signed(level * 0.9), 0.1)
            degenerate = {
                "ColorIncreasing": _grayscale,
                "ContrastIncreasing": _contrast_degenerate,
                "BrightnessIncreasing": tf.zeros_like,
                "SharpnessIncreasing": _smooth,
            }[name](image)
            return _blend(degenerate, image, factor)
        # PIL's transforms (1, shear, 0, 0, 1, 0), (1, 0, 0, shear, 1, 0), (1, 0, pixels, 0,
        # 1, 0) and (1, 0, 0, 0, 1, pixels) move pixels along one axis only.
        if name == "ShearX":
            return _affine_rows_bicubic(image, signed(level * 0.3), 0.0, self.fill)
        if name == "ShearY":
            return _affine_columns_bicubic(image, signed(level * 0.3), 0.0, self.fill)
        if name == "TranslateXRel":
            pixels = signed(level * self.translate_pct) * shape[1]
            return _affine_rows_bicubic(image, 0.0, pixels, self.fill)
        if name == "TranslateYRel":
            pixels = signed(level * self.translate_pct) * shape[0]
            return _affine_columns_bicubic(image, 0.0, pixels, self.fill)
        raise ValueError(f"Unknown RandAugment operation {name!r}; expected one of {self.OPS}.")

    # --- The random draws ---
    def draw(self, seed):
        """This image's draws, from a (2,) int seed, as a dict of (num_ops,) tensors:
        `ops` (int32 indices into OPS), `applied` (bool), `magnitudes` (float64, clipped) and
        `negated` (bool, used by the signed operations only)."""
        seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4))
        shape = (self.num_ops,)
        ops = tf.random.stateless_uniform(shape, seeds[0], minval=0, maxval=len(self.OPS),
                                          dtype=tf.int32)
        applied = tf.random.stateless_uniform(shape, seeds[1], dtype=tf.float64) < self.prob
        if math.isinf(self.magnitude_std):
            magnitudes = tf.random.stateless_uniform(shape, seeds[2], maxval=self.magnitude,
                                                     dtype=tf.float64)
        else:
            magnitudes = self.magnitude + self.magnitude_std * tf.random.stateless_normal(
                shape, seeds[2], dtype=tf.float64)
        magnitudes = tf.clip_by_value(magnitudes, 0.0, self.magnitude_max)
        negated = tf.random.stateless_uniform(shape, seeds[3], dtype=tf.float64) < 0.5
        return {"ops": ops, "applied": applied, "magnitudes": magnitudes, "negated": negated}

    def __call__(self, image, seed):
        image = tf.round(tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0))
        if self.num_ops == 0:
            return image
        # A tf.function kept by this object: every pipeline built over it (one per epoch)
        # reuses the same trace instead of re-tracing the 15 operations.
        if self._augment_fn is None:
            self._augment_fn = tf.function(self._augment, autograph=False)
        return self._augment_fn(image, tf.cast(seed, tf.int64))

    def _augment(self, image, seed):
        shape = image.shape
        draws = self.draw(seed)

        # One switch traced once (in a loop over the slots), not once per slot; `tf.cond`,
        # not `tf.where`: an operation drawn but not applied (half of them) is not computed.
        def body(i, image):
            def run():
                branches = [
                    lambda name=name: self.apply(name, image, draws["magnitudes"][i],
                                                 draws["negated"][i])
                    for name in self.OPS
                ]
                return tf.switch_case(draws["ops"][i], branches)

            image = tf.cond(draws["applied"][i], run, lambda: image)
            image.set_shape(shape)
            return i + 1, image

        _, image = tf.while_loop(lambda i, _: i < self.num_ops, body, [tf.constant(0), image])
        image.set_shape(shape)
        return image


# === The DeiT train and eval transforms ===
class TrainTransform:
    """DeiT's training transform for one image (see the module docstring).

    Args:
        image_size: output side (224) or (h, w).
        scale, ratio: RandomResizedCrop's area and aspect-ratio ranges.
        hflip: probability of a horizontal flip (0.5).
        rand_augment: a `RandAugment`, True for the paper's (`rand-m9-mstd0.5-inc1`), or
            None/False.
        random_erasing: probability of erasing a box (0.25); 0 for none.
        mean, std: normalisation (ImageNet's).
        interpolation: resize method ("bicubic").
    Every draw comes from the per-image seed given to the call (a function of the run's seed,
    the epoch and the image's position), so there is no seed to give here.
    Call: `(image (encoded bytes or (H, W, C) uint8), seed (2,) int tensor) -> (h, w, 3)
    float32 normalised`.
    """

    def __init__(self, image_size=224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5,
                 rand_augment=True, random_erasing=0.25, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 interpolation="bicubic"):
        self.image_size = _as_pair(image_size, "image_size")
        self.scale = _check_range(scale, "scale", 0.0, 1.0)
        self.ratio = _check_range(ratio, "ratio", 1e-6)
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip must be a probability in [0, 1]; got {hflip!r}.")
        if not 0.0 <= random_erasing <= 1.0:
            raise ValueError(f"random_erasing must be in [0, 1]; got {random_erasing!r}.")
        self.hflip = float(hflip)
        if rand_augment is True:
            rand_augment = RandAugment()
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
    """timm's `Mixup` in batch mode (DeiT's `--mixup/--cutmix`), stateless per batch.

    Off in the paper's recipe (SPEC.md 7); offered as flags. With probability `prob` a batch
    is mixed with itself reversed (timm's `x.flip(0)`): by CutMix with probability
    `switch_prob` when both are on, else MixUp. MixUp: lambda ~ Beta(mixup_alpha) and
    `lam x + (1 - lam) x[::-1]`. CutMix: lambda ~ Beta(cutmix_alpha), a box of sides
    int(side * sqrt(1 - lam)) centred at a uniform pixel and clipped to the image gets the
    reversed batch's pixels, and lambda becomes the uncovered fraction (timm's `correct_lam`).
    Targets: `lam y + (1 - lam) y[::-1]`, unsmoothed (the Distiller's label smoothing is
    linear, so smoothing them there gives timm's smoothed mixed targets exactly). Every draw
    comes from the per-batch seed, so a resumed run replays the same mixing.

    Args:
        num_classes: number of classes (integer labels are one-hot encoded first).
        mixup_alpha, cutmix_alpha: Beta parameters; 0 turns that method off.
        switch_prob: probability of CutMix when both are on (timm: 0.5).
        prob: probability of mixing a batch at all (timm's `mixup_prob`, 1.0).
    Call: `(images (B, H, W, C), labels (B,) ints or (B, K) targets, seed (2,) int tensor) ->
    (images float32, (B, num_classes) float32)`.
    """

    def __init__(self, num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5,
                 prob=1.0):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(
                f"mixup_alpha and cutmix_alpha must be >= 0; got {mixup_alpha!r}, "
                f"{cutmix_alpha!r}."
            )
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError("MixUpCutMix needs mixup_alpha > 0 or cutmix_alpha > 0.")
        if not 0.0 <= switch_prob <= 1.0 or not 0.0 <= prob <= 1.0:
            raise ValueError(
                f"switch_prob and prob must be in [0, 1]; got {switch_prob!r}, {prob!r}.")
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.switch_prob = float(switch_prob) if mixup_alpha and cutmix_alpha else (
            1.0 if cutmix_alpha else 0.0
        )
        self.prob = float(prob)

    @staticmethod
    def _beta(alpha, seed):
        first, second = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        a = tf.random.stateless_gamma((), first, alpha=alpha, dtype=tf.float64)
        b = tf.random.stateless_gamma((), second, alpha=alpha, dtype=tf.float64)
        return a / (a + b)

    def draw(self, seed, height, width):
        """One batch's draws from a (2,) int seed, for images of `height` x `width`: a dict of
        scalars `mixed` (bool), `cutmix` (bool), `lam` (float64, after CutMix's correction;
        1 when not mixed), the Beta draw `beta` before that correction, the CutMix box's
        `center_y`, `center_x` and edges `top`, `bottom`, `left`, `right` (int32,
        bottom/right excluded)."""
        seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6))
        mixed = tf.random.stateless_uniform((), seeds[0], dtype=tf.float64) < self.prob
        cutmix = tf.random.stateless_uniform((), seeds[1], dtype=tf.float64) < self.switch_prob
        lam = 1.0
        if self.mixup_alpha:
            lam = self._beta(self.mixup_alpha, seeds[2])
        if self.cutmix_alpha:
            lam = tf.where(cutmix, self._beta(self.cutmix_alpha, seeds[3]), lam)
        lam = tf.where(mixed, _float64(lam), 1.0)
        beta = lam
        height = tf.cast(height, tf.int32)
        width = tf.cast(width, tf.int32)
        ratio = tf.sqrt(1.0 - lam)
        cut_h = tf.cast(tf.cast(height, tf.float64) * ratio, tf.int32)
        cut_w = tf.cast(tf.cast(width, tf.float64) * ratio, tf.int32)
        # np.random.randint(0, side): uniform over [0, side - 1].
        center_y = tf.random.stateless_uniform((), seeds[4], 0, height, dtype=tf.int32)
        center_x = tf.random.stateless_uniform((), seeds[5], 0, width, dtype=tf.int32)
        top = tf.clip_by_value(center_y - cut_h // 2, 0, height)
        bottom = tf.clip_by_value(center_y + (cut_h + 1) // 2, 0, height)
        left = tf.clip_by_value(center_x - cut_w // 2, 0, width)
        right = tf.clip_by_value(center_x + (cut_w + 1) // 2, 0, width)
        box_area = tf.cast((bottom - top) * (right - left), tf.float64)
        corrected = 1.0 - box_area / tf.cast(height * width, tf.float64)
        use_box = mixed & cutmix & (lam < 1.0)
        return {"mixed": mixed & (lam < 1.0), "cutmix": use_box,
                "lam": tf.where(use_box, corrected, lam),
                "beta": beta, "center_y": center_y, "center_x": center_x,
                "top": top, "bottom": bottom, "left": left, "right": right}

    def __call__(self, images, labels, seed):
        images = tf.cast(images, tf.float32)
        labels = tf.convert_to_tensor(labels)
        if labels.shape.rank == 1:
            labels = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes, dtype=tf.float32)
        labels = tf.cast(labels, tf.float32)
        shape = tf.shape(images)
        draws = self.draw(seed, shape[1], shape[2])
        # The two weights rounded from float64 as torch rounds timm's Python floats.
        lam, rest = tf.cast(draws["lam"], tf.float32), tf.cast(1.0 - draws["lam"], tf.float32)
        reversed_images = tf.reverse(images, [0])
        rows = tf.range(shape[1])[:, None, None]
        cols = tf.range(shape[2])[None, :, None]
        in_box = ((rows >= draws["top"]) & (rows < draws["bottom"]) & (cols >= draws["left"])
                  & (cols < draws["right"]))
        cut = tf.where(in_box[None], reversed_images, images)
        blended = images * lam + reversed_images * rest
        out = tf.where(draws["cutmix"], cut, tf.where(draws["mixed"], blended, images))
        targets = labels * lam + tf.reverse(labels, [0]) * rest
        return out, targets
