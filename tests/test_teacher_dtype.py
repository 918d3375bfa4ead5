"""`Distiller(teacher_dtype=...)`: the frozen teacher runs in bfloat16 / float16, the loss does not
move (issue 13 item 3).

On the same batch, the KD and spectral terms of a low-precision teacher must stay within 1e-2
relative of the float32 teacher's; the teacher's weights and outputs must really be in the low
dtype (its matmuls run in it), the student keeps float32, and the setting survives get_config.
Teachers come from `models.create` and from `convert.from_timm` (a random timm CaiT).
"""

import keras
import numpy as np
import pytest
from keras import ops
from timm_oracle import build_timm, random_images, timm_state_dict

from keras_spectralkd import Distiller
from keras_spectralkd.convert import from_timm
from keras_spectralkd.models import create

PAIRS = [(0, 0), (1, 1)]
TEACHER = dict(image_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, num_classes=10)
TIMM_TEACHER = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, num_classes=10)


def make_student():
    keras.utils.set_random_seed(1)
    return create("deit_tiny_patch16_224", image_size=32, patch_size=8, embed_dim=24, depth=2,
                  num_heads=2, num_classes=10)


@pytest.fixture(scope="module")
def teachers():
    """float32 teachers: ours from `create`, and one converted from a randomised timm CaiT."""
    keras.utils.set_random_seed(0)
    created = create("cait_s24_224", init_values=0.1, **TEACHER)
    timm_model = build_timm("cait_s24_224", **TIMM_TEACHER)
    converted = from_timm("cait_s24_224", timm_state_dict(timm_model), **TEACHER)
    return {"create": created, "from_timm": converted}


def terms(distiller, images, labels):
    """(kd, spectral) of one training-mode forward, and the raw outputs."""
    outputs = distiller(images, training=True)
    distiller.compute_loss(images, labels, outputs)
    kd = float(ops.convert_to_numpy(distiller.kd_tracker.result()))
    spectral = float(ops.convert_to_numpy(distiller.spectral_tracker.result()))
    for tracker in (distiller.kd_tracker, distiller.spectral_tracker):
        tracker.reset_state()
    return kd, spectral, outputs


@pytest.mark.parametrize(
    "source, dtype", [("create", "bfloat16"), ("create", "float16"), ("from_timm", "bfloat16")]
)
def test_low_precision_teacher_keeps_kd_and_spectral_terms(teachers, source, dtype):
    teacher = teachers[source]
    images = random_images(8, 32, seed=3)
    labels = np.arange(8) % 10
    student = make_student()
    reference = Distiller(teacher, student, layer_pairs=PAIRS, mode="soft")
    low = Distiller(teacher, student, layer_pairs=PAIRS, mode="soft", teacher_dtype=dtype)

    kd32, spectral32, _ = terms(reference, images, labels)
    kd, spectral, outputs = terms(low, images, labels)

    # Really low precision: the copy's weights, its logits and its maps are in `dtype`, while
    # the caller's teacher and the student stay float32.
    assert low.teacher is not teacher
    assert {w.dtype for w in low.teacher.weights} == {dtype}
    assert keras.backend.standardize_dtype(outputs["teacher_logits"].dtype) == dtype
    assert {keras.backend.standardize_dtype(m.dtype) for m in outputs["teacher_maps"]} == {dtype}
    assert {w.dtype for w in teacher.weights} == {"float32"}
    assert keras.backend.standardize_dtype(outputs["logits"].dtype) == "float32"
    assert not low.teacher.trainable
    # The terms themselves: float32, and within 1e-2 relative of the float32 teacher's.
    assert kd32 > 1e-3 and spectral32 > 1e-3  # non-trivial, so "relative" means something
    assert abs(kd - kd32) <= 1e-2 * abs(kd32), (kd, kd32)
    assert abs(spectral - spectral32) <= 1e-2 * abs(spectral32), (spectral, spectral32)
    # ... but not bit-equal: the teacher did compute in low precision.
    assert kd != kd32 or spectral != spectral32


def test_teacher_dtype_round_trips_through_config(teachers):
    distiller = Distiller(teachers["create"], make_student(), layer_pairs=PAIRS,
                          teacher_dtype="bfloat16")
    config = distiller.get_config()
    assert config["teacher_dtype"] == "bfloat16"
    restored = Distiller.from_config(config)
    assert restored.teacher_dtype == "bfloat16"
    assert {w.dtype for w in restored.teacher.weights} == {"bfloat16"}
    assert {w.dtype for w in restored.student.weights} == {"float32"}
    # float32 / None mean "as given": no copy.
    same = Distiller(teachers["create"], make_student(), teacher_dtype="float32")
    assert same.teacher is teachers["create"] and same.teacher_dtype is None


def test_bad_teacher_dtype_is_named(teachers):
    with pytest.raises(ValueError, match="teacher_dtype.*'int8'"):
        Distiller(teachers["create"], make_student(), teacher_dtype="int8")


def test_teacher_without_a_dtype_in_its_config_is_refused():
    inputs = keras.Input((4,))
    plain = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="teacher_dtype='bfloat16' needs a teacher"):
        Distiller(plain, student, teacher_dtype="bfloat16")
