"""The benchmark harness: the asv suite is valid and fully described by asv's own
metadata, the stages agree across backends, ``fastfp bench`` rejects bad input before
any work, and its summary reads asv's results and the recorded skip reasons.

No real benchmark run here (``fastfp bench --quick`` takes minutes)."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms

from fastfp.cli import main
from fastfp.config import build_descriptor
from fastfp.harness import bench, results, settings, stages
from fastfp.harness.backends import StageUnavailable, why_unavailable

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WATER = SHARED / "data" / "water_842.traj"

requires_gmp = pytest.mark.skipif(not (SHARED / "gmp" / "psp_v3").is_dir(),
                                  reason=f"GMP pseudodensities not found at {SHARED / 'gmp'}")
has_asv = importlib.util.find_spec("asv") is not None
has_torch = importlib.util.find_spec("torch_geometric") is not None
amptorch_reason = why_unavailable("amptorch")
needs_amptorch = pytest.mark.skipif(amptorch_reason is not None, reason=str(amptorch_reason))


# -- the asv suite ---------------------------------------------------------------------


@pytest.mark.skipif(not has_asv, reason="asv is not installed (the 'bench' extra)")
def test_asv_check_passes():
    proc = subprocess.run([sys.executable, "-m", "asv", "check", "--python=same"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No problems found" in proc.stdout


def _discovered(monkeypatch, **variables) -> dict:
    """The suite as asv's own discovery sees it (what it writes to benchmarks.json),
    with the given FASTFP_BENCH_* variables set."""
    from asv_runner.discovery import disc_benchmarks, update_sys_path

    for variable, value in variables.items():
        monkeypatch.setenv(getattr(settings, variable).name, value)
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    update_sys_path(str(ROOT / "benchmarks"))
    return {b.name: b for b in disc_benchmarks(str(ROOT / "benchmarks"))}


@pytest.mark.skipif(not has_asv, reason="asv is not installed (the 'bench' extra)")
def test_every_benchmark_describes_its_row(monkeypatch):
    """The summary needs nothing but asv's metadata: every benchmark has a label
    naming only its parameters, a backend and a size parameter (ratios: a unit, no
    backend, a size where they depend on one)."""
    found = _discovered(monkeypatch)
    assert {"pipeline.ForceContraction.time_force_contraction", "ratios.TrainEpochRatio.track_train_epoch_ratio",
            "memory.FeaturizeMemory.peakmem_reference"} <= set(found)
    for name, b in found.items():
        if name.endswith(results.REFERENCE) or name.startswith("history."):  # the fast subset: not in the summary
            continue
        assert b.pretty_name, name
        params = dict(zip(b.param_names, (p[0] for p in b.params)))
        assert any(s in params for s in results.SIZE_PARAMS) or name == "ratios.ThreadsCeiling.track_threads_ceiling", name
        assert ("backend" in params) != (b.type == "track"), name
        assert b.type != "track" or b.unit, name
        results.label(b.pretty_name, {k: v for k, v in params.items() if k not in ("backend", "frames", "atoms")})
    assert found["pipeline.TrainEpoch.time_train_epoch"].pretty_name == stages.STAGES["train_epoch"].title


@pytest.mark.skipif(not has_asv, reason="asv is not installed (the 'bench' extra)")
def test_settings_choose_the_parameters(monkeypatch):
    found = _discovered(monkeypatch, BENCH_BACKENDS="fastfp", BENCH_DESCRIPTORS="gaussian,gmp", FRAMES="10,30")
    featurize = found["featurize.Featurize.time_featurize"]
    assert featurize.params == [["'fastfp'"], ["'gmp'", "'gaussian'"], ["False", "True"], ["10", "30"]]


def test_bench_env_passes_the_settings(tmp_path, monkeypatch):
    """The options' settings, over those set in the environment, which are kept (such as
    AMPTorch's frame cap)."""
    monkeypatch.setenv("FASTFP_BENCH_AMPTORCH_MAX_FRAMES", "100")
    monkeypatch.setenv("FASTFP_BENCH_FRAMES", "5")
    env = bench.bench_env("water-metal", [10, 30, 100], True, ["fastfp"], ["gmpordernorm"], tmp_path / "s")
    assert env["FASTFP_BENCH_FRAMES"] == "10 30 100" and env["FASTFP_BENCH_QUICK"] == "1"
    assert env["FASTFP_BENCH_BACKENDS"] == "fastfp" and env["FASTFP_BENCH_DESCRIPTORS"] == "gmpordernorm"
    assert env["FASTFP_BENCH_SKIPS"] == str(tmp_path / "s")
    full = bench.bench_env("x.traj", [100], False, ["amptorch", "fastfp"], list(settings.DESCRIPTORS), tmp_path)
    assert full["FASTFP_BENCH_QUICK"] == "0" and full["FASTFP_BENCH_DATA"] == "x.traj"
    assert full["FASTFP_BENCH_AMPTORCH_MAX_FRAMES"] == "100" and full["FASTFP_BENCH_FRAMES"] == "100"
    assert bench.parse_names("FastFP", settings.BENCH_BACKENDS, "--backend") == ["fastfp"]
    assert bench.parse_names(None, settings.BENCH_DESCRIPTORS, "--descriptors") == list(settings.DESCRIPTORS)
    with pytest.raises(bench.BenchError, match="unknown name"):
        bench.parse_names("fastfp,gpu", settings.BENCH_BACKENDS, "--backend")


def test_settings_variables(monkeypatch):
    monkeypatch.setenv("FASTFP_BENCH_FRAMES", "1000, 100")
    assert settings.FRAMES.ints() == [100, 1000]
    monkeypatch.setenv("FASTFP_BENCH_FRAMES", "many")
    with pytest.raises(ValueError, match="FASTFP_BENCH_FRAMES must list integers"):
        settings.FRAMES.ints()
    monkeypatch.delenv("FASTFP_BENCH_MAX_FRAMES", raising=False)
    assert settings.MAX_FRAMES.limit() is None and settings.AMPTORCH_MAX_FRAMES.limit() == 1000
    assert all(v.name.startswith("FASTFP_") and v.help for v in settings.VARIABLES)
    assert "FASTFP_BENCH_SKIPS" in settings.describe()


@pytest.mark.skipif(not has_asv, reason="asv is not installed (the 'bench' extra)")
def test_skips_are_recorded_where_they_happen(monkeypatch, tmp_path):
    """A setup that skips writes its reason, which the summary shows; under --quick,
    classes outside the subset skip saying so."""
    skips = tmp_path / "skips.jsonl"
    found = _discovered(monkeypatch, SKIPS=str(skips), QUICK="1", MAX_FRAMES="50")
    info = {"source": "x", "n_frames": 100, "elements": ["H", "O"], "labels": False, "atoms_per_frame": 3.0}
    assert "pipeline.Scale.time_scale" in found
    pipeline = sys.modules["benchmarks.pipeline"]
    with pytest.raises(NotImplementedError, match="not in --quick"):
        pipeline.Scale().setup(info, "fastfp", 100)
    with pytest.raises(NotImplementedError):
        pipeline.Collate().setup(info, "fastfp", 100)
    recorded = results.read_skips(skips)
    assert recorded[("pipeline.Scale", ("'fastfp'", "100"))] == "not in --quick"
    assert "FASTFP_BENCH_MAX_FRAMES=50" in recorded[("pipeline.Collate", ("'fastfp'", "100"))]


@pytest.mark.skipif(not has_asv, reason="asv is not installed (the 'bench' extra)")
def test_uncapped_classes_run_above_max_frames(monkeypatch):
    """FASTFP_BENCH_UNCAPPED lifts FASTFP_BENCH_MAX_FRAMES for the classes it names only,
    and a name that is not a class of the suite is refused."""
    _discovered(monkeypatch, MAX_FRAMES="1000", UNCAPPED="featurize.Featurize, pipeline.TrainEpochOnTheFly")
    featurize, pipeline = sys.modules["benchmarks.featurize"], sys.modules["benchmarks.pipeline"]
    featurize.Featurize()._check_cap(16000)
    pipeline.TrainEpochOnTheFly()._check_cap(16000)
    pipeline.Collate()._check_cap(1000)
    with pytest.raises(NotImplementedError, match="16000 frames > FASTFP_BENCH_MAX_FRAMES=1000"):
        pipeline.Collate()._check_cap(16000)
    monkeypatch.setenv(settings.UNCAPPED.name, "featurize.Featurise")
    with pytest.raises(ValueError, match="'featurize.Featurise' is not a benchmark class"):
        featurize.Featurize()._check_cap(16000)


# -- stages ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frames():
    if not WATER.is_file():
        pytest.skip(f"shared frames not found at {WATER}")
    return ase.io.read(WATER, ":3")


def _data(frames):
    from fastfp.amptorch.data import images_to_data

    desc = build_descriptor(settings.descriptor_config("gmpordernorm", ["H", "O"]), amptorch=True)
    return images_to_data(desc, frames, True, True, True, disable_tqdm=True)


def test_backend_reasons():
    assert why_unavailable("fastfp") is None
    if amptorch_reason:
        assert "AMPTorch" in amptorch_reason and "README" in amptorch_reason
        assert "AMPTorch" in stages.why_not("train_epoch", "fastfp")
    with pytest.raises(ValueError, match="unknown backend"):
        why_unavailable("gpu")
    with pytest.raises(ValueError, match="unknown stage"):
        stages.build("fly", "fastfp", [Atoms("H")])


def test_missing_pseudodensities_name_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTFP_GMP_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="FASTFP_GMP_DIR"):
        settings.descriptor_config("gmpordernorm", ["Cu"])
    settings.descriptor_config("gaussian", ["Cu"])  # no pseudodensities needed


@requires_gmp
def test_store_not_compared_for_amptorch(frames):
    with pytest.raises(StageUnavailable) as err:
        stages.build("store_write", "amptorch", frames)
    assert "not compared" in str(err.value) or "AMPTorch" in str(err.value)


@requires_gmp
def test_store_round_trip(frames):
    fps = build_descriptor(settings.descriptor_config("gmpordernorm", ["H", "O"])).featurize(frames)
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
    for stage in ("scale", "collate", "force_contraction", "preprocess", "train_epoch"):
        with pytest.raises(StageUnavailable) as err:
            stages.build(stage, "fastfp", bare)
        assert stages.NO_LABELS in str(err.value) or "AMPTorch" in str(err.value)
    run = stages.build("featurize", "fastfp", bare, descriptor="gaussian", derivatives=True)
    assert run() == sum(len(a) for a in bare)


@requires_gmp
def test_check_data_without_energies(frames, tmp_path):
    bare = [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in frames]
    path = tmp_path / "bare.traj"
    ase.io.write(path, bare)
    info = bench.check_data(str(path))
    assert info["labels"] is False and info["n_frames"] == len(bare)
    assert info["elements"] == ["H", "O"]


def _dense(primes):
    out = np.zeros(tuple(int(s) for s in primes["size"]))
    np.add.at(out, (primes["row"], primes["col"]), primes["val"])
    return out


def _torch_dense(tensor):
    return tensor.to_dense().numpy()


@needs_amptorch
@requires_gmp
@pytest.mark.parametrize("descriptor", settings.DESCRIPTORS)
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
    import copy

    import torch

    data = _data(frames)
    scaled = {b: stages.build("scale", b, frames, data=copy.deepcopy(data))() for b in ("amptorch", "fastfp")}
    for a, b in zip(scaled["amptorch"], scaled["fastfp"]):
        torch.testing.assert_close(b.fingerprint, a.fingerprint, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(b.fprimes.coalesce().values(), a.fprimes.coalesce().values(),
                                   rtol=1e-9, atol=1e-12)
        assert float(a.energy) == pytest.approx(float(b.energy), rel=1e-12)

    batches = {b: stages.build("collate", b, frames, data=data, collect=True, batch_size=2)()
               for b in ("amptorch", "fastfp")}
    for (a, ta), (b, tb) in zip(batches["amptorch"], batches["fastfp"]):
        ours = b.fprimes.matrix  # the COO tensor of fastfp's DerivativeMatrix
        torch.testing.assert_close(ours._indices(), a.fprimes._indices())
        torch.testing.assert_close(ours._values(), a.fprimes._values())
        assert ours.shape == a.fprimes.shape
        torch.testing.assert_close(tb[1], ta[1])

    pre = {b: stages.build("preprocess", b, frames)() for b in ("amptorch", "fastfp")}
    for a, b in zip(pre["amptorch"], pre["fastfp"]):
        torch.testing.assert_close(b.fingerprint, a.fingerprint, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(_torch_dense(b.fprimes), _torch_dense(a.fprimes), rtol=0, atol=1e-4)

    losses = {b: stages.build("train_epoch", b, frames)() for b in ("amptorch", "fastfp")}
    assert losses["fastfp"] == pytest.approx(losses["amptorch"], rel=1e-4)
    # on the fly: exact derivatives, where the stored path drops those below 1e-5
    on_the_fly = stages.build("train_epoch_on_the_fly", "fastfp", frames)()
    assert on_the_fly == pytest.approx(losses["fastfp"], rel=1e-3)
    with pytest.raises(StageUnavailable, match="no on-the-fly path"):
        stages.build("train_epoch_on_the_fly", "amptorch", frames)


@requires_gmp
@pytest.mark.skipif(not has_torch, reason="needs the 'torch' extra (pip install -e '.[torch]')")
def test_force_contraction_stage(frames):
    """Forces and the gradient of the loss (sum of squared forces) by dE/dG, on real
    batches: fastfp's (on COO matrices, and on the pair blocks its data set holds)
    against the dense product, and against AMPTorch's expression."""
    torch = stages._torch_setup()  # float64, as the stages and AtomsTrainer set it
    data = _data(frames)
    fast = stages.build("force_contraction", "fastfp", frames, data=data, collect=True, batch_size=2)()
    blocks = stages.build("force_contraction", "fastfp", frames, collect=True, batch_size=2)()
    batches = stages.build("collate", "fastfp", frames, data=data, collect=True, batch_size=2)()
    assert len(fast) == len(blocks) == len(batches) == 2
    for (dEdG, forces, grad), (batch, _), (b_dEdG, b_forces, b_grad) in zip(fast, batches, blocks):
        assert dEdG.dtype == torch.float64 and dEdG.shape == (1, batch.fprimes.shape[0])
        dense = batch.fprimes.matrix.to_dense()
        expect = -(dense.T @ dEdG.reshape(-1)).view(-1, 3)
        torch.testing.assert_close(forces, expect, rtol=1e-12, atol=1e-12)
        assert forces.shape == (batch.fprimes.shape[1] // 3, 3) == batch.forces.shape
        torch.testing.assert_close(grad, (-dense @ (2 * forces.reshape(-1))).view(1, -1), rtol=1e-12, atol=1e-12)
        assert torch.equal(b_dEdG, dEdG)
        torch.testing.assert_close(b_forces, forces, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b_grad, grad, rtol=1e-12, atol=1e-12)
    if amptorch_reason:
        with pytest.raises(StageUnavailable, match="AMPTorch"):
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
    assert "unknown name" in capsys.readouterr().err


def test_bench_out_not_writable_fails_first(tmp_path, capsys):
    """A bad --out is refused before asv or the frames are touched."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["bench", "--quick", "--out", str(blocker / "sub")]) == 2
    assert "--out" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"
    assert main(["bench", "--quick", "--out", str(blocker)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_bench_needs_a_commit(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(bench.BenchError, match="no commit"):
        bench.head_commit(tmp_path)
    with pytest.raises(bench.BenchError, match="git checkout of fastfp"):
        bench.find_checkout(tmp_path)


def _fake(amptorch: bool) -> tuple[dict, dict]:
    """asv's benchmarks.json and results JSON (format 2) for a few benchmarks."""
    backends = ["'amptorch'", "'fastfp'"]
    frames = ["100", "1000"]

    def meta(kind, pretty, names=("backend", "frames")):
        return {"type": kind, "pretty_name": pretty, "param_names": list(names)}

    benchmarks = {
        "pipeline.Preprocess.time_preprocess": meta("time", "end-to-end preprocessing"),
        "pipeline.StoreWrite.time_store_write": meta("time", "store write"),
        "memory.FeaturizeMemory.peakmem_featurize": meta("peakmemory", "featurize gmpordernorm with derivatives"),
        "memory.FeaturizeMemory.peakmem_reference": meta("peakmemory", None),
        "ratios.FeaturizeRatio.track_featurize_ratio": dict(
            meta("track", "featurize gmpordernorm with derivatives", ["frames"]), unit="AMPTorch time / fastfp time"),
        "ratios.ThreadsRatio.track_serial_share": dict(
            meta("track", "{stage}: calling thread alone", ["stage", "frames"]), unit="share of the default-threads time"),
    }

    def row(values, q25=None, q75=None, repeat=None, grid=(backends, frames)):
        n = len(values)
        return [values, list(grid), "v", 1, 1.0, None, None, q25 or [None] * n, q75 or [None] * n,
                [1] * n, repeat or [None] * n, None, None]

    amp = [12.0, None] if amptorch else [None, None]
    found = {
        "version": 2,
        "result_columns": ["result", "params", "version", "started_at", "duration", "stats_ci_99_a",
                           "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_number", "stats_repeat",
                           "samples", "profile"],
        "results": {
            "pipeline.Preprocess.time_preprocess": row(amp + [1.5, 14.0], q25=[11.0, None, 1.4, 14.0],
                                                       q75=[13.0, None, 1.6, 14.0], repeat=[3, None, 3, 1]),
            "pipeline.StoreWrite.time_store_write": row([None, None, 0.2, 2.0], repeat=[None, None, 1, 1]),
            "memory.FeaturizeMemory.peakmem_featurize": row(([3e9, None] if amptorch else [None, None]) + [1e9, 5e9]),
            "memory.FeaturizeMemory.peakmem_reference": row([5e8, None, 5e8, 6e8]),
            "ratios.FeaturizeRatio.track_featurize_ratio": row([7.5, None], grid=(frames,)),
            "ratios.ThreadsRatio.track_serial_share": row([0.234, None], grid=(["'preprocess'"], frames)),
        },
    }
    return benchmarks, found


def test_summary_from_results(tmp_path):
    skips = {("pipeline.StoreWrite", ("'amptorch'", "100")): "no comparable store",
             ("pipeline.StoreWrite", ("'amptorch'", "1000")): "no comparable store",
             ("ratios.FeaturizeRatio", ("1000",)): "AMPTorch too slow above 100 frames"}
    table = results.table(results.measurements(*_fake(amptorch=True), skips))
    row = table.rows[("end-to-end preprocessing", "100 frames")]
    assert row["amptorch"]["time"].value == 12.0 and row["fastfp"]["time"].value == 1.5
    mem = table.rows[("featurize gmpordernorm with derivatives", "100 frames")]
    assert mem["fastfp"]["delta"] == 5e8
    assert [(m.label, m.size, m.value) for m in table.ratios if m.value] == [
        ("featurize gmpordernorm with derivatives", "100 frames", 7.5),
        ("preprocess: calling thread alone", "100 frames", 0.234)]
    text = results.summary_markdown(table, {"commit": "abc"})
    line = next(ln for ln in text.splitlines() if ln.startswith("| end-to-end preprocessing | 100 frames"))
    assert "12.00 s ±8% (n=3)" in line and "1.50 s ±7% (n=3)" in line and "8.0×" in line
    line = next(ln for ln in text.splitlines() if ln.startswith("| end-to-end preprocessing | 1000 frames"))
    assert "14.00 s (1 sample)" in line and "failed" in line  # AMPTorch's None without a recorded reason
    store = next(ln for ln in text.splitlines() if ln.startswith("| store write | 100 frames"))
    assert "no comparable store" in store
    assert "| featurize gmpordernorm with derivatives | 100 frames | 7.50× | AMPTorch time / fastfp time |" in text
    assert "| preprocess: calling thread alone | 100 frames | 23% | share of the default-threads time |" in text
    assert "In-process ratios not measured: AMPTorch too slow above 100 frames." in text
    png = results.plot_time_vs_frames(table, tmp_path / "t.png")
    assert png.stat().st_size > 1000


def test_roofline_shares_in_the_summary():
    """The roofline's tracks get their own table: a row per kernel, a column per threads."""
    name = "roofline.Roofline.track_roof_share"
    benchmarks = {name: {"type": "track", "pretty_name": "{kernel}, {threads} thread(s): share of its binding roof",
                         "param_names": ["kernel", "threads", "frames"], "unit": "share of the binding roof"}}
    found = {"version": 2, "result_columns": ["result", "params"],
             "results": {name: [[0.42, 0.3, None, 0.9], [["'gmp'", "'coo'"], ["'one'", "'default'"], ["100"]]]}}
    text = results.summary_markdown(results.table(results.measurements(benchmarks, found)), {})
    assert "| kernel | size | one thread | default threads |" in text
    assert "| gmp | 100 frames | 42% | 30% |" in text and "| coo | 100 frames | – | 90% |" in text
    assert "thread(s): share of its binding roof" not in text  # not among the other ratios


@requires_gmp
@pytest.mark.skipif(not has_asv, reason="asv is not installed (the 'bench' extra)")
def test_roofline_tracks_run_on_tiny_inputs(monkeypatch, frames):
    """Every kernel of the roofline benchmark, on two frames and small memory streams:
    its work counted, roofs measured, the share of its binding roof."""
    from fastfp.harness import roofline, roofs
    from fastfp.threads import num_threads

    monkeypatch.setattr(roofs, "measure", functools.partial(roofs.measure, stream_bytes=2**23, repeat=1, rounds=200))
    monkeypatch.setattr(roofline, "_ROOFS", {})
    found = _discovered(monkeypatch, FRAMES="2")
    assert found["roofline.Roofline.track_roof_share"].unit == "share of the binding roof"
    benchmark = sys.modules["benchmarks.roofline"].Roofline()
    info = {"source": str(WATER), "n_frames": 3, "elements": ["H", "O"], "labels": True, "atoms_per_frame": 3.0}
    for kernel in roofline.KERNELS:
        for threads in roofline.THREADS:
            if kernel.startswith("contract") and not has_torch:
                with pytest.raises(NotImplementedError, match="torch"):
                    benchmark.setup(info, kernel, threads, 2)
                continue
            benchmark.setup(info, kernel, threads, 2)
            share = benchmark.track_roof_share(info, kernel, threads, 2)
            assert 0 < share < 10, (kernel, threads, share)
            counted = benchmark.run.work
            assert counted.pairs > 0 and counted.bytes_read > 0 and counted.bytes_written > 0
            assert (counted.flops > 0) == (kernel != "coo")
            assert (counted.exps > 0) == kernel.startswith("gmp") and (counted.libm_calls > 0) == (kernel == "gaussian")
    assert sorted(roofline._ROOFS) == sorted({1, num_threads()})


def test_whole_rows_skipped_are_listed_once():
    benchmarks, found = _fake(amptorch=True)
    skips = {("pipeline.StoreWrite", (b, f)): "AMPTorch has none" if b == "'amptorch'" else "disk"
             for b in ("'amptorch'", "'fastfp'") for f in ("100", "1000")}
    found["results"]["pipeline.StoreWrite.time_store_write"][0] = [None] * 4
    text = results.summary_markdown(results.table(results.measurements(benchmarks, found, skips)), {})
    assert "- store write (100 frames, 1000 frames): amptorch: AMPTorch has none; fastfp: disk" in text
    assert "| store write |" not in text


def test_backend_without_numbers_has_no_column():
    text = results.summary_markdown(results.table(results.measurements(*_fake(amptorch=False))), {})
    head = next(ln for ln in text.splitlines() if ln.startswith("| stage"))
    assert "amptorch" not in head and "speed-up" not in head and "fastfp time" in head


def test_results_from_an_asv_folder(tmp_path):
    benchmarks, found = _fake(amptorch=True)
    (tmp_path / "res" / "m").mkdir(parents=True)
    (tmp_path / "res" / "benchmarks.json").write_text(json.dumps(benchmarks))
    (tmp_path / "res" / "m" / "abcdef12-existing.json").write_text(json.dumps(found))
    assert results.load(tmp_path / "res", "m", "abcdef1234") == (benchmarks, found)
    with pytest.raises(FileNotFoundError, match="no asv results for 99999999"):
        results.load(tmp_path / "res", "m", "9999999999")


def test_settings_listed(capsys):
    """``fastfp bench --settings`` lists every FASTFP_BENCH_* variable and runs nothing."""
    assert main(["bench", "--settings"]) == 0
    out = capsys.readouterr().out
    assert out == settings.describe() + "\n" and all(v.name in out for v in settings.VARIABLES)


def test_amptorch_patched_says_what_it_needs(monkeypatch):
    from fastfp.harness import backends, patched

    monkeypatch.delenv(backends.SRC_ENV, raising=False)
    monkeypatch.setattr(backends, "patched_imported", lambda: False)
    assert "FASTFP_AMPTORCH_SRC is not set" in backends.why_patched_unavailable()
    with pytest.raises(StageUnavailable, match="FASTFP_AMPTORCH_SRC is not set"):
        patched.checkout()


@needs_amptorch
@requires_gmp
@pytest.mark.skipif(not os.environ.get("FASTFP_AMPTORCH_SRC"),
                    reason="FASTFP_AMPTORCH_SRC is not set (an AMPTorch checkout at 02e5af3 to patch)")
def test_amptorch_patched_runs_in_a_worker_as_install(frames, tmp_path, monkeypatch):
    """AMPTorch with the series, built into the cache and run in a worker process beside
    this process's unpatched AMPTorch: the same Data and training loss as install()."""
    import torch

    monkeypatch.setenv("FASTFP_CACHE", str(tmp_path))
    ours = {b: stages.build("preprocess", b, frames, collect=True)() for b in ("amptorch-patched", "fastfp")}
    assert stages.build("preprocess", "amptorch-patched", frames)() is None  # nothing sent back to time
    for a, b in zip(ours["amptorch-patched"], ours["fastfp"]):
        torch.testing.assert_close(a.fingerprint, b.fingerprint, rtol=0, atol=0)
        torch.testing.assert_close(a.fprimes.to_dense(), b.fprimes.to_dense(), rtol=0, atol=0)
    for stage in ("train_epoch", "train_epoch_on_the_fly"):
        losses = [stages.build(stage, b, frames)() for b in ("amptorch-patched", "fastfp")]
        assert losses[0] == pytest.approx(losses[1], rel=1e-12)
