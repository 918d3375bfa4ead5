"""The crop, the evaluation transform and repeated augmentation against timm / torchvision /
DeiT: the crop box in distribution (timm's `RandomResizedCropAndInterpolation.get_params`),
its bicubic resize and the eval transform pixel for pixel (PIL through torchvision), and the
epoch's images, their count and their grouping into global batches against DeiT's
`RASampler` (re-implemented here from facebookresearch/deit samplers.py, which is not a
package)."""

import math
import random

import numpy as np
import pytest
import tensorflow as tf
from data_helpers import jpeg_bytes, photograph
from test_rand_augment import _ks_statistic

from keras_spectralkd.data import transforms
from keras_spectralkd.data.pipeline import train_pipeline

timm_transforms = pytest.importorskip("timm.data.transforms")
PIL_Image = pytest.importorskip("PIL.Image")

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


# === The crop box ===
def _our_windows(shape, trials):
    windows = tf.data.Dataset.range(trials).map(
        lambda i: tf.stack(transforms.crop_window(tf.constant(shape), tf.stack([i, 5]),
                                                  SCALE, RATIO))
    ).batch(trials)
    return next(iter(windows)).numpy()


def _timm_windows(shape, trials):
    image = PIL_Image.new("RGB", (shape[1], shape[0]))
    random.seed(0)
    get_params = timm_transforms.RandomResizedCropAndInterpolation.get_params
    return np.array([get_params(image, SCALE, RATIO) for _ in range(trials)])


@pytest.mark.parametrize("shape", [(300, 400, 3), (120, 500, 3)])
def test_crop_box_is_distributed_as_timms(shape):
    """4000 boxes each on a 4:3 image and on a 1:4.2 panorama (where one draw in seven falls
    back to the center crop): area, aspect ratio (log w/h), position and fallback rate, ours
    against timm's `get_params`."""
    trials = 4000
    height, width = shape[:2]
    ours, theirs = _our_windows(shape, trials), _timm_windows(shape, trials)
    # timm's fallback for a panorama: full height, width = round(height * 4/3), centred.
    fallback_w = round(height * max(RATIO)) if width / height > max(RATIO) else width
    fallback = np.array([0, (width - fallback_w) // 2, height, fallback_w])

    def stats(boxes):
        top, left, box_h, box_w = boxes.T.astype(np.float64)
        moves = (box_h < height) & (box_w < width)
        return {
            "area": box_h * box_w / (height * width),
            "log_aspect": np.log(box_w / box_h),
            "top": top[moves] / (height - box_h[moves]),
            "left": left[moves] / (width - box_w[moves]),
            "fallback": (boxes == fallback).all(axis=1).astype(np.float64),
        }

    for boxes in (ours, theirs):
        top, left, box_h, box_w = boxes.T
        assert (top >= 0).all() and (left >= 0).all() and (box_h >= 1).all()
        assert (top + box_h <= height).all() and (left + box_w <= width).all()
    our_stats, their_stats = stats(ours), stats(theirs)
    # Means: standard errors ~0.005 (area), ~0.003 (log aspect), ~0.005 (positions), ~0.007
    # (fallback); tolerances about 4 of them. Distributions: two-sample KS at alpha = 0.001.
    tolerances = {"area": 0.02, "log_aspect": 0.015, "top": 0.025, "left": 0.025,
                  "fallback": 0.03}
    for key, tolerance in tolerances.items():
        assert abs(our_stats[key].mean() - their_stats[key].mean()) < tolerance, (
            key, our_stats[key].mean(), their_stats[key].mean())
    critical = 1.95 * math.sqrt(2 / trials)
    for key in ("area", "log_aspect"):
        assert _ks_statistic(our_stats[key], their_stats[key]) < critical, key
    if width / height > max(RATIO):
        assert their_stats["fallback"].mean() > 0.1  # the fallback is exercised


def test_crop_falls_back_to_timms_center_crop():
    """A strip no box of area >= 8% and aspect 3/4-4/3 fits in: timm's fallback, exactly."""
    for shape in [(10, 400, 3), (400, 10, 3)]:
        ours = _our_windows(shape, 20)
        theirs = _timm_windows(shape, 20)
        np.testing.assert_array_equal(ours, theirs)
        assert len({tuple(box) for box in ours}) == 1


def test_crop_resize_is_pils_bicubic_up_to_interpolation_error():
    """The crop's resize to 224 (TensorFlow's bicubic, antialiased when shrinking) against
    PIL's (timm's) on the same box of JPEG photographs, shrinking and enlarging: within one
    pixel level everywhere, 0.14-0.17 levels on average (the two compute their kernel weights
    differently; PIL in fixed point)."""
    for height, width in [(375, 500), (500, 333), (200, 180), (224, 300)]:
        image = photograph(height, width, height + width)
        seed = tf.constant([height, width], tf.int64)
        top, left, box_h, box_w = (int(v) for v in transforms.crop_window(tf.shape(image), seed))
        theirs = np.asarray(PIL_Image.fromarray(image).crop(
            (left, top, left + box_w, top + box_h)).resize((224, 224), PIL_Image.BICUBIC),
            np.float32)
        for source in (tf.constant(image), tf.io.encode_png(image)):
            ours = transforms.random_resized_crop(source, 224, seed).numpy()
            difference = np.abs(ours - theirs)
            assert difference.max() <= 1.0, (height, width)
            assert difference.mean() <= 0.25, (height, width, difference.mean())


def test_jpegs_decode_as_pil_decodes_them_whole_and_in_crop_windows():
    """JPEG bytes -> pixels as PIL (timm's reader) decodes them, exactly: whole, and through
    the crop's window decoding (TensorFlow's default fast IDCT is ~1 level off on average, up
    to 12; a window decoded without a margin differs at its edges, up to 29 levels)."""
    import io

    rng = np.random.default_rng(3)
    for trial in range(16):
        height, width = int(rng.integers(40, 400)), int(rng.integers(40, 400))
        encoded = jpeg_bytes(photograph(height, width, trial), quality=int(rng.integers(60, 98)))
        decoded = np.asarray(PIL_Image.open(io.BytesIO(encoded)).convert("RGB"))
        np.testing.assert_array_equal(transforms.decode_image(tf.constant(encoded)).numpy(),
                                      decoded)
        seed = tf.constant([trial, 8], tf.int64)
        np.testing.assert_array_equal(
            transforms.random_resized_crop(tf.constant(encoded), 48, seed).numpy(),
            transforms.random_resized_crop(tf.constant(decoded), 48, seed).numpy())


# === The evaluation transform ===
def test_eval_transform_is_deits_up_to_interpolation_error():
    """EvalTransform against DeiT's eval transform (torchvision Resize(256, bicubic) on PIL,
    CenterCrop(224), ToTensor, Normalize) from the same JPEG files of several sizes and shapes:
    within one pixel level (1/255 before normalising) everywhere, ~0.15-0.18 levels on
    average; exact where no resize happens (shorter side already 256)."""
    import io

    torch = pytest.importorskip("torch")
    from torchvision import transforms as tv

    deit_eval = tv.Compose([
        tv.Resize(256, interpolation=tv.InterpolationMode.BICUBIC), tv.CenterCrop(224),
        tv.ToTensor(), tv.Normalize(transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)])
    ours_eval = transforms.EvalTransform(224)
    one_level = 1.0 / 255.0 / min(transforms.IMAGENET_STD)
    for height, width in [(375, 500), (500, 333), (300, 407), (200, 180), (256, 256)]:
        encoded = jpeg_bytes(photograph(height, width, height + width))
        with torch.no_grad():
            theirs = deit_eval(PIL_Image.open(io.BytesIO(encoded)).convert("RGB"))
        theirs = theirs.permute(1, 2, 0).numpy()
        ours = ours_eval(tf.constant(encoded)).numpy()  # decoded by us, as in the pipeline
        difference = np.abs(ours - theirs)
        assert ours.shape == theirs.shape == (224, 224, 3)
        assert difference.max() <= one_level * 1.001, (height, width)
        assert difference.mean() <= 0.25 * one_level, (height, width)
        if height == width == 256:
            assert difference.max() < 1e-5


# === Repeated augmentation ===
def deit_ra_batches(permutation, num_replicas, batch_per_replica, repeats=3, round_to=256):
    """DeiT's RASampler (samplers.py) + DataLoader(drop_last=True) for one epoch: the global
    batches as lists of dataset indices. `permutation` stands for its torch.randperm (the
    shuffle's generator is not the point); `round_to`: DeiT floors the dataset size to a
    multiple of 256 before splitting it (1 to study small sets)."""
    size = len(permutation)
    num_samples = int(math.ceil(size * repeats / num_replicas))
    total_size = num_samples * num_replicas
    num_selected = int(math.floor(size // round_to * round_to / num_replicas))
    indices = [int(i) for i in permutation for _ in range(repeats)]
    indices += indices[:total_size - len(indices)]
    per_rank = [indices[rank:total_size:num_replicas][:num_selected]
                for rank in range(num_replicas)]
    steps = num_selected // batch_per_replica
    return [sum((rank[s * batch_per_replica:(s + 1) * batch_per_replica] for rank in per_rank),
                []) for s in range(steps)]


def test_repeated_augmentation_batches_are_deits():
    """Each global batch holds the same images as DeiT's (RASampler over its replicas): every
    image of the epoch three times, differently augmented, the same count of batches."""
    size, seed, epoch = 48, 3, 2
    for replicas, per_replica in [(2, 4), (3, 4), (4, 3)]:
        global_batch = replicas * per_replica
        images = np.arange(size, dtype=np.float32).reshape(size, 1, 1, 1) * np.ones((1, 2, 2, 3))
        dataset = train_pipeline(
            (images.astype(np.float32), np.arange(size)),
            lambda image, s: image + tf.random.stateless_uniform(tf.shape(image), s),
            batch_size=global_batch, num_examples=size, epoch=epoch, seed=seed,
            repeated_augmentation=3)
        ours = [(x.numpy(), y.numpy()) for x, y in dataset]
        permutation = np.random.default_rng([seed, epoch]).permutation(size)
        theirs = deit_ra_batches(permutation, replicas, per_replica, round_to=1)
        assert len(ours) == len(theirs)
        for (_, labels), indices in zip(ours, theirs):
            assert sorted(labels.tolist()) == sorted(indices)
        labels = np.concatenate([y for _, y in ours])
        assert set(np.bincount(labels)[np.unique(labels)]) == {3}
        pixels = np.concatenate([x for x, _ in ours])[:, 0, 0, 0]
        for index in np.unique(labels):  # three copies, three different augmentations
            assert len(set(pixels[labels == index].round(6))) == 3


def test_repeated_augmentation_epoch_length_is_deits_on_imagenet():
    """The number of steps per epoch, N // global batch, against DeiT's (RASampler's
    floor(N // 256 * 256 / replicas) per replica, drop_last) on ImageNet-1k's 1,281,167
    images for the paper's 2 x 256 and other layouts: equal (DeiT's 256-rounding drops at
    most 255 images, never a whole batch of these sizes)."""
    size = 1_281_167
    for replicas, per_replica in [(2, 256), (8, 64), (4, 128), (8, 128), (3, 100), (16, 64)]:
        deit_steps = math.floor(size // 256 * 256 / replicas) // per_replica
        assert size // (replicas * per_replica) == deit_steps, (replicas, per_replica)
