"""DeiT's transforms: shapes, value ranges, determinism under a seed, and the pieces against
their references (PIL's equalize, torchvision's resize + center crop)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_spectralkd.data import transforms
from keras_spectralkd.data.pipeline import eval_pipeline, train_pipeline

IMAGE_SIZE = 32
# The normalised range of [0, 255] pixels under ImageNet's mean/std.
LOW = min((0 - m) / s for m, s in zip(transforms.IMAGENET_MEAN, transforms.IMAGENET_STD))
HIGH = max((1 - m) / s for m, s in zip(transforms.IMAGENET_MEAN, transforms.IMAGENET_STD))


def _examples(num=12, seed=0, encoded=True):
    rng = np.random.default_rng(seed)
    images = [
        rng.integers(0, 256, (int(rng.integers(40, 90)), int(rng.integers(40, 90)), 3),
                     dtype=np.uint8)
        for _ in range(num)
    ]
    if encoded:
        images = [tf.io.encode_jpeg(image).numpy() for image in images]
        return tf.data.Dataset.from_tensor_slices((images, np.arange(num) % 3))
    return tf.data.Dataset.from_generator(
        lambda: ((image, i % 3) for i, image in enumerate(images)),
        output_signature=(tf.TensorSpec((None, None, 3), tf.uint8), tf.TensorSpec((), tf.int64)),
    )


def _epoch(transform, epoch=0, seed=0, examples=None, **kwargs):
    dataset = train_pipeline(
        examples if examples is not None else _examples(), transform, batch_size=4,
        num_examples=12, epoch=epoch, seed=seed, **kwargs
    )
    return [(x.numpy(), y.numpy()) for x, y in dataset]


@pytest.fixture(scope="module")
def deit_batches():
    """Two independent builds of the same seeded pipeline, and one of another epoch."""
    first = _epoch(transforms.TrainTransform(IMAGE_SIZE), epoch=0)
    again = _epoch(transforms.TrainTransform(IMAGE_SIZE), epoch=0)
    other = _epoch(transforms.TrainTransform(IMAGE_SIZE), epoch=1)
    return first, again, other


def test_train_transform_shapes_and_range(deit_batches):
    first, _, _ = deit_batches
    assert len(first) == 3
    for images, labels in first:
        assert images.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
        assert images.dtype == np.float32
        assert labels.dtype == np.int32
        # Normalised pixels, plus random erasing's N(0, 1) noise (unclipped, as timm's).
        assert np.isfinite(images).all()
        assert np.abs(images).max() < 8.0


def test_train_transform_without_erasing_stays_in_the_normalised_range():
    batches = _epoch(transforms.TrainTransform(IMAGE_SIZE, random_erasing=0.0))
    for images, _ in batches:
        assert LOW - 1e-5 <= images.min() and images.max() <= HIGH + 1e-5


def test_train_transform_is_deterministic_under_a_seed(deit_batches):
    first, again, other = deit_batches
    for (a, la), (b, lb) in zip(first, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    # Another epoch: another shuffle and other draws.
    assert any(np.abs(a - c).max() > 0.1 for (a, _), (c, _) in zip(first, other))


def test_train_transform_without_random_parts_is_a_resize():
    """scale = ratio = 1 on square images, no flip/RandAugment/erasing: a plain resize,
    rounded to integer pixels as PIL's (timm's) resize is."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    transform = transforms.TrainTransform(
        IMAGE_SIZE, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, rand_augment=None,
        random_erasing=0.0,
    )
    out = transform(tf.constant(image), tf.constant([1, 2], tf.int64)).numpy()
    expected = transforms.normalize(
        tf.round(transforms.resize(image, (IMAGE_SIZE, IMAGE_SIZE)))).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_random_resized_crop_decodes_jpeg_windows_and_arrays_alike():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    seed = tf.constant([3, 4], tf.int64)
    from_array = transforms.random_resized_crop(tf.constant(image), 24, seed).numpy()
    png = tf.io.encode_png(image)  # lossless and not a JPEG: the decode-then-crop path
    from_png = transforms.random_resized_crop(png, 24, seed).numpy()
    assert from_array.shape == (24, 24, 3)
    np.testing.assert_allclose(from_png, from_array, atol=1e-4)
    assert 0.0 <= from_array.min() and from_array.max() <= 255.0


def test_rand_augment_probability_zero_is_the_rounded_image_and_one_changes_it():
    image = tf.constant(np.random.default_rng(2).uniform(0, 255, (20, 24, 3)), tf.float32)
    seed = tf.constant([5, 6], tf.int64)
    np.testing.assert_array_equal(transforms.RandAugment(prob=0.0)(image, seed).numpy(),
                                  np.round(image.numpy()))
    assert np.abs(transforms.RandAugment(prob=1.0)(image, seed).numpy()
                  - np.round(image.numpy())).max() > 0


def _erased_boxes(erase, trials, shape):
    """The erased boxes, (n, 4) rows of (height, width, top, left), and their noise values,
    of `trials` calls of `erase(trial)` on zeros (calls that erased nothing give no row)."""
    boxes, noise = [], []
    for trial in range(trials):
        out = np.asarray(erase(trial)).reshape(shape)
        rows, cols = np.nonzero(np.abs(out).sum(-1))
        if rows.size:
            top, left = rows.min(), cols.min()
            boxes.append((rows.max() + 1 - top, cols.max() + 1 - left, top, left))
            noise.append(out[top:top + boxes[-1][0], left:left + boxes[-1][1]].ravel())
    return np.array(boxes, np.float64).reshape(-1, 4), np.concatenate(noise)


def test_random_erasing_draws_as_timm_does():
    """Our stateless random erasing against timm's `RandomErasing(mode="pixel")` on the same
    (40, 56) image, 4000 draws each: how often, how big, which shape, where, and the noise.
    Keras' `RandomErasing` (used before) fails the aspect check (its sides are independent
    sqrt-uniform fractions of the image's: mean log(h / w) = log(40 / 56) = -0.34, timm's 0)."""
    timm_erasing = pytest.importorskip("timm.data.random_erasing")
    import random

    import torch

    height, width, trials = 40, 56, 4000
    reference = timm_erasing.RandomErasing(probability=0.25, mode="pixel", device="cpu")
    random.seed(0)
    torch.manual_seed(0)
    theirs, their_noise = _erased_boxes(
        lambda _: reference(torch.zeros(3, height, width)).permute(1, 2, 0).numpy(),
        trials, (height, width, 3),
    )
    erase = tf.function(lambda seed: transforms.random_erasing(
        tf.zeros((height, width, 3)), tf.stack([seed, tf.constant(7, tf.int64)]), 0.25))
    ours, our_noise = _erased_boxes(lambda t: erase(tf.constant(t, tf.int64)), trials,
                                    (height, width, 3))

    def stats(boxes):
        box_h, box_w, top, left = boxes.T
        return {
            "rate": len(boxes) / trials,
            "area": np.mean(box_h * box_w) / (height * width),
            "log_aspect": np.mean(np.log(box_h / box_w)),
            "top": np.mean(top / np.maximum(height - box_h, 1)),
            "left": np.mean(left / np.maximum(width - box_w, 1)),
        }

    ours_stats, theirs_stats = stats(ours), stats(theirs)
    # ~1000 erased boxes each: standard errors ~0.014 (rate), ~0.003 (area), ~0.03 (aspect),
    # ~0.01 (positions); tolerances are about 4 of them (both sides sample).
    tolerances = {"rate": 0.04, "area": 0.015, "log_aspect": 0.12, "top": 0.05, "left": 0.05}
    for key, tolerance in tolerances.items():
        assert abs(ours_stats[key] - theirs_stats[key]) < tolerance, (key, ours_stats,
                                                                      theirs_stats)
    # Every box fits inside the image (timm retries up to 10 draws) and noise is N(0, 1).
    assert (ours[:, 0] < height).all() and (ours[:, 1] < width).all()
    assert (ours[:, 2] + ours[:, 0] <= height).all() and (ours[:, 3] + ours[:, 1] <= width).all()
    assert abs(our_noise.mean()) < 0.01 and abs(our_noise.std() - 1.0) < 0.01
    assert abs(their_noise.std() - our_noise.std()) < 0.02
    # The same seed, the same result.
    seed = tf.constant([3, 4], tf.int64)
    image = tf.random.stateless_normal((height, width, 3), seed)
    np.testing.assert_array_equal(transforms.random_erasing(image, seed, 1.0).numpy(),
                                  transforms.random_erasing(image, seed, 1.0).numpy())


def test_resize_upscales_as_the_antialiased_kernel_does():
    """`resize` skips antialiasing when both sides grow. TensorFlow's two bicubic kernels then
    differ only by how they compute their weights: within 0.25 of 255 on white noise (the worst
    case), and exactly as close to PIL's bicubic (timm's) as the antialiased one."""
    from PIL import Image

    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    image = tf.constant(pixels, tf.float32)
    for size in [(64, 64), (30, 41), (45, 90), (224, 224)]:
        expected = tf.clip_by_value(
            tf.image.resize(image, size, "bicubic", antialias=True), 0.0, 255.0).numpy()
        ours = transforms.resize(image, size).numpy()
        np.testing.assert_allclose(ours, expected, atol=0.25)
        pil = np.asarray(Image.fromarray(pixels).resize(size[::-1], Image.BICUBIC), np.float32)
        assert np.abs(ours - pil).mean() <= 1.01 * np.abs(expected - pil).mean() + 1e-6
    # A downscale keeps the antialiasing (far from the plain kernel on noise).
    small = transforms.resize(image, (10, 12)).numpy()
    plain = tf.image.resize(image, (10, 12), "bicubic", antialias=False).numpy()
    expected = tf.clip_by_value(
        tf.image.resize(image, (10, 12), "bicubic", antialias=True), 0.0, 255.0).numpy()
    np.testing.assert_allclose(small, expected, atol=1e-4)
    assert np.abs(small - plain).max() > 5.0


def test_normalize_is_the_formula():
    rng = np.random.default_rng(5)
    for shape in [(7, 9, 3), (2, 5, 6, 3)]:
        pixels = rng.uniform(0, 255, shape).astype(np.float32)
        expected = (pixels / 255.0 - np.array(transforms.IMAGENET_MEAN)) / np.array(
            transforms.IMAGENET_STD)
        out = transforms.normalize(tf.constant(pixels))
        assert out.shape == shape
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_equalize_is_pil_equalize():
    from PIL import Image, ImageOps

    rng = np.random.default_rng(3)
    image = rng.integers(10, 200, (17, 23, 3)).astype(np.uint8)
    image[..., 2] = 77  # a constant channel: PIL leaves it alone
    expected = np.asarray(ImageOps.equalize(Image.fromarray(image)))
    np.testing.assert_array_equal(transforms.equalize(tf.constant(image)).numpy(), expected)


def test_eval_transform_matches_torchvision_resize_and_center_crop():
    """Shorter side -> 256 (bicubic), center crop 224: as torchvision on PIL, up to
    interpolation error (TF's antialiased bicubic vs PIL's)."""
    from PIL import Image

    yy, xx = np.mgrid[0:300, 0:407]
    image = np.stack([128 + 100 * np.sin(xx / 17.0), 128 + 100 * np.cos(yy / 23.0),
                      128 + 50 * np.sin((xx + yy) / 31.0)], -1).astype(np.uint8)
    ours = transforms.resize_shorter_and_center_crop(tf.constant(image), 224).numpy()
    # torchvision: Resize(256) -> (256, int(256 * 407 / 300) = 347), CenterCrop(224).
    resized = np.asarray(Image.fromarray(image).resize((347, 256), Image.BICUBIC), np.float32)
    top, left = int(round((256 - 224) / 2.0)), int(round((347 - 224) / 2.0))
    expected = resized[top:top + 224, left:left + 224]
    assert ours.shape == (224, 224, 3)
    assert np.abs(ours - expected).mean() < 0.5  # pixel levels out of 255
    assert np.abs(ours - expected).max() < 3.0


def test_eval_pipeline_keeps_order_and_the_last_batch():
    batches = list(eval_pipeline(_examples(num=10), transforms.EvalTransform(IMAGE_SIZE),
                                 batch_size=4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), np.arange(10) % 3)
    assert batches[0][0].shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_mixup_cutmix_gives_soft_targets():
    mix = transforms.MixUpCutMix(3, mixup_alpha=0.8, cutmix_alpha=1.0)
    simple = transforms.TrainTransform(IMAGE_SIZE, rand_augment=None, random_erasing=0.0)
    batches = _epoch(simple, batch_transform=mix)
    for images, targets in batches:
        assert images.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
        assert targets.shape == (4, 3)
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
    assert any((t.max(axis=1) < 1.0 - 1e-6).any() for _, t in batches)  # something was mixed


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="hflip"):
        transforms.TrainTransform(hflip=1.5)
    with pytest.raises(ValueError, match="scale"):
        transforms.TrainTransform(scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="magnitude"):
        transforms.RandAugment(magnitude=12)
    with pytest.raises(ValueError, match="crop_pct"):
        transforms.EvalTransform(crop_pct=1.5)
    with pytest.raises(ValueError, match="probability"):
        transforms.random_erasing(tf.zeros((4, 4, 3)), tf.constant([1, 2]), probability=2.0)
    with pytest.raises(ValueError, match="ratio"):
        transforms.random_erasing(tf.zeros((4, 4, 3)), tf.constant([1, 2]), ratio=(3.0, 0.3))
