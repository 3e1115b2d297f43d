"""The pieces of ``fastfp bench`` that make its summary trustworthy: one progress line
per benchmark from asv's output, more samples for noisy rows, the plot's reasons, and
removing what a run that stops early created. No real benchmark run here (minutes)."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

from fastfp.cli import main
from fastfp.harness import asvrun, bench, results


def test_progress_lines_from_asv_output():
    lines = ["[ 0.00%] ··· Importing benchmark suite produced output:",
             "[16.67%] ··· Running (history.Skipped.time_x--).",
             "[66.67%] ··· history.Skipped.time_x                                         n/a",
             "[66.67%] ···· asv: skipped: NotImplementedError('no such stage')",
             "[83.33%] ··· featurize.Featurize.time_featurize                            ok",
             "[100.00%] ··· ratios.FeaturizeRatio.track_featurize_ratio             14.527486181007934"]
    said = [f"{int(m[1]):3d}% {m[2]} {asvrun._status(m[3])}" for m in map(asvrun.PROGRESS.match, lines) if m]
    assert said == [" 66% history.Skipped.time_x skipped", " 83% featurize.Featurize.time_featurize ok",
                    "100% ratios.FeaturizeRatio.track_featurize_ratio 14.5"]


def _time(value, q25, q75, samples, params=("'fastfp'", "100")):
    return results.Measurement(name="pipeline.Preprocess.time_preprocess", kind="time", label="x", size="100 frames",
                               backend="fastfp", value=value, q25=q25, q75=q75, samples=samples, params=params)


def test_noisy_rows_take_more_samples_within_their_budget():
    steady, noisy, single = _time(1.0, 0.95, 1.05, 3), _time(1.0, 0.7, 1.3, 3), _time(1.0, None, None, 1)
    assert (steady.spread, noisy.spread, single.spread) == (pytest.approx(5), pytest.approx(30), None)
    assert [results.needs_samples(m, 60) for m in (steady, noisy, single)] == [False, True, True]
    assert not results.needs_samples(_time(30.0, 20.0, 40.0, 2), 60)  # 60 s of samples spent
    assert "**noisy**" in results.time_cell(noisy) and "noisy" not in results.time_cell(steady)
    regex = bench.selector(noisy)
    assert re.search(regex, "pipeline.Preprocess.time_preprocess('fastfp', 100)")
    assert not re.search(regex, "pipeline.Preprocess.time_preprocess('fastfp', 1000)")


def test_early_stop_removes_what_it_created(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the frames load, or bad input found after --out was made: nothing
    of the run is left; a folder that existed is kept."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "check_data", interrupted)
    out = tmp_path / "a" / "b"
    assert main(["bench", "--quick", "--out", str(out)]) == 130
    assert not (tmp_path / "a").exists()
    out.mkdir(parents=True)
    assert main(["bench", "--quick", "--out", str(out)]) == 130
    assert out.is_dir() and not any(out.iterdir())

    def bad(*args, **kwargs):
        raise bench.BenchError("no pseudodensities")

    monkeypatch.setattr(bench, "check_data", bad)
    assert main(["bench", "--quick", "--out", str(tmp_path / "c")]) == 2
    assert "no pseudodensities" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_asv_missing_creates_nothing(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "asv" else real(name, *a))
    assert main(["bench", "--quick", "--out", str(tmp_path / "out")]) == 2
    assert "asv is not installed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_plot_says_why_a_stage_was_not_measured(tmp_path):
    skipped = [results.Measurement(name="pipeline.TrainEpoch.time_train_epoch", kind="time", label="training epoch",
                                   size="10 frames", backend=b, value=None, skipped="AMPTorch is not installed")
               for b in ("amptorch", "fastfp")]
    table = results.table(skipped + [_time(1.0, 0.9, 1.2, 5)])
    assert results.why_not_measured(table, "training epoch") == "AMPTorch is not installed"
    assert results.why_not_measured(table, "end-to-end preprocessing") == "no benchmark of this stage ran"
    assert results.plot_time_vs_frames(table, tmp_path / "p.png").stat().st_size > 1000
    # one sample, whose quartiles asv rounded to just below its value (74.797 s)
    rounded = results.table([dataclasses.replace(_time(74.79737737600226, 74.797, 74.797, 1),
                                                 label="training epoch")])
    assert results.plot_time_vs_frames(rounded, tmp_path / "r.png").stat().st_size > 1000
