"""MixUp / CutMix (DeiT's `--mixup 0.8 --cutmix 1.0`, off in the paper) against timm's `Mixup`
in batch mode: the mixed images and smoothed targets given the same draws, the draws in
distribution (switch probability, lambda, CutMix boxes), and the per-batch seed reaching the
mixing so that a resumed stream replays it."""

import math

import numpy as np
import pytest
import tensorflow as tf
from test_rand_augment import _ks_statistic

from keras_spectralkd.data import transforms
from keras_spectralkd.data.pipeline import train_pipeline

timm_mixup = pytest.importorskip("timm.data.mixup")
torch = pytest.importorskip("torch")

NUM_CLASSES, SMOOTHING = 5, 0.1


def _timm_mix(images, labels, draws, monkeypatch, **kwargs):
    """timm's Mixup(mode="batch", label_smoothing=0.1) on NCHW copies of `images`, its
    np.random draws replaced by ours (the mixing, not the generator, is compared here)."""
    mix = timm_mixup.Mixup(num_classes=NUM_CLASSES, label_smoothing=SMOOTHING, mode="batch",
                           **kwargs)
    # prob = 1: every batch is mixed; then the switch between CutMix and MixUp.
    rands = iter([0.0, 0.0 if draws["cutmix"] else 0.999])
    centers = iter([int(draws["center_y"]), int(draws["center_x"])])
    with monkeypatch.context() as patch:
        patch.setattr(timm_mixup.np.random, "rand", lambda: next(rands))
        patch.setattr(timm_mixup.np.random, "beta", lambda a, b: float(draws["beta"]))
        patch.setattr(timm_mixup.np.random, "randint",
                      lambda low, high, size=None: next(centers))
        x = torch.tensor(images).permute(0, 3, 1, 2).contiguous()
        x, targets = mix(x, torch.tensor(labels))
    return x.permute(0, 2, 3, 1).numpy(), targets.numpy()


@pytest.mark.parametrize("alphas", [(0.8, 1.0), (0.8, 0.0), (0.0, 1.0)])
def test_mixing_equals_timms_given_the_same_draws(alphas, monkeypatch):
    """For 24 batch seeds: images exactly timm's (MixUp's blend in float32 as torch, CutMix's
    box), targets equal to timm's smoothed mixed targets once smoothed as the Distiller does
    (`(1 - s) y + s / K`, linear, so smoothing after mixing is smoothing before)."""
    mixup_alpha, cutmix_alpha = alphas
    ours = transforms.MixUpCutMix(NUM_CLASSES, mixup_alpha=mixup_alpha,
                                  cutmix_alpha=cutmix_alpha)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(6, 17, 23, 3)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, 6)
    kinds = set()
    for trial in range(24):
        seed = tf.constant([trial, 1], tf.int64)
        draws = {k: v.numpy() for k, v in ours.draw(seed, 17, 23).items()}
        mixed, targets = (t.numpy() for t in ours(images, labels, seed))
        their_images, their_targets = _timm_mix(images.copy(), labels, draws, monkeypatch,
                                                mixup_alpha=mixup_alpha,
                                                cutmix_alpha=cutmix_alpha)
        np.testing.assert_array_equal(mixed, their_images)
        smoothed = (1.0 - SMOOTHING) * targets + SMOOTHING / NUM_CLASSES
        np.testing.assert_allclose(smoothed, their_targets, atol=1e-6)
        kinds.add("cutmix" if draws["cutmix"] else "mixup")
    assert kinds == ({"cutmix", "mixup"} if mixup_alpha and cutmix_alpha
                     else {"cutmix" if cutmix_alpha else "mixup"})


def test_draws_are_distributed_as_timms():
    """3000 batches each of DeiT's MixUp 0.8 / CutMix 1.0 (switch 0.5): how often CutMix is
    chosen, MixUp's lambda (Beta(0.8, 0.8)), CutMix's corrected lambda and box height, ours
    against timm's `_params_per_batch` + `cutmix_bbox_and_lam` on (224, 224) images."""
    trials, side = 3000, 224
    ours = transforms.MixUpCutMix(NUM_CLASSES)
    draw = tf.function(lambda i: ours.draw(tf.stack([i, tf.constant(9, tf.int64)]), side, side))
    our_draws = [{k: v.numpy() for k, v in draw(tf.constant(t, tf.int64)).items()}
                 for t in range(trials)]
    mix = timm_mixup.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=NUM_CLASSES)
    np.random.seed(0)
    their_draws = []
    for _ in range(trials):
        lam, use_cutmix = mix._params_per_batch()
        box = (0, 0, 0, 0)
        if use_cutmix:
            box, lam = timm_mixup.cutmix_bbox_and_lam((1, 3, side, side), lam)
        their_draws.append((bool(use_cutmix), lam, box[1] - box[0]))
    our_cut = np.array([bool(d["cutmix"]) for d in our_draws])
    their_cut = np.array([d[0] for d in their_draws])
    # Standard error of the switch rate ~0.009: tolerance about 4 of them.
    for rate in (our_cut.mean(), their_cut.mean()):
        assert abs(rate - 0.5) < 0.04
    our_lam = np.array([float(d["lam"]) for d in our_draws])
    their_lam = np.array([d[1] for d in their_draws])
    our_box = np.array([int(d["bottom"] - d["top"]) for d in our_draws])
    their_box = np.array([d[2] for d in their_draws])
    for name, a, b in [("mixup lambda", our_lam[~our_cut], their_lam[~their_cut]),
                       ("cutmix lambda", our_lam[our_cut], their_lam[their_cut]),
                       ("cutmix box height", our_box[our_cut], their_box[their_cut])]:
        # Two-sample Kolmogorov-Smirnov at alpha = 0.001.
        critical = 1.95 * math.sqrt((len(a) + len(b)) / (len(a) * len(b)))
        assert _ks_statistic(a, b) < critical, name
    # Beta(0.8, 0.8): mean 1/2, variance 1/(4 (2 alpha + 1)) = 0.0962.
    assert abs(our_lam[~our_cut].mean() - 0.5) < 0.025
    assert abs(our_lam[~our_cut].var() - 0.0962) < 0.012


def _epoch(batch_transform, **kwargs):
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (24, 8, 8, 3)).astype(np.float32)
    dataset = train_pipeline((images, np.arange(24) % NUM_CLASSES), lambda x, seed: x,
                             batch_size=4, num_examples=24, batch_transform=batch_transform,
                             seed=3, **kwargs)
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_the_batch_seed_reaches_the_mixing_and_a_resumed_stream_replays_it():
    """The mixing is a function of (seed, epoch, batch index): the same epoch built twice and
    resumed after two batches gives the same mixed batches and targets; other batches and
    other epochs are mixed differently."""
    mix = transforms.MixUpCutMix(NUM_CLASSES)
    full = _epoch(mix, epoch=2)
    again = _epoch(transforms.MixUpCutMix(NUM_CLASSES), epoch=2)
    resumed = _epoch(mix, epoch=2, skip_batches=2)
    for (a, ta), (b, tb) in zip(full, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ta, tb)
    assert len(resumed) == len(full) - 2
    for (a, ta), (b, tb) in zip(full[2:], resumed):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ta, tb)
    lams = {round(float(t.max()), 6) for _, t in full}
    assert len(lams) > 3  # each batch its own lambda
    other = _epoch(mix, epoch=3)
    assert any(not np.array_equal(ta, tb) for (_, ta), (_, tb) in zip(full, other))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="mixup_alpha and cutmix_alpha must be >= 0"):
        transforms.MixUpCutMix(3, mixup_alpha=-1.0)
    with pytest.raises(ValueError, match="needs mixup_alpha > 0 or cutmix_alpha > 0"):
        transforms.MixUpCutMix(3, mixup_alpha=0.0, cutmix_alpha=0.0)
    with pytest.raises(ValueError, match="switch_prob and prob"):
        transforms.MixUpCutMix(3, prob=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        transforms.MixUpCutMix(0)
