"""RandAugment against timm's (`rand-m9-mstd0.5-inc1`, DeiT's `--aa`): every operation pixel for
pixel on JPEG photographs and on white noise, the draws in distribution, and the settings
timm's `create_transform` makes from DeiT's arguments (fill, interpolation, no colour jitter).

timm is the oracle: its operations are taken from the transform its own factory builds, so
the fill, interpolation and translation settings are timm's, not copies of ours."""

import math
import random

import numpy as np
import pytest
import tensorflow as tf

from data_helpers import photograph

from keras_spectralkd.data import transforms

auto_augment = pytest.importorskip("timm.data.auto_augment")
PIL_Image = pytest.importorskip("PIL.Image")

# DeiT's main.py defaults, as its build_transform passes them to timm's create_transform.
DEIT_ARGS = dict(input_size=224, is_training=True, color_jitter=0.3,
                 auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic", re_prob=0.25,
                 re_mode="pixel", re_count=1)
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
SIGNED = GEOMETRIC + ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                      "SharpnessIncreasing")
WITHOUT_MAGNITUDE = ("AutoContrast", "Equalize", "Invert")


@pytest.fixture(scope="module")
def deit_train_transform():
    from timm.data import create_transform

    return create_transform(**DEIT_ARGS)


@pytest.fixture(scope="module")
def timm_rand_augment(deit_train_transform):
    (augment,) = [t for t in deit_train_transform.transforms
                  if isinstance(t, auto_augment.RandAugment)]
    return augment


PHOTOGRAPHS = [((224, 224), 0), ((97, 150), 1), ((180, 120), 2)]


@pytest.fixture(scope="module")
def photographs():
    return [photograph(*size, seed) for size, seed in PHOTOGRAPHS]


def _timm_op(timm_rand_augment, name, magnitude):
    """timm's operation `name` from DeiT's transform, at a fixed magnitude (no jitter)."""
    (op,) = [op for op in timm_rand_augment.ops if op.name == name]
    hparams = dict(op.hparams, magnitude_std=0)
    return auto_augment.AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=hparams)


def _timm_apply(op, image, negate, monkeypatch):
    # timm's `_randomly_negate` negates when random.random() > 0.5.
    with monkeypatch.context() as patch:
        patch.setattr(auto_augment.random, "random", lambda: 0.9 if negate else 0.1)
        return np.asarray(op(PIL_Image.fromarray(image)), np.float32)


def _compare(name, ours, theirs, where):
    if name in GEOMETRIC:
        # Exact on this machine (0 differing values in every case); the allowance covers
        # last-bit differences of sin/cos and of Python's round(x, 15) on other platforms.
        differ = ours != theirs
        assert np.abs(ours - theirs).max() <= 1.0, where
        assert differ.mean() <= 1e-3, (where, int(differ.sum()))
    else:
        np.testing.assert_array_equal(ours, theirs, err_msg=str(where))


@pytest.mark.parametrize("name", transforms.RandAugment.OPS)
def test_each_operation_equals_timms(name, timm_rand_augment, photographs, monkeypatch):
    """Each operation at magnitudes 0, 5 and 9 (both signs where timm draws one) on three JPEG
    photographs of different sizes, then at random magnitudes on white noise (the hardest
    case for interpolation), against timm's operation with DeiT's fill and interpolation."""
    ours_augment = transforms.RandAugment()
    cases = [(image, magnitude, negate) for image in photographs for magnitude in (0, 5, 9)
             for negate in ((False, True) if name in SIGNED else (False,))]
    rng = np.random.default_rng(transforms.RandAugment.OPS.index(name))
    for _ in range(6):
        shape = (int(rng.integers(5, 80)), int(rng.integers(5, 80)), 3)
        noise = rng.integers(0, 256, shape, dtype=np.uint8)
        # Magnitude 10 (a 2.3% draw) is left out: timm's posterize refuses it on Pillow >= 11.
        cases.append((noise, float(rng.uniform(0, 9.99)), bool(rng.integers(2))))
    changed = 0
    for image, magnitude, negate in cases:
        theirs = _timm_apply(_timm_op(timm_rand_augment, name, magnitude), image, negate,
                             monkeypatch)
        ours = ours_augment.apply(name, tf.constant(image, tf.float32), magnitude, negate)
        _compare(name, ours.numpy(), theirs, (name, image.shape, magnitude, negate))
        changed += bool((theirs != image).any())
    # The cases exercise the operation: most change the image (magnitude 0 may not).
    assert changed >= len(cases) // 2, (name, changed, len(cases))


def test_posterize_at_magnitude_ten_keeps_no_bits():
    """timm's PosterizeIncreasing at m10 asks PIL for 0 bits: Pillow >= 11 raises, older Pillow
    (and we) return black. N(9, 0.5) clipped to 10 reaches it in 2.3% of Posterize draws."""
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (8, 9, 3)), tf.float32)
    out = transforms.RandAugment().apply("PosterizeIncreasing", image, 10.0)
    np.testing.assert_array_equal(out.numpy(), np.zeros((8, 9, 3)))
    kept_one_bit = transforms.RandAugment().apply("PosterizeIncreasing", image, 9.99).numpy()
    np.testing.assert_array_equal(kept_one_bit, (image.numpy().astype(int) & 0x80))


def test_settings_are_timms_for_deit(timm_rand_augment, deit_train_transform):
    """What timm's create_transform builds from DeiT's arguments, against our defaults: the
    same 15 operations in the same order, 2 per image, each with probability 0.5, magnitude 9
    with std 0.5 and upper clip 10, translations up to 0.45 of the side, bicubic geometric
    operations filled with the ImageNet mean (per channel); and no colour jitter (timm turns
    it off when RandAugment is on: `disable_color_jitter`)."""
    ours = transforms.RandAugment()
    ops = timm_rand_augment.ops
    assert tuple(op.name for op in ops) == ours.OPS
    assert timm_rand_augment.num_layers == ours.num_ops
    assert timm_rand_augment.choice_weights is None  # uniform, with replacement
    for op in ops:
        assert op.prob == ours.prob
        assert op.magnitude == ours.magnitude
        assert op.magnitude_std == ours.magnitude_std
        assert (op.magnitude_max or auto_augment._LEVEL_DENOM) == ours.magnitude_max
        assert op.hparams.get("translate_pct", 0.45) == ours.translate_pct
        assert tuple(float(v) for v in op.kwargs["fillcolor"]) == ours.fill
        assert op.kwargs["resample"] == PIL_Image.Resampling.BICUBIC
    names = [type(t).__name__ for t in deit_train_transform.transforms]
    assert "ColorJitter" not in names
    assert names == ["RandomResizedCropAndInterpolation", "RandomHorizontalFlip", "RandAugment",
                     "MaybeToTensor", "Normalize", "RandomErasing"]
    crop, flip, _, _, normalize, erasing = deit_train_transform.transforms
    ours_train = transforms.TrainTransform()
    assert tuple(crop.scale) == ours_train.scale
    assert tuple(crop.ratio) == pytest.approx(ours_train.ratio)
    assert str(crop.interpolation.value) == "bicubic"
    assert ours_train.interpolation == "bicubic"
    assert flip.p == ours_train.hflip
    assert tuple(normalize.mean.tolist()) == pytest.approx(ours_train.mean)
    assert tuple(normalize.std.tolist()) == pytest.approx(ours_train.std)
    assert erasing.probability == ours_train.random_erasing
    assert erasing.mode == "pixel" and erasing.max_count == 1
    assert isinstance(ours_train.rand_augment, transforms.RandAugment)


def test_the_transform_applies_exactly_its_draws():
    """`RandAugment(image, seed)` is the drawn operations, applied in order where drawn to
    apply, at the drawn magnitude and sign (so the distribution test below covers it)."""
    augment = transforms.RandAugment()
    image = tf.constant(photograph(40, 48, 5), tf.float32)
    applied = 0
    for trial in range(12):
        seed = tf.constant([trial, 11], tf.int64)
        draws = {k: v.numpy() for k, v in augment.draw(seed).items()}
        expected = image
        for op, apply, magnitude, negate in zip(draws["ops"], draws["applied"],
                                                draws["magnitudes"], draws["negated"]):
            if apply:
                expected = augment.apply(augment.OPS[op], expected, magnitude, negate)
                applied += 1
        np.testing.assert_array_equal(augment(image, seed).numpy(), expected.numpy())
    assert applied >= 6


def _timm_draws(timm_rand_augment, trials):
    """What timm's RandAugment draws for `trials` images: per image, the applied operations as
    (name, magnitude or None, negated or None), recorded by wrapping each op's functions."""
    record = []
    originals = [(op, op.level_fn, op.aug_fn) for op in timm_rand_augment.ops]

    def wrap(op, level_fn):
        def level(magnitude, hparams):
            args = level_fn(magnitude, hparams)
            negated = math.copysign(1.0, args[0]) < 0 if op.name in GEOMETRIC else (
                args[0] < 1.0 if op.name in SIGNED else None)
            record[-1].append((op.name, magnitude, negated))
            return args
        return level

    def apply(op):
        def aug_fn(img, *args, **kwargs):
            if op.level_fn is None:
                record[-1].append((op.name, None, None))
            return img
        return aug_fn

    try:
        for op, level_fn, _ in originals:
            op.aug_fn = apply(op)
            if level_fn is not None:
                op.level_fn = wrap(op, level_fn)
        random.seed(0)
        np.random.seed(0)
        image = PIL_Image.new("RGB", (1, 1))
        for _ in range(trials):
            record.append([])
            timm_rand_augment(image)
    finally:
        for op, level_fn, aug_fn in originals:
            op.level_fn, op.aug_fn = level_fn, aug_fn
    return record


def _our_draws(augment, trials):
    draw = tf.function(lambda i: augment.draw(tf.stack([i, tf.constant(3, tf.int64)])))
    record = []
    for trial in range(trials):
        draws = {k: v.numpy() for k, v in draw(tf.constant(trial, tf.int64)).items()}
        image = []
        for op, apply, magnitude, negate in zip(draws["ops"], draws["applied"],
                                                draws["magnitudes"], draws["negated"]):
            if apply:
                name = augment.OPS[op]
                image.append((name, None if name in WITHOUT_MAGNITUDE else magnitude,
                              negate if name in SIGNED else None))
        record.append(image)
    return record


def _ks_statistic(a, b):
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return np.abs(np.searchsorted(a, grid, "right") / len(a)
                  - np.searchsorted(b, grid, "right") / len(b)).max()


def test_draws_are_distributed_as_timms(timm_rand_augment):
    """4000 images each: how many operations apply (0, 1, 2 with 1/4, 1/2, 1/4), which ones
    (uniform over 15), their magnitudes (N(9, 0.5) clipped to [0, 10]: 2.3% at 10) and signs
    (half negated), ours (`RandAugment.draw`) against timm's (recorded from its ops)."""
    trials = 4000
    theirs = _timm_draws(timm_rand_augment, trials)
    ours = _our_draws(transforms.RandAugment(), trials)

    def stats(record):
        counts = np.bincount([len(image) for image in record], minlength=3) / len(record)
        names = [name for image in record for name, _, _ in image]
        frequencies = np.array([names.count(n) for n in transforms.RandAugment.OPS]) / len(names)
        magnitudes = np.array([m for image in record for _, m, _ in image if m is not None])
        signs = np.array([s for image in record for _, _, s in image if s is not None], float)
        return counts, frequencies, magnitudes, signs

    (our_counts, our_freq, our_mag, our_signs) = stats(ours)
    (their_counts, their_freq, their_mag, their_signs) = stats(theirs)
    # Standard errors: ~0.007 (counts), ~0.004 (each op's share of ~4000 draws), ~0.009
    # (magnitude mean), ~0.015 (signs); tolerances are about 4 of them.
    for counts in (our_counts, their_counts):
        np.testing.assert_allclose(counts, [0.25, 0.5, 0.25], atol=0.03)
    for frequencies in (our_freq, their_freq):
        np.testing.assert_allclose(frequencies, 1 / 15, atol=0.017)
    assert len(our_mag) > 2500 and len(their_mag) > 2500
    for magnitudes in (our_mag, their_mag):
        assert magnitudes.min() >= 0.0 and magnitudes.max() == 10.0
        assert abs(np.mean(magnitudes == 10.0) - 0.0228) < 0.011
        assert abs(magnitudes.mean() - 8.99) < 0.04
    assert abs(our_mag.std() - their_mag.std()) < 0.03
    # Two-sample Kolmogorov-Smirnov at alpha = 0.001: c(alpha) sqrt((n + m) / (n m)).
    critical = 1.95 * math.sqrt((len(our_mag) + len(their_mag)) / (len(our_mag) * len(their_mag)))
    assert _ks_statistic(our_mag, their_mag) < critical
    for signs in (our_signs, their_signs):
        assert abs(signs.mean() - 0.5) < 0.06


def test_operations_run_on_images_of_one_or_two_pixels_a_side():
    """PIL leaves a border of one pixel alone when sharpening: an image all border is kept."""
    augment = transforms.RandAugment()
    image = tf.constant(np.random.default_rng(1).integers(0, 256, (2, 1, 3)), tf.float32)
    for name in augment.OPS:
        assert augment.apply(name, image, 7.0, True).shape == (2, 1, 3), name
    np.testing.assert_array_equal(augment.apply("SharpnessIncreasing", image, 9.0), image)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="num_ops must be an integer >= 0; got 1.5"):
        transforms.RandAugment(num_ops=1.5)
    with pytest.raises(ValueError, match="magnitude_std must be >= 0"):
        transforms.RandAugment(magnitude_std=-1)
    with pytest.raises(ValueError, match="fill must be one pixel value or three"):
        transforms.RandAugment(fill=(1, 2))
    with pytest.raises(ValueError, match="translate_pct must be in"):
        transforms.RandAugment(translate_pct=2.0)
    with pytest.raises(ValueError, match="Unknown RandAugment operation 'Cutout'"):
        transforms.RandAugment().apply("Cutout", tf.zeros((4, 4, 3)), 9.0)
