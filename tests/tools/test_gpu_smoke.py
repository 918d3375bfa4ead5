"""tools/gpu_smoke.py as a user runs it: one recipe on this backend, in its subprocess, on
whatever devices this machine has (on CI: none, so it must say it ran on the CPU)."""

import importlib.util
import os
import re
import subprocess
import sys

import keras
import pytest

from keras_spectralkd import precision as precision_lib
from tools_helpers import REPO, script_env

SCRIPT = os.path.join(REPO, "tools", "gpu_smoke.py")


def _smoke(tmp_path, *flags, timeout=600):
    command = [sys.executable, SCRIPT, "--recipes=deit_tiny",
               f"--backends={keras.backend.backend()}", f"--work_dir={tmp_path}", *flags]
    return subprocess.run(command, env=script_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_one_recipe_runs_and_gets_its_line(tmp_path):
    done = _smoke(tmp_path, "--steps=2")
    assert done.returncode == 0, done.stdout + done.stderr
    backend = keras.backend.backend()
    lines = done.stdout.splitlines()
    case = [line for line in lines if line.startswith("deit_tiny")]
    assert len(case) == 1, done.stdout
    match = re.match(rf"deit_tiny +{backend} +ok +([\d.]+) steps/s  (.*?); (\w+); (.*?); 2 steps, "
                     r"global batch (\d+), loss ([\d.e+-]+);", case[0])
    assert match, case[0]
    steps_per_s, devices, precision, distribution, batch, loss = match.groups()
    assert float(steps_per_s) > 0 and 0 < float(loss) < 100
    if devices == "no GPU: ran on CPU":
        # precision=auto's choice on this CPU (mixed_bfloat16 where it has bf16 matmul units,
        # else float32), one device, the tiny preset's batch.
        expected = precision_lib.choose("auto", [], backend=backend).policy
        assert precision == expected and distribution.startswith("one_device x1")
        assert batch == "8"
    else:
        assert re.fullmatch(r"\d+ GPU\(s\)", devices) and precision == "mixed_bfloat16"
    assert lines[-1] == "# 1 of 1 cases ok"
    # A given work dir is kept: the teacher written first, the run folder the case trained.
    assert os.path.exists(tmp_path / "deit_tiny-teacher.weights.h5")
    assert os.path.exists(tmp_path / f"deit_tiny-{backend}" / "student.keras")


@pytest.mark.slow
def test_a_case_that_does_not_finish_is_a_failed_line_and_exit_status_1(tmp_path):
    # The case (not the teachers' process before it) killed after 1 s, in its imports: the
    # cheapest way to make a case fail.
    done = _smoke(tmp_path, "--steps=2", "--timeout=1", timeout=120)
    assert done.returncode == 1
    backend = keras.backend.backend()
    assert re.search(rf"^deit_tiny +{backend} +FAILED  timed out after 1 s \(log: ",
                     done.stdout, re.MULTILINE), done.stdout
    assert "# 0 of 1 cases ok" in done.stdout and f"# logs in {tmp_path}" in done.stdout


def _tool():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("flags, message", [
    (["--recipes=deit_base"], "'deit_base': expected a comma-separated list of deit_tiny"),
    (["--backends=numpy"], "'numpy': expected a comma-separated list of tensorflow"),
    (["--steps=1"], "--steps=1: at least 2"),
])
def test_usage_errors_exit_2_before_any_case_runs(flags, message, capsys, tmp_path):
    assert _tool().main([*flags, f"--work_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu_smoke.py: usage error: ") and message in err, err
    assert os.listdir(tmp_path) == []
