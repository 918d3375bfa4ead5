"""The warmup-cosine schedule against timm's `CosineLRScheduler` (SPEC.md 7), step by step.

timm is the oracle: the reference trains with its scheduler, and per-step training (timm's
`train.py`, `t_in_epochs=False`) sets the rate at construction (`warmup_lr_init`) and then calls
`step_update(num_updates)` after every optimizer step. So the k-th optimizer step (0-based) runs
at timm's rate for t = k, and Keras evaluates a schedule at `optimizer.iterations`, which is k
during the k-th step: the two must agree at every step with no offset.
"""

import keras
import numpy as np
import pytest

from keras_spectralkd.training.schedules import (
    MIN_LR,
    WARMUP_INIT_LR,
    WarmupCosineDecay,
    scaled_learning_rate,
)

# The recipe's settings (SPEC.md 7) on a short run: lr 5e-4 * 256 / 512, warmup 5 epochs from
# 1e-6, cosine to 1e-5; 12 epochs of 7 steps.
STEPS_PER_EPOCH, EPOCHS, WARMUP_EPOCHS = 7, 12, 5
BASE = scaled_learning_rate(256)
TOTAL, WARMUP = EPOCHS * STEPS_PER_EPOCH, WARMUP_EPOCHS * STEPS_PER_EPOCH


def timm_rates_per_step(num_steps, base, total, warmup, warmup_init, floor):
    """The rate each of `num_steps` optimizer steps runs at under timm's per-step protocol."""
    torch = pytest.importorskip("torch")
    scheduler_module = pytest.importorskip("timm.scheduler")
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=base)
    scheduler = scheduler_module.CosineLRScheduler(
        optimizer, t_initial=total, lr_min=floor, warmup_t=warmup, warmup_lr_init=warmup_init,
        t_in_epochs=False,
    )
    rates = []
    for step in range(num_steps):
        rates.append(optimizer.param_groups[0]["lr"])  # what optimizer.step() would use
        optimizer.step()
        scheduler.step_update(num_updates=step + 1)
    return np.array(rates)


@pytest.fixture
def schedule():
    return WarmupCosineDecay(BASE, total_steps=TOTAL, warmup_steps=WARMUP,
                             warmup_init_lr=WARMUP_INIT_LR, min_lr=MIN_LR)


def test_every_step_equals_timm(schedule):
    """Warmup, cosine and the floor past the end (a run longer than `total_steps`)."""
    steps = TOTAL + 10
    expected = timm_rates_per_step(steps, BASE, TOTAL, WARMUP, WARMUP_INIT_LR, MIN_LR)
    python = np.array([schedule.value(step) for step in range(steps)])
    np.testing.assert_allclose(python, expected, rtol=1e-12, atol=0)
    graph = keras.ops.convert_to_numpy(schedule(keras.ops.arange(steps)))
    np.testing.assert_allclose(graph, expected, rtol=1e-5, atol=0)  # float32 in the graph


def test_no_warmup_equals_timm():
    schedule = WarmupCosineDecay(BASE, total_steps=TOTAL, warmup_steps=0, min_lr=MIN_LR)
    expected = timm_rates_per_step(TOTAL + 3, BASE, TOTAL, 0, WARMUP_INIT_LR, MIN_LR)
    np.testing.assert_allclose([schedule.value(s) for s in range(TOTAL + 3)], expected,
                               rtol=1e-12, atol=0)


def test_keras_optimizer_steps_at_timm_rates(schedule):
    """The rate a Keras optimizer applies at its k-th step (read before the step, where the
    update reads it) is timm's rate for step k."""
    steps = WARMUP + 3
    variable = keras.Variable(np.zeros(2, "float32"))
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    optimizer.build([variable])
    applied = []
    for _ in range(steps):
        applied.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
        optimizer.apply([keras.ops.zeros((2,))], [variable])
    expected = timm_rates_per_step(steps, BASE, TOTAL, WARMUP, WARMUP_INIT_LR, MIN_LR)
    np.testing.assert_allclose(applied, expected, rtol=1e-5, atol=0)


def test_landmarks(schedule):
    assert schedule.value(0) == WARMUP_INIT_LR  # starts at the warmup rate
    # timm's warmup_prefix=False: the cosine is indexed by the global step, not by the step after
    # warmup, so the rate never reaches the base rate and drops where warmup ends (here, warmup
    # 5 of 12 epochs, to cos-weight 0.63; in the paper's 5 of 400 epochs, a 0.04% dip).
    rates = [schedule.value(step) for step in range(TOTAL)]
    assert max(rates) < BASE
    assert schedule.value(WARMUP) < 0.7 * schedule.value(WARMUP - 1)
    assert schedule.value(TOTAL) == pytest.approx(MIN_LR)
    assert schedule.value(10 * TOTAL) == pytest.approx(MIN_LR)  # held at the floor


def test_no_warmup_and_config_roundtrip(schedule):
    plain = WarmupCosineDecay(BASE, total_steps=TOTAL)
    assert plain.value(0) == pytest.approx(BASE)
    clone = WarmupCosineDecay.from_config(schedule.get_config())
    assert clone.get_config() == schedule.get_config()
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    assert restored.value(23) == schedule.value(23)


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
