"""``fastfp bench --report``: the report names its commit and command, takes the GPU
figures from a ``scripts/gpu_check.py`` report, and is replaced only by a run that
finished; asv itself is replaced by a few fake results (a real run takes minutes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fastfp.cli import main
from fastfp.harness import asvrun, bench, report, results, settings

ROOT = Path(__file__).resolve().parents[1]

#: the head of a report as scripts/gpu_check.py writes it (main, roof_lines, results_lines)
GPU_REPORT = """# fastfp on the GPU: `scripts/gpu_check.py` report

Run 2026-12-07 10:00 UTC, commit 1a2b3c4, `scripts/gpu_check.py --out gpu.md`.

## Device

- device: **NVIDIA H100 80GB HBM3**, compute capability 9.0, 132 SMs, 79.1 GiB (78.5 GiB free)

## The device's roofs

| roof | rate |
|---|---|
| float64 FMA | 51.2 Tflop/s |

## Results: 2 runs

| figure | run 1 | run 2 | target (issue 23) | verdict |
|---|---|---|---|---|
| GPU, 16,000 frames with derivatives, float64 (s) | 0.91 | 0.93 | <= 0.5 | **not met**, **not met** |

### The host's part of a batch

| part | run 1 device (ms) | run 1 wall (ms) |
|---|---|---|
| pack frames (host) | | 12 |

Whole run: 300 s.
"""


def test_gpu_figures_from_a_gpu_check_report(tmp_path):
    path = tmp_path / "gpu.md"
    path.write_text(GPU_REPORT)
    gpu = report.read_gpu_report(path)
    assert (gpu.device, gpu.commit, gpu.date) == ("NVIDIA H100 80GB HBM3", "1a2b3c4", "2026-12-07 10:00 UTC")
    assert gpu.command == "scripts/gpu_check.py --out gpu.md" and gpu.complete
    assert [title for title, _ in gpu.tables] == ["The device's roofs", "Results: 2 runs"]
    text = "\n".join(report.gpu_lines(gpu, "gpu.md"))
    assert "Measured on **NVIDIA H100 80GB HBM3** at commit `1a2b3c4`" in text and "not this run" in text
    assert "| GPU, 16,000 frames with derivatives, float64 (s) | 0.91 | 0.93 | <= 0.5 |" in text
    assert "pack frames" not in text  # a subsection's table: in the GPU report only
    path.write_text(GPU_REPORT.replace("Whole run", "**Incomplete: the run had got this far.**\n\nWhole run"))
    assert "**That run was incomplete**" in "\n".join(report.gpu_lines(report.read_gpu_report(path), "gpu.md"))
    path.write_text(GPU_REPORT.replace(", commit 1a2b3c4", "").replace("- device", "device"))
    with pytest.raises(report.GPUReportError, match="no its commit, no a '- device: \\*\\*NAME\\*\\*' line"):
        report.read_gpu_report(path)


def test_the_repositorys_gpu_report_is_read():
    """The report the next ``fastfp bench --report`` takes its GPU figures from."""
    gpu = report.read_gpu_report(ROOT / "reports" / "gpu.md")
    assert gpu.device.startswith("NVIDIA") and len(gpu.commit) >= 7 and "gpu_check.py" in gpu.command
    assert any("|" in line and "frames" in line for _, table in gpu.tables for line in table)


def test_command_line_names_the_variables_that_set_the_run():
    env = {"FASTFP_BENCH_AMPTORCH_MAX_FRAMES": "100", "FASTFP_AMPTORCH_SRC": "/src/amp torch", "HOME": "/h",
           "FASTFP_BENCH_SKIPS": "/tmp/s"}
    assert (report.command_line(["bench", "--report", "reports/benchmarks.md"], env)
            == "FASTFP_BENCH_AMPTORCH_MAX_FRAMES=100 FASTFP_AMPTORCH_SRC='/src/amp torch' fastfp bench --report "
               "reports/benchmarks.md")


def _measurements():
    def time(label, backend, value):
        return results.Measurement(name="pipeline.TrainEpochOnTheFly.time_train_epoch_on_the_fly", kind="time",
                                   label=label, size="2 frames", backend=backend, value=value, q25=value * 0.98,
                                   q75=value * 1.02, samples=3, params=(f"'{backend}'", "2"))

    return [time("training epoch on the fly", "amptorch", 2.0), time("training epoch on the fly", "fastfp", 0.5)]


@pytest.fixture
def fake_asv(monkeypatch):
    """``fastfp bench`` with asv replaced: the run's exit code is ``fake_asv["code"]``
    (or the exception ``fake_asv["raise"]``)."""
    outcome = {"code": 0, "raise": None}

    def measure(*args, **kwargs):
        if outcome["raise"] is not None:
            raise outcome["raise"]
        args[4].write_text("asv output\n")  # the log: asv has run
        return outcome["code"], _measurements()

    info = {"source": "water-metal", "n_frames": 2, "atoms_per_frame": 94.0, "elements": ["Cu", "H", "O"],
            "labels": True}
    monkeypatch.setattr(bench, "check_data", lambda source, limit=None: info)
    monkeypatch.setattr(bench, "require_asv", lambda: None)
    monkeypatch.setattr(asvrun, "ensure_machine", lambda env, say: "m")
    monkeypatch.setattr(asvrun, "publish", lambda *args: None)
    monkeypatch.setattr(bench, "measure", measure)
    monkeypatch.chdir(ROOT)
    return outcome


def _run(monkeypatch, tmp_path, *extra) -> int:
    argv = ["bench", "--backend", "amptorch,fastfp", "--frames", "2", "--out", str(tmp_path / "out"),
            "--report", str(tmp_path / "reports" / "benchmarks.md"), *extra]
    monkeypatch.setattr(sys, "argv", ["fastfp", *argv])
    return main(argv)


def test_report_names_its_commit_command_and_gpu_figures(fake_asv, monkeypatch, tmp_path):
    for name in [v.name for v in settings.VARIABLES] + list(report.COMMAND_VARIABLES):
        monkeypatch.delenv(name, raising=False)  # CI sets FASTFP_SHARED, say: shown in the command too
    monkeypatch.setenv("FASTFP_BENCH_AMPTORCH_MAX_FRAMES", "100")
    (tmp_path / "reports").mkdir()
    assert _run(monkeypatch, tmp_path) == 0
    text = (tmp_path / "reports" / "benchmarks.md").read_text()
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert text.startswith(report.MARKER + "\n") and f"at commit `{sha[:12]}" in text
    assert (f"FASTFP_BENCH_AMPTORCH_MAX_FRAMES=100 fastfp bench --backend amptorch,fastfp --frames 2 --out "
            f"{tmp_path / 'out'} --report {tmp_path / 'reports' / 'benchmarks.md'}") in text
    assert "- AMPTorch frame cap: 100 frames (FASTFP_BENCH_AMPTORCH_MAX_FRAMES; default 1000)" in text
    assert "| training epoch on the fly | 2 frames | 2.00 s ±2% (n=3) | 500.0 ms ±2% (n=3) |" in text
    gpu = report.read_gpu_report(ROOT / "reports" / "gpu.md")
    assert f"Measured on **{gpu.device}** at commit `{gpu.commit}`" in text
    assert "](../../" not in text.split("## GPU")[0]  # the run's own part links nothing outside reports/
    assert "![time against frames, log-log](benchmarks-time_vs_frames.png)" in text
    assert (tmp_path / "reports" / "benchmarks-time_vs_frames.png").read_bytes() == (
        tmp_path / "out" / "time_vs_frames.png").read_bytes()


def test_failed_or_interrupted_run_leaves_the_report(fake_asv, monkeypatch, tmp_path, capsys):
    (tmp_path / "reports").mkdir()
    assert _run(monkeypatch, tmp_path) == 0
    folder = tmp_path / "reports"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    fake_asv["code"] = 1  # a benchmark failed
    assert _run(monkeypatch, tmp_path) == 1
    fake_asv["code"], fake_asv["raise"] = 0, KeyboardInterrupt()
    assert _run(monkeypatch, tmp_path) == 130
    fake_asv["raise"] = None

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report.shutil, "copyfile", broken)  # fails while writing the report
    assert _run(monkeypatch, tmp_path) != 0
    assert "disk full" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temporaries either


def test_report_never_replaces_another_file(fake_asv, monkeypatch, tmp_path, capsys):
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "benchmarks.md").write_text("# written by hand\n")
    assert _run(monkeypatch, tmp_path) == 2
    assert "was not written by `fastfp bench --report`" in capsys.readouterr().err
    assert (folder / "benchmarks.md").read_text() == "# written by hand\n"
    assert not (tmp_path / "out").exists()  # refused before anything ran
    with pytest.raises(ValueError, match="a markdown file"):
        report.check_report_path(folder / "benchmarks.txt")
    assert main(["bench", "--history-plot", "--report", str(folder / "x.md")]) == 2
