"""Layer-pair selection (SPEC.md 6) and the `--layer_pairs` flag format."""

import numpy as np
import pytest
from analysis_helpers import cait_like_profile

from keras_spectralkd.analysis import Profile
from keras_spectralkd.analysis import format_layer_pairs
from keras_spectralkd.analysis import parse_layer_pairs
from keras_spectralkd.analysis import profile_ends
from keras_spectralkd.analysis import select_layer_pairs
from keras_spectralkd.analysis.selection import DEIT_FROM_CAIT_S24_PAIRS

# SPEC.md 4: DeiT student units <- CaiT-S24 teacher units.
DEIT_PAIRS = list(zip([0, 1, 6, 7, 8, 9, 10, 11], [0, 1, 18, 19, 20, 21, 22, 23]))


@pytest.mark.parametrize(
    "profile",
    [
        cait_like_profile(),
        cait_like_profile(noise=0.01, seed=1),
        cait_like_profile(noise=0.02, seed=2),
        # A sharper U: steep arms, flat floor.
        cait_like_profile(floor=0.1, rise=(0.8, 0.85, 0.9, 0.95, 1.0, 1.1), front=(1.2, 0.9)),
        # Scale and offset do not change the selection.
        3.7 * cait_like_profile(noise=0.01, seed=3) + 11.0,
    ],
)
def test_u_shaped_24_unit_profile_gives_the_papers_deit_pairs(profile):
    assert profile_ends(profile) == (2, 6)
    assert select_layer_pairs(profile, 12) == DEIT_PAIRS
    # The constant the recipes and benchmarks use is the same list.
    assert list(DEIT_FROM_CAIT_S24_PAIRS) == DEIT_PAIRS


def test_the_mean_keeps_a_gradual_arm_that_the_midpoint_would_cut():
    # Why the rule uses the mean (see selection.py): the midpoint (min + max) / 2 of this profile
    # lies above its 3 first rising blocks and would give m=3 instead of 6.
    profile = cait_like_profile()
    midpoint = (profile.min() + profile.max()) / 2
    assert np.sum(profile[18:] > midpoint) == 3
    assert profile_ends(profile)[1] == 6


def test_counts_given_explicitly():
    profile = cait_like_profile()
    assert select_layer_pairs(profile, 12, num_front=2, num_back=6) == DEIT_PAIRS
    assert select_layer_pairs(profile, 12, num_front=1, num_back=1) == [(0, 0), (11, 23)]
    assert select_layer_pairs(profile, 12, num_front=3, num_back=0) == [(0, 0), (1, 1), (2, 2)]
    # One count given, the other found by the rule.
    assert select_layer_pairs(profile, 12, num_front=1) == [(0, 0)] + DEIT_PAIRS[2:]
    assert select_layer_pairs(profile, 12, num_back=2) == DEIT_PAIRS[:2] + [(10, 22), (11, 23)]
    # Equal depths with explicit counts select only the ends.
    assert select_layer_pairs(np.ones(4), 4, num_front=1, num_back=1) == [(0, 0), (3, 3)]


def test_equal_depths_pair_every_unit():
    # Swin-S -> Swin-T: 4 stages each, stage i -> stage i, whatever the profile's shape.
    assert select_layer_pairs([0.3, 0.1, 0.2, 0.9], 4) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert select_layer_pairs(np.arange(12.0), 12) == [(i, i) for i in range(12)]


def test_a_shallow_student_trims_the_weaker_inner_units():
    profile = cait_like_profile()  # k=2, m=6 -> 8 pairs; a 6-unit student takes 6.
    # Innermost candidates: teacher 1 (0.48) vs 18 (0.36), then 1 (0.48) vs 19 (0.40): both
    # times the back one is weaker, so the back arm loses 18 and 19.
    assert select_layer_pairs(profile, 6) == [(0, 0), (1, 1), (2, 20), (3, 21), (4, 22), (5, 23)]
    # A 2-unit student keeps the minimum: first and last.
    assert select_layer_pairs(profile, 2) == [(0, 0), (1, 23)]


def test_flat_and_monotone_profiles_still_pair_first_and_last():
    assert select_layer_pairs(np.ones(10), 5) == [(0, 0), (4, 9)]
    # Float32-level noise on a flat profile (a random-init CaiT) is not a U.
    noisy = 0.0669 * (1 + 3e-8 * np.random.default_rng(0).standard_normal(24))
    assert profile_ends(noisy) == (1, 1)
    # Increasing: no front arm above the mean, but the first unit is always kept.
    pairs = select_layer_pairs(np.arange(10.0), 6)
    assert pairs[0] == (0, 0) and pairs[-1] == (5, 9)
    assert profile_ends(np.arange(10.0)) == (1, 5)


def test_a_deeper_student_than_teacher():
    profile = [1.0, 0.1, 0.1, 0.1, 0.9, 1.0]
    assert select_layer_pairs(profile, 12) == [(0, 0), (10, 4), (11, 5)]


def test_accepts_a_profile_object_and_a_backbone_for_the_depth():
    intensity = cait_like_profile()
    profile = Profile(
        model_name="cait",
        depth=24,
        units=list(range(24)),
        num_channels=[4] * 24,
        grids=[(1, 1)] * 24,
        spectra=[np.full(4, v) for v in intensity],
        intensity=intensity,
        entropy=None,
        magnitude=intensity,
        num_images=1,
    )

    class Student:
        num_units = 12

    assert select_layer_pairs(profile, Student()) == DEIT_PAIRS
    partial = Profile(
        model_name="cait",
        depth=24,
        units=[0, 1],
        num_channels=[4] * 2,
        grids=[(1, 1)] * 2,
        spectra=[np.ones(4)] * 2,
        intensity=[1, 1],
        entropy=None,
        magnitude=[1, 1],
        num_images=1,
    )
    with pytest.raises(ValueError, match="every teacher unit"):
        select_layer_pairs(partial, 12)


def test_bad_arguments():
    profile = cait_like_profile()
    with pytest.raises(ValueError, match="overlap"):
        select_layer_pairs(profile, 12, num_front=6, num_back=7)
    with pytest.raises(ValueError, match="num_front"):
        select_layer_pairs(profile, 12, num_front=13)
    with pytest.raises(ValueError, match="num_back"):
        select_layer_pairs(profile, 12, num_back=-1)
    with pytest.raises(ValueError, match="is 0"):
        select_layer_pairs(profile, 12, num_front=0, num_back=0)
    with pytest.raises(ValueError, match="student_depth"):
        select_layer_pairs(profile, 0)
    with pytest.raises(ValueError, match="student_depth"):
        select_layer_pairs(profile, "12")
    with pytest.raises(ValueError, match="1-D"):
        select_layer_pairs([[1.0, 2.0]], 4)
    with pytest.raises(ValueError, match="non-finite"):
        select_layer_pairs([1.0, np.nan, 2.0], 2)
    # An explicit count is kept; the rule's count is trimmed to fit, but never below 1.
    assert select_layer_pairs(profile, 12, num_front=10)[-3:] == [(9, 9), (10, 22), (11, 23)]
    with pytest.raises(ValueError, match="Cannot fit"):
        select_layer_pairs(profile, 12, num_front=12)


def test_pairs_are_accepted_by_the_distiller_unchanged():
    from tiny_backbone import TinyBackbone

    from keras_spectralkd import Distiller

    teacher = TinyBackbone(width=8, depth=24, name="teacher")
    student = TinyBackbone(width=4, depth=12, name="student")
    pairs = select_layer_pairs(cait_like_profile(), student.num_units)
    distiller = Distiller(teacher, student, layer_pairs=pairs)
    assert distiller.layer_pairs == DEIT_PAIRS
    # ... and so is the flag round trip the recipes use.
    assert Distiller(teacher, student, layer_pairs=parse_layer_pairs(format_layer_pairs(pairs)))


def test_flag_format_round_trip():
    text = format_layer_pairs(DEIT_PAIRS)
    assert text == "0:0,1:1,6:18,7:19,8:20,9:21,10:22,11:23"
    assert parse_layer_pairs(text) == DEIT_PAIRS
    assert parse_layer_pairs(" 0:0 , 3:3 ") == [(0, 0), (3, 3)]
    assert format_layer_pairs([(np.int64(2), np.int64(5))]) == "2:5"


@pytest.mark.parametrize("text", ["", "  ", "0:0,", "0-0", "0:0:1", "a:1", "1:-2", "0:0,,1:1"])
def test_parse_rejects_malformed_text(text):
    with pytest.raises(ValueError, match="student:teacher|>= 0"):
        parse_layer_pairs(text)


def test_format_rejects_bad_pairs():
    with pytest.raises(ValueError, match="No layer pairs"):
        format_layer_pairs([])
    with pytest.raises(ValueError, match="student_unit, teacher_unit"):
        format_layer_pairs([(1, 2, 3)])
