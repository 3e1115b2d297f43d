"""asv across commits (``fastfp bench --history`` / ``--compare``) on a tiny suite in a
throwaway git repository: the gate catches a 1.5x slowdown and passes the same code
twice; the history's results are read back and drawn. No run of the real suite here."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest

from fastfp.cli import main
from fastfp.harness import asvrun, history

has_asv = importlib.util.find_spec("asv") is not None
needs_asv = pytest.mark.skipif(not has_asv, reason="asv is not installed (the 'bench' extra)")

SUITE = '''
class Work:
    number = 1
    repeat = (8, 12, 10.0)
    rounds = 1
    warmup_time = 0

    def time_work(self):
        import tiny

        tiny.work()

    def track_value(self):
        return 1.0
'''


def _git(repo: Path, *args) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _commit(repo: Path, delay: float, message: str) -> str:
    (repo / "src" / "tiny" / "__init__.py").write_text(f"import time\n\n\ndef work():\n    time.sleep({delay})\n")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def tiny(tmp_path):
    """A git repository with a package ``tiny`` (``work()`` sleeps) and an asv suite
    whose ``history`` module times it; commits ``base`` (20 ms), ``same`` (the same
    code, another commit) and ``slow`` (30 ms: 1.5x)."""
    repo = tmp_path / "repo"
    (repo / "src" / "tiny").mkdir(parents=True)
    (repo / "benchmarks").mkdir()
    (repo / "benchmarks" / "__init__.py").write_text("")
    (repo / "benchmarks" / "history.py").write_text(SUITE)
    (repo / "benchmarks" / "other.py").write_text("import no_such_module  # the rest of a suite may not import\n")
    (repo / "asv.conf.json").write_text(json.dumps({
        "version": 1, "project": "tiny", "repo": ".", "dvcs": "git", "branches": ["main"],
        "environment_type": "virtualenv", "benchmark_dir": "benchmarks", "results_dir": "results",
        "html_dir": "html"}))
    _git(repo, "init", "-q", "-b", "main")
    commits = {"base": _commit(repo, 0.02, "base")}
    (repo / "README").write_text("docs only\n")
    commits["same"] = _commit(repo, 0.02, "same code")
    commits["slow"] = _commit(repo, 0.03, "1.5x slower")
    home = tmp_path / "home"
    home.mkdir()
    env = {**history.subset_env(None), "HOME": str(home)}  # asv's machine file there
    return repo, commits, env


@needs_asv
def test_gate_catches_a_slowdown_and_passes_the_same_code(tiny, tmp_path, capsys):
    repo, commits, env = tiny
    log = tmp_path / "asv.log"
    runs = {}
    for name, (base, head) in {"same commit": ("base", "base"), "same code": ("base", "same"),
                               "slower": ("base", "slow")}.items():
        work = tmp_path / name.replace(" ", "-")
        work.mkdir()
        runs[name] = history.gate(repo, commits[base], commits[head], env, work, log)
        out = capsys.readouterr().out
        assert "history.Work.time_work" in out, out  # asv's table
        assert "track_value" not in out  # the gate compares times only
    assert runs == {"same commit": False, "same code": False, "slower": True}
    assert re.search(r"\|\s*\+\s*\|.*\|\s*1\.[45]\d*\s*\|\s*history\.Work\.time_work", out), out
    assert (repo / ".asv" / "commits" / commits["slow"] / "src" / "tiny" / "__init__.py").is_file()
    assert not (repo / "results").exists()  # the gate keeps its results apart from the history's


@needs_asv
def test_history_results_and_picture(tiny, tmp_path, monkeypatch):
    """asv's results of two commits in the results folder of asv.conf.json (as
    ``--history`` writes them), read back as points and drawn."""
    repo, commits, env = tiny
    asvrun.ensure_machine(env, print)
    suite = asvrun.subset_suite(repo, tmp_path, (history.SUBSET,))
    config = asvrun.write_config(repo, tmp_path / "asv.conf.json", history.results_dir(repo), suite)
    for sha in (commits["base"], commits["slow"]):  # benchmarks/other.py would not import: not imported
        assert history.run_commit(repo, sha, config, env, tmp_path / "asv.log") == 0
    machine, points = history.history_points(repo)
    assert [p["commit"] for p in points] == [commits["base"], commits["slow"]]
    (base, q25, q75), (slow, _, _) = (p["values"]["history.Work.time_work"] for p in points)
    assert 0.02 <= base < 0.025 and 0.03 <= slow < 0.035 and q25 <= base <= q75
    assert points[0]["values"]["history.Work.track_value"][0] == 1.0
    (repo / history.MILESTONES).write_text(f"# a comment\n{commits['base'][:8]} first\n")
    assert history.milestones(repo) == [(commits["base"], "first")]
    png = history.plot_history(repo, tmp_path / "history.png", machine)
    assert png.stat().st_size > 1000


def test_config_copy_is_absolute(tmp_path):
    root = Path(__file__).resolve().parents[1]
    path = asvrun.write_config(root, tmp_path / "c.json", tmp_path / "res")
    conf = json.loads(path.read_text())
    assert conf["repo"] == str(root) and conf["results_dir"] == str(tmp_path / "res")
    assert conf["benchmark_dir"] == str(root / "benchmarks") and Path(conf["html_dir"]).is_absolute()
    assert json.loads((root / "asv.conf.json").read_text())["results_dir"] == "reports/asv"


def test_bench_modes_exclude_each_other(capsys):
    assert main(["bench", "--history", "--compare", "HEAD~1"]) == 2
    assert "choose one" in capsys.readouterr().err
    assert main(["bench", "--factor", "1.5"]) == 2
    assert "--factor goes with --compare" in capsys.readouterr().err
