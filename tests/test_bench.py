"""The benchmark harness: the asv suite is valid, the stages agree across backends,
``fastfp bench`` rejects bad input, and its summary reads asv's results.

No real benchmark run here (``fastfp bench --quick`` takes minutes)."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms

from fastfp.cli import main
from fastfp.harness import bench, stages

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WATER = SHARED / "data" / "water_842.traj"

requires_water = pytest.mark.skipif(not WATER.is_file(), reason=f"shared frames not found at {WATER}")
requires_gmp = pytest.mark.skipif(not (SHARED / "gmp" / "psp_v3").is_dir(),
                                  reason=f"GMP pseudodensities not found at {SHARED / 'gmp'}")
has_asv = importlib.util.find_spec("asv") is not None
has_torch = importlib.util.find_spec("torch_geometric") is not None
amptorch_reason = stages.available("amptorch")


# -- the asv suite ---------------------------------------------------------------------


@pytest.mark.skipif(not has_asv, reason="asv is not installed (the 'bench' extra)")
def test_asv_check_passes():
    proc = subprocess.run([sys.executable, "-m", "asv", "check", "--python=same"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No problems found" in proc.stdout


def test_bench_filters():
    assert bench.bench_filters(["amptorch", "fastfp", "cupy"]) == []
    (only,) = bench.bench_filters(["fastfp"])
    import re

    name = "featurize.Featurize.time_featurize('{}', 'gmp', True, 100)"
    assert re.search(only, name.format("fastfp")) and not re.search(only, name.format("amptorch"))
    quick = bench.bench_filters(["amptorch", "fastfp"], quick=True)
    assert any(re.search(r, "pipeline.Preprocess.time_preprocess('amptorch', 100)") for r in quick)
    assert not any(re.search(r, name.format("fastfp")) for r in quick)  # gmp is not in --quick
    assert not any(re.search(r, "ratios.FeaturizeRatio.track_featurize_ratio(100)") for r in quick)
    with pytest.raises(bench.BenchError, match="unknown backend"):
        bench.parse_backends("fastfp,gpu")


def test_bench_filters_descriptors():
    import re

    regexes = bench.bench_filters(["amptorch", "fastfp", "cupy"], descriptors=bench.parse_descriptors("gmpordernorm"))

    def selected(name):
        return any(re.search(r, name) for r in regexes)

    assert selected("featurize.Featurize.time_featurize('amptorch', 'gmpordernorm', True, 16000)")
    assert selected("featurize.FeaturizeAtoms.time_featurize_atoms('fastfp', 'gmpordernorm', 500)")
    assert not selected("featurize.Featurize.time_featurize('fastfp', 'gaussian', True, 100)")
    assert selected("pipeline.Preprocess.time_preprocess('amptorch', 1000)")
    assert selected("memory.FeaturizeMemory.peakmem_featurize('fastfp', 16000)")
    assert selected("ratios.PreprocessRatio.track_preprocess_ratio(100)")
    only_fastfp = bench.bench_filters(["fastfp"], descriptors=["gmp"])
    assert not any(re.search(r, "pipeline.Preprocess.time_preprocess('amptorch', 100)") for r in only_fastfp)
    assert not any(re.search(r, "ratios.PreprocessRatio.track_preprocess_ratio(100)") for r in only_fastfp)
    assert bench.bench_filters(["amptorch", "fastfp", "cupy"], descriptors=list(stages.DESCRIPTORS)) == []
    with pytest.raises(bench.BenchError, match="unknown descriptor"):
        bench.parse_descriptors("gmpordernorm,soap")
    info = {"labels": None, "n_frames": 100}
    assert bench._why_missing("featurize gmp + derivatives", "fastfp", "100 frames", info, False,
                              ["gmpordernorm"]) == "not in --descriptors"
    assert bench._why_missing("featurize gmpordernorm", "fastfp", "100 frames", info, False,
                              ["gmpordernorm"]) != "not in --descriptors"


# -- stages ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frames():
    if not WATER.is_file():
        pytest.skip(f"shared frames not found at {WATER}")
    return ase.io.read(WATER, ":3")


def test_backend_reasons():
    assert stages.available("fastfp") is None
    if importlib.util.find_spec("cupy") is None:
        assert stages.available("cupy").startswith("CuPy/GPU not available")
        with pytest.raises(stages.StageUnavailable, match="CuPy/GPU not available"):
            stages.build("featurize", "cupy", [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]])])
    if amptorch_reason:
        assert "AMPTorch" in amptorch_reason and "README" in amptorch_reason
    with pytest.raises(ValueError, match="unknown backend"):
        stages.available("gpu")


def test_missing_pseudodensities_name_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTFP_GMP_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="FASTFP_GMP_DIR"):
        stages.descriptor_setup("gmpordernorm", ["Cu"])
    stages.descriptor_setup("gaussian", ["Cu"])  # no pseudodensities needed


@requires_gmp
def test_store_not_compared_for_amptorch(frames):
    with pytest.raises(stages.StageUnavailable) as err:
        stages.build("store_write", "amptorch", frames)
    assert "not compared" in str(err.value) or "AMPTorch" in str(err.value)


@requires_gmp
def test_store_round_trip(frames):
    fps = stages.make_descriptor("fastfp", "gmpordernorm", stages.elements_of(frames)).featurize(frames)
    stored = stages.build("store_read", "fastfp", frames, collect=True)()
    np.testing.assert_array_equal(stored.fingerprints, fps.fingerprints)
    np.testing.assert_array_equal(stored.fprimes, fps.fprimes)
    write = stages.build("store_write", "fastfp", frames)
    path = write()
    assert path.is_file()
    del write  # its temporary directory goes with it
    assert not path.exists()


def test_frames_without_energies_give_a_reason(frames):
    bare = [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in frames]
    assert stages.labels_reason(bare) == stages.NO_LABELS
    assert stages.labels_reason(frames) is None
    for stage in ("scale", "collate", "force_contraction", "preprocess", "train_epoch"):
        with pytest.raises(stages.StageUnavailable) as err:
            stages.build(stage, "fastfp", bare)
        assert "no energies/forces" in str(err.value) or "AMPTorch" in str(err.value)
    run = stages.build("featurize", "fastfp", bare, descriptor="gaussian", derivatives=True)
    assert run() == sum(len(a) for a in bare)


def test_check_data_without_energies(frames, tmp_path):
    bare = [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in frames]
    path = tmp_path / "bare.traj"
    ase.io.write(path, bare)
    info = bench.check_data(str(path))
    assert info["labels"] == stages.NO_LABELS and info["n_frames"] == len(bare)
    assert info["elements"] == ["H", "O"]


def _dense(primes):
    out = np.zeros(tuple(int(s) for s in primes["size"]))
    np.add.at(out, (primes["row"], primes["col"]), primes["val"])
    return out


def _torch_dense(tensor):
    return tensor.to_dense().numpy()


needs_amptorch = pytest.mark.skipif(amptorch_reason is not None, reason=str(amptorch_reason))


@needs_amptorch
@requires_gmp
@pytest.mark.parametrize("descriptor", stages.DESCRIPTORS)
@pytest.mark.parametrize("derivatives", [False, True])
def test_featurize_same_across_backends(frames, descriptor, derivatives):
    out = {b: stages.build("featurize", b, frames, descriptor=descriptor, derivatives=derivatives,
                           collect=True)() for b in ("amptorch", "fastfp")}
    assert len(out["amptorch"]) == len(out["fastfp"]) == len(frames)
    for theirs, ours in zip(out["amptorch"], out["fastfp"]):
        np.testing.assert_array_equal(ours["atomic_numbers"], theirs["atomic_numbers"])
        assert ours["num_descriptors"] == theirs["num_descriptors"]
        np.testing.assert_allclose(ours["descriptors"], theirs["descriptors"], rtol=1e-7, atol=1e-8)
        if derivatives:
            np.testing.assert_array_equal(ours["descriptor_primes"]["size"], theirs["descriptor_primes"]["size"])
            np.testing.assert_allclose(_dense(ours["descriptor_primes"]), _dense(theirs["descriptor_primes"]),
                                       rtol=0, atol=1e-4)


@needs_amptorch
@requires_gmp
def test_pipeline_stages_same_across_backends(frames):
    import torch

    data = stages._data_list(frames, "gmpordernorm", stages.elements_of(frames))
    scaled = {b: stages.build("scale", b, frames, data=copy.deepcopy(data))() for b in ("amptorch", "fastfp")}
    for a, b in zip(scaled["amptorch"], scaled["fastfp"]):
        torch.testing.assert_close(b.fingerprint, a.fingerprint, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(b.fprimes.coalesce().values(), a.fprimes.coalesce().values(),
                                   rtol=1e-9, atol=1e-12)
        assert float(a.energy) == pytest.approx(float(b.energy), rel=1e-12)

    batches = {b: stages.build("collate", b, frames, data=data, collect=True, batch_size=2)()
               for b in ("amptorch", "fastfp")}
    for (a, ta), (b, tb) in zip(batches["amptorch"], batches["fastfp"]):
        torch.testing.assert_close(b.fprimes._indices(), a.fprimes._indices())
        torch.testing.assert_close(b.fprimes._values(), a.fprimes._values())
        assert b.fprimes.shape == a.fprimes.shape
        torch.testing.assert_close(tb[1], ta[1])

    pre = {b: stages.build("preprocess", b, frames)() for b in ("amptorch", "fastfp")}
    for a, b in zip(pre["amptorch"], pre["fastfp"]):
        torch.testing.assert_close(b.fingerprint, a.fingerprint, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(_torch_dense(b.fprimes), _torch_dense(a.fprimes), rtol=0, atol=1e-4)

    losses = {b: stages.build("train_epoch", b, frames)() for b in ("amptorch", "fastfp")}
    assert losses["fastfp"] == pytest.approx(losses["amptorch"], rel=1e-4)


@requires_gmp
@pytest.mark.skipif(not has_torch, reason="needs the 'torch' extra (pip install -e '.[torch]')")
def test_force_contraction_stage(frames):
    """Forces and the gradient of the loss (sum of squared forces) by dE/dG, on real
    batches: fastfp's against the dense product, and against AMPTorch's expression."""
    torch = stages._torch_setup()  # float64, as the stages and AtomsTrainer set it
    data = stages._data_list(frames, "gmpordernorm", stages.elements_of(frames))
    fast = stages.build("force_contraction", "fastfp", frames, data=data, collect=True, batch_size=2)()
    batches = stages.build("collate", "fastfp", frames, data=data, collect=True, batch_size=2)()
    assert len(fast) == len(batches) == 2
    for (dEdG, forces, grad), (batch, _) in zip(fast, batches):
        assert dEdG.dtype == torch.float64 and dEdG.shape == (1, batch.fprimes.shape[0])
        dense = batch.fprimes.to_dense()
        expect = -(dense.T @ dEdG.reshape(-1)).view(-1, 3)
        torch.testing.assert_close(forces, expect, rtol=1e-12, atol=1e-12)
        assert forces.shape == (batch.fprimes.shape[1] // 3, 3) == batch.forces.shape
        torch.testing.assert_close(grad, (-dense @ (2 * forces.reshape(-1))).view(1, -1), rtol=1e-12, atol=1e-12)
    if amptorch_reason:
        with pytest.raises(stages.StageUnavailable, match="AMPTorch"):
            stages.build("force_contraction", "amptorch", frames, data=data)
        return
    theirs = stages.build("force_contraction", "amptorch", frames, data=data, collect=True, batch_size=2)()
    for (d_a, f_a, g_a), (d_f, f_f, g_f) in zip(theirs, fast):
        torch.testing.assert_close(d_f, d_a, rtol=0, atol=0)  # the same inputs
        torch.testing.assert_close(f_f, f_a, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g_f, g_a, rtol=1e-12, atol=1e-12)


@needs_amptorch
def test_amptorch_force_expression_is_amptorchs():
    """The "amptorch" side of the force_contraction stage is AMPTorch's own line."""
    import inspect

    import amptorch.model

    source = inspect.getsource(amptorch.model)
    assert source.count("forces = -1 * torch.sparse.mm(batch.fprimes.t(), gradients.t()).view(") == 2
    assert "torch.sparse.mm(fprimes.t(), gradients.t()).view(-1, 3)" in inspect.getsource(stages._amptorch_forces)


# -- fastfp bench: bad input, no commit, summary ---------------------------------------


def test_bench_nonexistent_data(tmp_path, capsys):
    code = main(["bench", "--quick", "--data", str(tmp_path / "missing.traj"), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "missing.traj" in err and "no such file" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name,content", [("junk.traj", b"not a trajectory\n" * 10),
                                          ("junk.bin", bytes(range(256)) * 4)])
def test_bench_non_ase_data(tmp_path, capsys, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    code = main(["bench", "--data", str(path), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert name in err and "not readable by ASE" in err


def test_bench_bad_backend(capsys):
    assert main(["bench", "--backend", "torch"]) == 2
    assert "unknown backend" in capsys.readouterr().err


def test_bench_needs_a_commit(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(bench.BenchError, match="no commit"):
        bench.head_commit(tmp_path)


def _fake_results(amptorch: bool) -> dict:
    """asv's results JSON (format 2) for a few benchmarks."""
    backends = ["'amptorch'", "'fastfp'", "'cupy'"]
    frames = ["100", "1000"]

    def times(values):
        return [values, [backends, frames]] + [None] * 11

    amp = [12.0, None] if amptorch else [None, None]
    return {
        "version": 2,
        "result_columns": ["result", "params", "version", "started_at", "duration", "stats_ci_99_a",
                           "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_number", "stats_repeat",
                           "samples", "profile"],
        "results": {
            "pipeline.Preprocess.time_preprocess": times(amp + [1.5, 14.0, None, None]),
            "pipeline.StoreWrite.time_store_write": times([None, None, 0.2, 2.0, None, None]),
            "memory.FeaturizeMemory.peakmem_featurize": times(
                ([3e9, None] if amptorch else [None, None]) + [1e9, 5e9, None, None]),
            "memory.FeaturizeMemory.peakmem_reference": times([5e8, None, 5e8, 6e8, None, None]),
            "ratios.FeaturizeRatio.track_featurize_ratio": [[7.5, None], [frames]] + [None] * 11,
        },
    }


def test_summary_from_results(tmp_path):
    info = {"labels": None, "n_frames": 16000}
    summary = bench.table(_fake_results(amptorch=True))
    row = summary["rows"][("end-to-end preprocessing", "100 frames")]
    assert row["amptorch"]["time"] == 12.0 and row["fastfp"]["time"] == 1.5
    mem = summary["rows"][("featurize gmpordernorm + derivatives", "100 frames")]
    assert mem["fastfp"]["peak_delta"] == 5e8
    assert summary["ratios"] == {("featurize gmpordernorm + derivatives", 100): 7.5}
    text = bench.summary_markdown(summary, ["amptorch", "fastfp"], {"commit": "abc"}, False, info)
    line = next(ln for ln in text.splitlines() if ln.startswith("| end-to-end preprocessing | 100 frames"))
    assert "12.00 s" in line and "1.50 s" in line
    if amptorch_reason is None:
        assert "8.0×" in line
    store = next(ln for ln in text.splitlines() if ln.startswith("| store write | 100 frames"))
    assert "no equivalent" in store
    png = bench.plot_time_vs_frames(summary, ["amptorch", "fastfp"], tmp_path / "t.png")
    assert png.stat().st_size > 1000


def _benchmark_names(module: str, prefix: str) -> list[str]:
    """``module.Class.method`` of the asv benchmarks in ``benchmarks/<module>.py``."""
    import ast

    tree = ast.parse((ROOT / "benchmarks" / f"{module}.py").read_text())
    return [f"{module}.{cls.name}.{fn.name}" for cls in tree.body if isinstance(cls, ast.ClassDef)
            for fn in cls.body if isinstance(fn, ast.FunctionDef) and fn.name.startswith(prefix)]


def test_summary_knows_every_stage_benchmark():
    """Every timed pipeline stage and every in-process ratio has a row in the summary."""
    pipeline = _benchmark_names("pipeline", "time_")
    assert "pipeline.ForceContraction.time_force_contraction" in pipeline
    assert set(pipeline) <= set(bench.KNOWN)
    ratios = _benchmark_names("ratios", "track_")
    assert "ratios.ForceContractionRatio.track_force_contraction_ratio" in ratios
    assert set(ratios) <= set(bench.RATIOS)
    title = stages.STAGES["force_contraction"].title
    assert title in bench.QUICK_STAGES
    results = _fake_results(amptorch=True)
    results["results"]["pipeline.ForceContraction.time_force_contraction"] = (
        [[3.4, None, 0.12, None, None, None], [["'amptorch'", "'fastfp'", "'cupy'"], ["100", "1000"]]]
        + [None] * 11)
    results["results"]["ratios.ForceContractionRatio.track_force_contraction_ratio"] = (
        [[25.0, None], [["100", "1000"]]] + [None] * 11)
    summary = bench.table(results)
    assert summary["ratios"][(title, 100)] == 25.0
    text = bench.summary_markdown(summary, ["amptorch", "fastfp"], {}, True, {"labels": None, "n_frames": 100})
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {title} | 100 frames"))
    assert "3.40 s" in line and "120.0 ms" in line
    assert f"| {title} | 100 | 25.0× |" in text


def test_summary_says_amptorch_missing(monkeypatch):
    monkeypatch.setattr(stages, "available", lambda b: f"AMPTorch is not installed: {stages.AMPTORCH_HINT}"
                        if b == "amptorch" else None)
    info = {"labels": stages.NO_LABELS, "n_frames": 100}
    summary = bench.table(_fake_results(amptorch=False))
    text = bench.summary_markdown(summary, ["amptorch", "fastfp"], {}, True, info)
    assert "AMPTorch is not installed" in text and "Comparing with AMPTorch" in text
    assert stages.NO_LABELS in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| end-to-end preprocessing | 100 frames"))
    assert "not installed" in line
    assert "No in-process AMPTorch/fastfp ratios" not in text or not summary["ratios"]
