"""The paired-seed study: its statistics against known values, and the quick study end to end
(a sweep of normal, resumable run folders of the engine)."""

import csv
import json
import math
import os

import keras
import numpy as np
import pytest

from keras_spectralkd.analysis import statistics
from keras_spectralkd.tools import study

# Student-t quantiles from tables, checked to 1e-10 against a numerical integration of the
# density (Simpson, 4e5 intervals) when they were written down.
T_TABLE = [
    (0.975, 1, 12.7062047362), (0.975, 2, 4.30265272975), (0.975, 3, 3.18244630528),
    (0.975, 4, 2.7764451052), (0.975, 5, 2.57058183661), (0.975, 9, 2.26215716274),
    (0.975, 10, 2.22813885196), (0.975, 30, 2.04227245630), (0.95, 1, 6.31375151468),
    (0.95, 2, 2.91998558036), (0.95, 10, 1.81246112281), (0.995, 2, 9.92484320092),
]


@pytest.mark.parametrize("p, df, expected", T_TABLE)
def test_t_quantile_matches_the_tables(p, df, expected):
    assert statistics.t_quantile(p, df) == pytest.approx(expected, rel=1e-9)
    assert statistics.t_quantile(1 - p, df) == pytest.approx(-expected, rel=1e-9)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.999])
def test_t_quantile_matches_closed_forms(p):
    # df 1 is the Cauchy distribution; df 2 has the quantile (2p - 1) / sqrt(2 p (1 - p)).
    assert statistics.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert statistics.t_quantile(p, 2) == pytest.approx(
        (2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9
    )


def test_t_quantile_tends_to_the_normal_and_rejects_bad_input():
    # Large df: the normal quantile plus the first Cornish-Fisher term (z^3 + z) / (4 df).
    z, df = 1.959963984540054, 100_000
    assert statistics.t_quantile(0.975, df) == pytest.approx(z + (z ** 3 + z) / (4 * df), rel=1e-8)
    assert statistics.t_cdf(0.0, 3) == 0.5
    with pytest.raises(ValueError, match="p must be in"):
        statistics.t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="Degrees of freedom"):
        statistics.t_cdf(1.0, 0)


def test_mean_interval_and_paired_difference():
    summary = statistics.mean_interval([0.80, 0.81, 0.82])
    half = 4.30265272975 * 0.01 / math.sqrt(3)
    assert summary["n"] == 3
    assert summary["mean"] == pytest.approx(0.81) and summary["std"] == pytest.approx(0.01)
    assert (summary["low"], summary["high"]) == (pytest.approx(0.81 - half),
                                                 pytest.approx(0.81 + half))
    single = statistics.mean_interval([0.5])
    assert single["mean"] == 0.5 and math.isnan(single["std"]) and math.isnan(single["low"])
    # Paired: only the seeds present in both count, differences taken seed by seed.
    difference = statistics.paired_difference({0: 0.82, 1: 0.80, 2: 0.85, 7: 0.1},
                                         {0: 0.80, 1: 0.79, 2: 0.82, 5: 0.9})
    assert difference["seeds"] == [0, 1, 2]
    assert difference["mean"] == pytest.approx(0.02)
    assert difference["std"] == pytest.approx(np.std([0.02, 0.01, 0.03], ddof=1))


# Power of the two-sided paired t-test, from scipy's noncentral t (a separate implementation).
@pytest.mark.parametrize("effect, std, n", [
    (0.5, 1.0, 2), (0.5, 1.0, 34), (0.5, 0.3, 5), (1.0, 0.2, 3), (0.005, 0.004, 7),
    (-0.3, 0.5, 12), (0.1, 1.0, 300),
])
def test_paired_t_power_matches_the_noncentral_t(effect, std, n):
    scipy_stats = pytest.importorskip("scipy.stats")
    df = n - 1
    critical = scipy_stats.t.ppf(0.975, df)
    shift = effect * math.sqrt(n) / std
    expected = scipy_stats.nct.sf(critical, df, shift) + scipy_stats.nct.cdf(-critical, df, shift)
    assert statistics.paired_t_power(effect, std, n) == pytest.approx(expected, abs=1e-5)


def test_seeds_for_power():
    # The textbook case: a difference of half a standard deviation needs 34 pairs at 80% power
    # (Cohen's d = 0.5, two-sided 5%); the answer is the first n past the target.
    assert statistics.seeds_for_power(0.5, 1.0) == 34
    assert statistics.paired_t_power(0.5, 1.0, 33) < 0.8 <= statistics.paired_t_power(0.5, 1.0, 34)
    assert statistics.seeds_for_power(0.005, 0.004) == 8
    assert statistics.seeds_for_power(100.0, 1.0) == 2  # the smallest design there is
    with pytest.raises(ValueError, match="effect must be non-zero"):
        statistics.seeds_for_power(0.0, 1.0)
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        statistics.paired_t_power(0.5, float("nan"), 5)
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        statistics.paired_t_power(0.5, 1.0, 1)


def test_bad_flags_are_usage_errors_without_traceback(capsys):
    assert study.main(["--arms=none,distill"]) == 2
    assert study.main(["--seeds=0,x"]) == 2
    assert study.main(["--set", "student_overrides={not json"]) == 2
    assert study.main(["--teacher_set", "epochs"]) == 2
    assert study.main(["--set", "epochs=0"]) == 2
    assert study.main(["--arm", "w=not json"]) == 2
    assert study.main(["--arm", 'w={"spectral_weight": -1}']) == 2
    error = capsys.readouterr().err
    assert "distill" in error and "epochs=0 is not valid" in error
    assert "--arm w: spectral_weight=-1 is not valid" in error and "Traceback" not in error
    assert study.main(["--teacher=/no/such.keras"]) == 2
    assert study.main(["--teacher=/no/such.keras", "--train_teacher"]) == 2
    error = capsys.readouterr().err
    assert "--teacher='/no/such.keras' is not a file" in error
    assert "cannot go with --train_teacher" in error and "Traceback" not in error


@pytest.mark.slow
def test_quick_study_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    from keras_spectralkd.training import checkpoint

    # A fresh machine: no full Fashion-MNIST, so the study runs on the embedded subset.
    empty = tmp_path / "no-fashion-mnist"
    empty.mkdir()
    monkeypatch.setenv("KERAS_SPECTRALKD_FASHION_MNIST_DIR", str(empty))
    out = str(tmp_path / "study")

    # First half: two arms only.
    assert study.main(["--quick", f"--output_dir={out}", "--arms=none,fft"]) == 0
    first = json.load(open(os.path.join(out, "study.json")))
    assert {(r["seed"], r["arm"]) for r in first["runs"]} == {
        (0, "none"), (0, "fft"), (1, "none"), (1, "fft")}
    # Every run is a normal run folder written by training.train through the runner.
    for run in first["runs"]:
        run_dir = run["run_dir"]
        state = checkpoint.read_state(os.path.join(run_dir, "checkpoints"))
        assert state["epoch"] == 2 and state["run_info"]["mode"] == run["arm"]
        for name in ("summary.json", "config.json", "log.csv", "log.jsonl", "student.keras",
                     "best.weights.h5", "tensorboard"):
            assert os.path.exists(os.path.join(run_dir, name)), (run_dir, name)
        assert json.load(open(os.path.join(run_dir, "config.json")))["recipe"] == "fashion_mnist"
    assert "the subset shipped with the package" in capsys.readouterr().out
    stamps = {name: os.path.getmtime(os.path.join(out, "runs", name, "summary.json"))
              for name in os.listdir(os.path.join(out, "runs"))}

    # A run whose summary was lost is resumed by the runner from its checkpoint (nothing left
    # to train), the others are read back; the new arms train.
    lost = os.path.join(out, "runs", "seed1-fft")
    os.remove(os.path.join(lost, "summary.json"))
    del stamps["seed1-fft"]
    arms = "none,fft,soft,soft+spectral,soft+last"
    assert study.main(["--quick", f"--output_dir={out}", f"--arms={arms}"]) == 0
    log = capsys.readouterr().out
    assert log.count("done before") == 3 and "teacher reused" in log
    assert "Resuming from" in log
    resumed = json.load(open(os.path.join(lost, "summary.json")))
    assert resumed["resumed_from"]["epoch"] == 2
    for name, stamp in stamps.items():
        assert os.path.getmtime(os.path.join(out, "runs", name, "summary.json")) == stamp, name
    summary = json.load(open(os.path.join(out, "study.json")))
    runs = {(r["seed"], r["arm"]): r for r in summary["runs"]}
    assert len(runs) == 10 and summary["seeds"] == [0, 1]
    # The layer-choice arm trains as many pairs as the guideline's, others.
    pairs = [tuple(p) for p in summary["layer_pairs"]]
    last = [tuple(p) for p in summary["arms"]["soft+last"]["layer_pairs"]]
    assert len(last) == len(pairs) and last != pairs
    assert runs[1, "fft"]["top1"] == {(r["seed"], r["arm"]): r for r in first["runs"]}[
        1, "fft"]["top1"]

    # The spectral term does what it is for: in each seed the arms that train it on the
    # guideline's pairs (where spectral_gap is measured) end closer to the teacher's paired maps
    # than the arms that do not train it.
    for seed in (0, 1):
        for spectral in ("fft", "soft+spectral"):
            for plain in ("none", "soft"):
                assert runs[seed, spectral]["spectral_gap"] < runs[seed, plain]["spectral_gap"]

    # A trained teacher given by file (how the default study takes the shipped one): scored on
    # the test set, not trained; the students' runs distill from it, their teacher outputs
    # cached once.
    given = os.path.join(out, "teacher", "student.keras")
    other = str(tmp_path / "given")
    assert study.main(["--quick", f"--output_dir={other}", f"--teacher={given}", "--seeds=0",
                       "--arms=none,soft+spectral", "--set", "cache_teacher=true"]) == 0
    log = capsys.readouterr().out
    assert "(measured now)" in log and "cached for 256 training images" in log
    assert not os.path.exists(os.path.join(other, "teacher"))
    again = json.load(open(os.path.join(other, "study.json")))
    assert again["teacher"]["top1"] == pytest.approx(summary["teacher"]["top1"], abs=1e-6)
    assert again["layer_pairs"] == summary["layer_pairs"]
    config = json.load(open(os.path.join(other, "runs", "seed0-soft+spectral", "config.json")))
    assert config["teacher_weights"] == given and config["cache_teacher"] is True

    # The statistics are the runs' numbers: recomputed here from the per-run values.
    stats = summary["statistics"]
    for arm in arms.split(","):
        top1 = [runs[s, arm]["top1"] for s in (0, 1)]
        assert stats["per_arm"][arm]["top1"]["mean"] == pytest.approx(np.mean(top1))
        assert runs[0, arm]["best_top1"] == max(h["val_accuracy"]
                                               for h in runs[0, arm]["history"])
    claims = stats["claims"]
    rows = {(r["arm"], r["baseline"], r["metric"]): r
            for claim in claims.values() for r in claim["comparisons"]}
    d = [runs[s, "soft+spectral"]["top1"] - runs[s, "soft"]["top1"] for s in (0, 1)]
    half = 12.7062047362 * np.std(d, ddof=1) / math.sqrt(2)
    row = rows["soft+spectral", "soft", "top1"]
    assert row["high"] == pytest.approx(np.mean(d) + half)
    assert row["excludes_zero"] == (row["low"] > 0 or row["high"] < 0)
    if np.std(d, ddof=1) > 0:
        assert row["seeds_for_power"] == statistics.seeds_for_power(0.005, np.std(d, ddof=1))
    level = [runs[s, "fft"]["level_distance"] - runs[s, "none"]["level_distance"] for s in (0, 1)]
    assert rows["fft", "none", "level_distance"]["mean"] == pytest.approx(np.mean(level))
    # Each claim's comparisons are those of the arms run (claim 2: only soft+last was).
    assert {k[:2] for k in rows if k[2] == "top1"} == {
        ("soft+spectral", "soft"), ("soft", "none"), ("soft+spectral", "none"),
        ("soft+spectral", "soft+last")}
    for claim in claims.values():
        assert claim["verdict"] in ("supported", "contradicted", "not resolved at this power")

    # Files: CSV rows per run and per epoch, the markdown table, the plots.
    rows = list(csv.DictReader(open(os.path.join(out, "runs.csv"))))
    assert len(rows) == 10 and {r["arm"] for r in rows} == set(arms.split(","))
    epochs = list(csv.DictReader(open(os.path.join(out, "epochs.csv"))))
    assert len(epochs) == 10 * 2
    table = open(os.path.join(out, "results.md")).read()
    for text in ("| soft+spectral | 2 |", "| soft+spectral - soft | top1 | 2 |", "optimistic",
                 "Claim 2:", "| soft+spectral - soft+last | top1 | 2 |", "Verdict: **"):
        assert text in table
    for name in ("top1.png", "distance.png", "profiles.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name

    # Resuming with other settings is refused, naming the setting.
    assert study.main(["--quick", f"--output_dir={out}", "--set", "epochs=3"]) == 2
    assert "student epochs=2, now 3" in capsys.readouterr().err


def test_layer_choices_take_as_many_pairs_elsewhere():
    from keras_spectralkd.recipes.sweep import layer_choices

    paper = [(0, 0), (1, 1), (6, 18), (7, 19), (8, 20), (9, 21), (10, 22), (11, 23)]
    choices = layer_choices(paper, 12, 24)
    assert choices["last"] == [(s, s + 12) for s in range(4, 12)]
    assert [s for s, _ in choices["middle"]] == list(range(2, 10))
    for name, pairs in choices.items():
        assert len(pairs) == len(paper) and pairs == sorted(pairs), name
        # Middle and spread units sit at the same relative depth in both models.
        if name != "last":
            assert all(abs(t / 23 - s / 11) <= 0.5 / 23 for s, t in pairs), name
    # Two pairs spread over 6 units are the centres of two halves, not the ends.
    assert [s for s, _ in layer_choices([(0, 0), (5, 11)], 6, 12)["spread"]] == [1, 4]
    with pytest.raises(ValueError, match="do not fit a student of 2 units"):
        layer_choices([(0, 0), (1, 1), (1, 2)], 2, 3)
