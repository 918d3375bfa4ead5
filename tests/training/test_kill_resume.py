"""Real processes killed with SIGKILL at 20 instants (10 inside checkpoint writes), resumed each
time: every resume succeeds, loses at most one save interval, and the run ends with the weights
(and optimizer state, EMA included) of an uninterrupted run. See kill_worker.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kill_worker

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker forks its training processes")
def test_sigkill_at_20_instants_then_resume(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # JAX compiles the train step again in every forked attempt: share the compiled programs.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax_cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(HERE))] + env.get("PYTHONPATH", "").split(os.pathsep)
    )
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "kill_worker.py"), str(tmp_path), "0"],
        capture_output=True, text=True, timeout=1200, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    attempts = json.loads(done.stdout.strip().splitlines()[-1])
    kills, finals = attempts[:-2], attempts[-2:]
    total = kill_worker.EPOCHS * 6
    assert len(kills) == kill_worker.KILLS
    assert {a["stage"] for a in kills if a["kind"] == "stage"} == set(kill_worker.STAGES)
    for attempt in kills:
        # Killed, or (only once the run was complete) finished normally; never failed.
        assert attempt["killed"] or (attempt["exit"] == 0 and attempt["reached"] == total), \
            (attempt, done.stderr[-3000:])
    # The work lost to each kill is at most one save interval.
    resumed = [a["resumed_from"] for a in kills[1:]] + [
        json.load(open(tmp_path / "resumed.json"))["resumed_from"]]
    for attempt, start in zip(kills, resumed):
        assert start >= attempt["reached"] - kill_worker.SAVE_EVERY, (attempt, start)
    assert max(a["reached"] for a in kills) > 2 * kill_worker.SAVE_EVERY  # it did progress
    assert [a["exit"] for a in finals] == [0, 0], done.stderr[-3000:]
    for name in ("resumed", "reference"):
        assert json.load(open(tmp_path / f"{name}.json"))["global_step"] == total
    with np.load(tmp_path / "resumed.npz") as a, np.load(tmp_path / "reference.npz") as b:
        assert a.files == b.files
        for key in a.files:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7, err_msg=key)
