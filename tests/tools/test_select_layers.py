"""tools/select_layers.py: a saved teacher profile -> the recipes' --layer_pairs flag."""

import os
import subprocess
import sys

import numpy as np
import pytest
from tools_helpers import REPO
from tools_helpers import load_tool
from tools_helpers import script_env

from keras_spectralkd.analysis import Profile
from keras_spectralkd.analysis import parse_layer_pairs

select_tool = load_tool("select_layers")

DEIT_FLAG = "--layer_pairs=0:0,1:1,6:18,7:19,8:20,9:21,10:22,11:23"


@pytest.fixture
def cait_profile_path(tmp_path):
    """A saved CaiT-S24-like profile: high first 2 blocks, low floor, 6 rising last blocks."""
    intensity = np.concatenate(
        [[0.62, 0.48], 0.2 + np.linspace(0, 0.04, 16), [0.36, 0.40, 0.45, 0.52, 0.60, 0.75]]
    )
    profile = Profile(
        model_name="cait_s24_224",
        depth=24,
        units=list(range(24)),
        num_channels=[4] * 24,
        grids=[(14, 14)] * 24,
        spectra=[np.full(4, v) for v in intensity],
        intensity=intensity,
        entropy=None,
        magnitude=intensity,
        num_images=32,
    )
    return str(profile.save(tmp_path / "model_profile.json"))


def test_paper_pairs_from_a_saved_profile(cait_profile_path, tmp_path):
    pairs, flag = select_tool.select_layers(cait_profile_path, student_depth=12)
    assert flag == DEIT_FLAG
    assert parse_layer_pairs(flag.split("=", 1)[1]) == pairs
    # The same from the CSV form, and from a student name (depth read from its preset).
    csv_path = str(Profile.load(cait_profile_path).save(tmp_path / "model_profile.csv"))
    assert select_tool.select_layers(csv_path, student_depth=12)[1] == DEIT_FLAG
    assert select_tool.select_layers(cait_profile_path, student="deit_tiny_patch16_224")[1] == (
        DEIT_FLAG
    )
    _, flag = select_tool.select_layers(
        cait_profile_path, student_depth=12, num_front=1, num_back=1
    )
    assert flag == "--layer_pairs=0:0,11:23"


def test_student_units_without_building():
    assert select_tool.student_units("deit_tiny_patch16_224") == 12
    assert select_tool.student_units("deit_small_patch16_224", {"depth": 6}) == 6
    assert select_tool.student_units("swin_tiny_patch4_window7_224") == 4
    assert select_tool.student_units("cait_s24_224") == 24


def test_needs_exactly_one_student_description(cait_profile_path):
    with pytest.raises(ValueError, match="--student_depth or --student"):
        select_tool.select_layers(cait_profile_path)
    with pytest.raises(ValueError, match="only one"):
        select_tool.select_layers(
            cait_profile_path, student_depth=12, student="deit_tiny_patch16_224"
        )


def test_command_line_prints_only_the_flag(cait_profile_path):
    command = [
        sys.executable,
        os.path.join(REPO, "tools", "select_layers.py"),
        f"--profile={cait_profile_path}",
        "--student=deit_tiny_patch16_224",
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, env=script_env(), timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == DEIT_FLAG
