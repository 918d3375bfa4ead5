"""The warmup-cosine schedule against its formula at the key steps (SPEC.md 7)."""

import math

import keras
import numpy as np
import pytest

from keras_spectralkd.training.schedules import WarmupCosineDecay, scaled_learning_rate

BASE, TOTAL, WARMUP, INIT, FLOOR = 1e-3, 1000, 50, 1e-6, 1e-5


def formula(step):
    if step < WARMUP:
        return INIT + (BASE - INIT) * step / WARMUP
    step = min(step, TOTAL)
    return FLOOR + 0.5 * (BASE - FLOOR) * (1 + math.cos(math.pi * step / TOTAL))


@pytest.fixture
def schedule():
    return WarmupCosineDecay(BASE, total_steps=TOTAL, warmup_steps=WARMUP, warmup_init_lr=INIT,
                             min_lr=FLOOR)


@pytest.mark.parametrize("step", [0, 1, 25, 49, 50, 51, 500, 999, 1000, 1500])
def test_values_at_key_steps(schedule, step):
    expected = formula(step)
    value = float(keras.ops.convert_to_numpy(schedule(step)))
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    np.testing.assert_allclose(schedule.value(step), expected, rtol=1e-12)


def test_landmarks(schedule):
    assert schedule.value(0) == INIT  # starts at the warmup rate
    # timm's warmup_prefix=False: the cosine is indexed by the global step, so just after
    # warmup the rate is a hair under the base rate.
    assert schedule.value(WARMUP) < BASE and schedule.value(WARMUP) > 0.99 * BASE
    np.testing.assert_allclose(schedule.value(TOTAL // 2), (BASE + FLOOR) / 2)
    assert schedule.value(TOTAL) == pytest.approx(FLOOR)
    assert schedule.value(10 * TOTAL) == pytest.approx(FLOOR)  # held at the floor


def test_no_warmup_and_config_roundtrip(schedule):
    plain = WarmupCosineDecay(BASE, total_steps=TOTAL)
    assert plain.value(0) == pytest.approx(BASE)
    clone = WarmupCosineDecay.from_config(schedule.get_config())
    assert clone.get_config() == schedule.get_config()
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    assert restored.value(123) == schedule.value(123)


def test_scaled_learning_rate():
    assert scaled_learning_rate(512) == pytest.approx(5e-4)
    assert scaled_learning_rate(1024) == pytest.approx(1e-3)
    assert scaled_learning_rate(128, base_lr=1e-3) == pytest.approx(2.5e-4)
    with pytest.raises(ValueError, match="global_batch_size"):
        scaled_learning_rate(0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(base_lr=0, total_steps=10), "base_lr"),
    (dict(base_lr=1e-3, total_steps=0), "total_steps"),
    (dict(base_lr=1e-3, total_steps=10, warmup_steps=10), "warmup_steps"),
    (dict(base_lr=1e-3, total_steps=10, min_lr=1.0), "min_lr"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WarmupCosineDecay(**kwargs)
