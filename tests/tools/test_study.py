"""The paired-seed study: its statistics against known values, and the quick study end to end."""

import csv
import json
import math
import os

import keras
import numpy as np
import pytest

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
    assert study.t_quantile(p, df) == pytest.approx(expected, rel=1e-9)
    assert study.t_quantile(1 - p, df) == pytest.approx(-expected, rel=1e-9)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.999])
def test_t_quantile_matches_closed_forms(p):
    # df 1 is the Cauchy distribution; df 2 has the quantile (2p - 1) / sqrt(2 p (1 - p)).
    assert study.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert study.t_quantile(p, 2) == pytest.approx(
        (2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9
    )


def test_t_quantile_tends_to_the_normal_and_rejects_bad_input():
    # Large df: the normal quantile plus the first Cornish-Fisher term (z^3 + z) / (4 df).
    z, df = 1.959963984540054, 100_000
    assert study.t_quantile(0.975, df) == pytest.approx(z + (z ** 3 + z) / (4 * df), rel=1e-8)
    assert study.t_cdf(0.0, 3) == 0.5
    with pytest.raises(ValueError, match="p must be in"):
        study.t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="Degrees of freedom"):
        study.t_cdf(1.0, 0)


def test_mean_interval_and_paired_difference():
    summary = study.mean_interval([0.80, 0.81, 0.82])
    half = 4.30265272975 * 0.01 / math.sqrt(3)
    assert summary["n"] == 3
    assert summary["mean"] == pytest.approx(0.81) and summary["std"] == pytest.approx(0.01)
    assert (summary["low"], summary["high"]) == (pytest.approx(0.81 - half),
                                                 pytest.approx(0.81 + half))
    single = study.mean_interval([0.5])
    assert single["mean"] == 0.5 and math.isnan(single["std"]) and math.isnan(single["low"])
    # Paired: only the seeds present in both count, differences taken seed by seed.
    difference = study.paired_difference({0: 0.82, 1: 0.80, 2: 0.85, 7: 0.1},
                                         {0: 0.80, 1: 0.79, 2: 0.82, 5: 0.9})
    assert difference["seeds"] == [0, 1, 2]
    assert difference["mean"] == pytest.approx(0.02)
    assert difference["std"] == pytest.approx(np.std([0.02, 0.01, 0.03], ddof=1))


def test_bad_flags_are_usage_errors_without_traceback(capsys):
    assert study.main(["--modes=none,distill"]) == 2
    assert study.main(["--seeds=0,x"]) == 2
    assert study.main(["--student={not json"]) == 2
    error = capsys.readouterr().err
    assert "distill" in error and "Traceback" not in error


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="one backend is enough for the end-to-end run (about a minute)")
def test_quick_study_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    # A fresh machine: no full Fashion-MNIST, so the study runs on the embedded subset.
    empty = tmp_path / "no-fashion-mnist"
    empty.mkdir()
    monkeypatch.setenv("KERAS_SPECTRALKD_FASHION_MNIST_DIR", str(empty))
    out = str(tmp_path / "study")

    # First half: two modes only.
    assert study.main(["--quick", f"--output_dir={out}", "--modes=none,fft"]) == 0
    first = json.load(open(os.path.join(out, "study.json")))
    assert "the subset shipped with the package" in first["data"]
    assert {(r["seed"], r["mode"]) for r in first["runs"]} == {
        (0, "none"), (0, "fft"), (1, "none"), (1, "fft")}
    stamps = {name: os.path.getmtime(os.path.join(out, "runs", name))
              for name in os.listdir(os.path.join(out, "runs"))}

    # Resume with every mode: the finished runs are read back, only kd and spectralkd train.
    assert study.main(["--quick", f"--output_dir={out}"]) == 0
    log = capsys.readouterr().out
    assert log.count("done before") == 4 and "teacher reused" in log
    for name, stamp in stamps.items():
        assert os.path.getmtime(os.path.join(out, "runs", name)) == stamp, name
    summary = json.load(open(os.path.join(out, "study.json")))
    runs = {(r["seed"], r["mode"]): r for r in summary["runs"]}
    assert len(runs) == 8 and summary["config"]["seeds"] == [0, 1]

    # The spectral term does what it is for: in each seed the modes that train it end closer
    # to the teacher's paired maps than the modes that do not.
    for seed in (0, 1):
        for spectral in ("fft", "spectralkd"):
            for plain in ("none", "kd"):
                assert runs[seed, spectral]["spectral_gap"] < runs[seed, plain]["spectral_gap"]

    # The statistics are the runs' numbers: recomputed here from the per-run top-1.
    stats = summary["statistics"]
    for mode in study.MODES:
        top1 = [runs[s, mode]["top1"] for s in (0, 1)]
        assert stats["per_mode"][mode]["top1"]["mean"] == pytest.approx(np.mean(top1))
        assert runs[0, mode]["best_top1"] == max(h["top1"] for h in runs[0, mode]["history"])
    d = [runs[s, "spectralkd"]["top1"] - runs[s, "kd"]["top1"] for s in (0, 1)]
    half = 12.7062047362 * np.std(d, ddof=1) / math.sqrt(2)
    assert stats["differences"]["spectralkd - kd"]["high"] == pytest.approx(np.mean(d) + half)
    assert set(stats["differences"]) == {"kd - none", "fft - none", "spectralkd - none",
                                         "spectralkd - kd"}

    # Files: CSV rows per run and per epoch, the markdown table, the plots.
    rows = list(csv.DictReader(open(os.path.join(out, "runs.csv"))))
    assert len(rows) == 8 and {r["mode"] for r in rows} == set(study.MODES)
    epochs = list(csv.DictReader(open(os.path.join(out, "epochs.csv"))))
    assert len(epochs) == 8 * summary["config"]["student_epochs"]
    table = open(os.path.join(out, "results.md")).read()
    for text in ("| spectralkd | 2 |", "| spectralkd - kd | 2 |", "optimistic"):
        assert text in table
    for name in ("top1.png", "distance.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name

    # Resuming with other settings is refused, naming the setting.
    assert study.main(["--quick", f"--output_dir={out}", "--student_epochs=3"]) == 2
    assert "student_epochs=2" in capsys.readouterr().err
