"""The profiling harness: py-spy, scalene and line_profiler through ``fastfp profile`` on
a tiny workload, the summariser on synthetic inputs, and bad input."""

from __future__ import annotations

import importlib.util
import json
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from fastfp import cli
from fastfp.harness import profile as prof
from fastfp.harness import summarise as sm

HAS_TORCH = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("torch_geometric") is not None
HAS_AMPTORCH = importlib.util.find_spec("amptorch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch / torch_geometric not installed (the stages need them)")


# -- a tiny workload -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_traj(tmp_path_factory) -> Path:
    """Two frames of 3 water molecules in a periodic 6 Å box, with energies and forces."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    rng = np.random.default_rng(0)
    frames = []
    for _ in range(2):
        positions, symbols = [], []
        for k in range(3):
            o = rng.uniform(0, 6, 3)
            positions += [o, o + [0.96, 0, 0], o + [-0.24, 0.93, 0]]
            symbols += ["O", "H", "H"]
        atoms = Atoms(symbols, positions=positions, cell=[6, 6, 6], pbc=True)
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()), forces=rng.normal(size=(9, 3)))
        frames.append(atoms)
    path = tmp_path_factory.mktemp("tiny") / "tiny.traj"
    write(path, frames)
    return path


def _profile_args(tool, data, out, *extra):
    return ["profile", "--tool", tool, "--backend", "fastfp", "--stage", "preprocess", "--frames", "2",
            "--data", str(data), "--descriptor", "gaussian", "--out", str(out), *extra]


# -- each profiler through the harness -------------------------------------------------


@needs_torch
def test_pyspy_through_harness(tiny_traj, tmp_path):
    ok, why = prof.pyspy_permitted()
    if not ok:
        pytest.skip(why)
    assert cli.main(_profile_args("py-spy", tiny_traj, tmp_path, "--no-native", "--rate", "100", "--repeat", "30")) == 0
    run = tmp_path / "fastfp-preprocess"
    data = json.loads((run / "pyspy.json").read_text())
    assert data["total_samples"] > 0
    assert sum(data["shares"].values()) == pytest.approx(1.0)
    # everything counted is inside the measured work, which featurizes and scales
    assert data["shares"][sm.KERNEL] + data["shares"][sm.CONVERSION] + data["shares"][sm.SCALING] > 0
    assert all(r["function"] != "main" for r in data["functions"])
    # no module is loaded inside the measured work (the stage's build imports what it needs)
    stage = sm.stage_samples(sm.read_collapsed(run / "pyspy-raw.txt"))
    assert not any(f.name == "_find_and_load" for frames, _ in stage for f in frames)
    assert any(f.name == sm.MARKER for frames, _ in stage for f in frames)
    ET.parse(run / "pyspy.svg")
    assert "| stage | share | samples |" in (run / "pyspy.md").read_text()
    info = json.loads((run / "run.json").read_text())
    assert info["tools"]["py-spy"]["frames"] == 2 and info["machine"]["cpus"] >= 1
    assert (tmp_path / "overview.md").exists()
    # the summaries can be rebuilt from the raw stacks and run.json alone
    (run / "pyspy.md").unlink()
    assert cli.main(["profile", "--resummarise", str(tmp_path)]) == 0
    assert json.loads((run / "pyspy.json").read_text())["shares"] == data["shares"]
    assert (run / "pyspy.md").exists()


@needs_torch
def test_scalene_through_harness(tiny_traj, tmp_path, monkeypatch):
    why = prof.tool_missing("scalene")
    if why:
        pytest.skip(why)
    temp = tmp_path / "temp"  # the temporary folder of this process and its children
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    # repeated so that scalene's 10 ms sampling sees the (tiny) measured work
    assert cli.main(_profile_args("scalene", tiny_traj, tmp_path / "out", "--repeat", "30")) == 0
    assert list(temp.iterdir()) == []  # scalene's own temporaries (a scalene* folder) are gone
    tmp_path = tmp_path / "out"
    run = tmp_path / "fastfp-preprocess"
    raw = json.loads((run / "scalene.json").read_text())
    assert raw.get("files"), "scalene recorded no samples"
    s = json.loads((run / "scalene-summary.json").read_text())
    assert set(s["cpu_split"]) == {"python", "native", "system"}
    assert s["functions"], "no profiled function"
    assert any("fastfp/" in f["file"] for f in s["functions"])
    assert "CPU time of the profiled stage: Python" in (run / "scalene.md").read_text()


@needs_torch
def test_line_profiler_through_harness(tiny_traj, tmp_path):
    why = prof.tool_missing("line-profiler")
    if why:
        pytest.skip(why)
    assert cli.main(_profile_args("line-profiler", tiny_traj, tmp_path)) == 0
    run = tmp_path / "fastfp-preprocess"
    data = json.loads((run / "line_profiler.json").read_text())
    names = {f["function"] for f in data["functions"]}
    assert {"norm_features", "images_to_data"} <= names
    assert data["numba_kernels"], "numba kernels should be listed as not line-profilable"
    text = (run / "line_profiler.txt").read_text()
    assert "cannot be line-profiled" in text and "Line #" in text


# -- the summariser ----------------------------------------------------------------------

SYNTHETIC = """\
<module> (/x/child.py:4);main (/x/fastfp/harness/child.py:10) 40
<module> (/x/child.py:4);main (/x/fastfp/harness/child.py:12);_profiled_stage (/x/fastfp/harness/child.py:90);process (/s/site-packages/amptorch/dataset.py:72);FeatureScaler.norm (/s/site-packages/amptorch/preprocessing/utils.py:134) 64
<module> (/x/child.py:4);main (/x/fastfp/harness/child.py:12);_profiled_stage (/x/fastfp/harness/child.py:90);process (/s/site-packages/amptorch/dataset.py:70);AtomsToData.convert (/s/site-packages/amptorch/preprocessing/atoms_to_data.py:44);GMPOrderNorm.calculate_fingerprints (/s/site-packages/amptorch/descriptor/GMPOrderNorm/__init__.py:317);_cffi_f_calculate_solid_gmpordernorm (/b/amptorch.descriptor.GMPOrderNorm._libgmpordernorm.cpp:1178);dP3_exp (/s/amptorch/descriptor/GMPOrderNorm/helper.cpp:180) 30
<module> (/x/child.py:4);main (/x/fastfp/harness/child.py:12);_profiled_stage (/x/fastfp/harness/child.py:90);SingleNN.forward (/s/site-packages/amptorch/model.py:297);at::native::s_addmm_out_sparse_dense_worker<double> (libtorch_cpu.so) 4
<module> (/x/child.py:4);main (/x/fastfp/harness/child.py:12);_profiled_stage (/x/fastfp/harness/child.py:90);Adam.step (/s/site-packages/torch/optim/adam.py:200);Tensor.backward (/s/site-packages/torch/_tensor.py:500);0x7f00 (libtorch_cpu.so);torch::autograd::generated::SparseAddmmBackward0::apply (libtorch_cpu.so);at::native::coalesce (libtorch_cpu.so) 1
<module> (/x/child.py:4);main (/x/fastfp/harness/child.py:12);_profiled_stage (/x/fastfp/harness/child.py:90);Adam.step (/s/site-packages/torch/optim/adam.py:200);Tensor.backward (/s/site-packages/torch/_tensor.py:500);at::native::addmm (libtorch_cpu.so) 1
"""


def test_summarise_synthetic_collapsed_stacks(tmp_path):
    path = tmp_path / "stacks.txt"
    path.write_text(SYNTHETIC)
    samples = sm.read_collapsed(path)
    assert len(samples) == 6 and samples[0][1] == 40
    stage = sm.stage_samples(samples)
    assert sum(n for _, n in stage) == 100  # the 40 samples outside the measured work are dropped
    assert all(frames[0].name == sm.MARKER for frames, _ in stage)
    s = sm.summarise_stacks(stage)
    assert s.total == 100
    assert s.share(sm.SCALING) == pytest.approx(0.64)
    assert s.share(sm.KERNEL) == pytest.approx(0.30)
    assert s.share(sm.SPARSE) == pytest.approx(0.05)  # forward product and its backward
    assert s.share(sm.NETWORK) == pytest.approx(0.01)  # dense backward: not the optimiser
    top = s.functions[0]
    assert (top["function"], top["file"], top["category"]) == ("FeatureScaler.norm",
                                                              "amptorch/preprocessing/utils.py", sm.SCALING)
    assert s.lines[0]["line"] == 134
    assert s.native[0]["symbol"] == "dP3_exp"
    md = sm.stacks_markdown(s, title="synthetic")
    assert "| scaling | 64.0% | 64 |" in md
    data = s.to_json()
    assert sum(data["shares"].values()) == pytest.approx(1.0)

    svg = sm.flamegraph_svg(stage, tmp_path / "flame.svg", title="synthetic")
    root = ET.parse(svg).getroot()
    titles = [t.text for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(t.startswith("FeatureScaler.norm (amptorch/preprocessing/utils.py)\n64 samples") for t in titles)

    runs = [{"label": "synthetic", "shares": data["shares"], "seconds": 1.0}]
    assert "| synthetic | 1.0 | 30.0% |" in sm.overview_markdown(runs)
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib not installed: no chart")
    png = sm.stage_chart(runs, tmp_path / "stages.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_worker_thread_samples_count_as_stage_work(tmp_path):
    """fastfp runs its kernels on concurrent.futures threads, whose stacks have no marker;
    their samples count while they run a task, not while they wait for one."""
    path = tmp_path / "stacks.txt"
    worker = ("_bootstrap (/py/threading.py:1002);_bootstrap_inner (/py/threading.py:1045);"
              "run (/py/threading.py:982);_worker (/py/concurrent/futures/thread.py:83);"
              "run (/py/concurrent/futures/thread.py:58)")
    idle = (worker.rsplit(";", 1)[0] + ";_queue_SimpleQueue_get (Modules/_queuemodule.c:177);"
            "PyThread_acquire_lock_timed (libpython3.11.so.1.0) 500\n")  # waiting for a task: not work
    path.write_text(SYNTHETIC + worker + ";Descriptor._run_kernel.<locals>.<lambda> "
                    "(/x/fastfp/descriptors/base.py:88);gmp_kernel (/x/fastfp/kernels/gmp.py:150) 100\n" + idle)
    stage = sm.stage_samples(sm.read_collapsed(path))
    assert sum(n for _, n in stage) == 200
    assert all(frames[0].name == sm.MARKER for frames, _ in stage)
    assert sm.summarise_stacks(stage).share(sm.KERNEL) == pytest.approx((30 + 100) / 200)


def test_parse_frame_kinds():
    py = sm.parse_frame("FeatureScaler.norm (/a/site-packages/amptorch/preprocessing/utils.py:134)")
    assert (py.name, py.line, py.native, py.short_file) == ("FeatureScaler.norm", 134, False,
                                                            "amptorch/preprocessing/utils.py")
    frozen = sm.parse_frame("_find_and_load (<frozen importlib._bootstrap>:1176)")
    assert not frozen.native and frozen.line == 1176
    cpp = sm.parse_frame("at::native::foo(at::Tensor const&) (libtorch_cpu.so)")
    assert cpp.native and cpp.name == "at::native::foo(at::Tensor const&)" and cpp.file == "libtorch_cpu.so"
    dbg = sm.parse_frame("dP3_exp (/s/helper.cpp:180)")
    assert dbg.native
    assert sm.parse_frame("0x7fa9191e624a (libc.so.6)").native


def test_read_collapsed_rejects_bad_lines(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("a (x.py:1);b (y.py:2) notacount\n")
    with pytest.raises(ValueError, match="not a collapsed-stack line"):
        sm.read_collapsed(path)


def test_summarise_empty_scalene_profile(tmp_path):
    path = tmp_path / "scalene.json"
    path.write_text("{}")  # what scalene writes when it took no sample
    s = sm.summarise_scalene(path)
    assert s["samples"] is False and s["functions"] == []
    assert "recorded no samples" in sm.scalene_markdown(s)


def test_summarise_scalene_json(tmp_path):
    line = {"n_cpu_percent_python": 40.0, "n_cpu_percent_c": 10.0, "n_sys_percent": 0.0, "n_peak_mb": 5.0,
            "n_malloc_mb": 12.0, "n_copy_mb_s": 0.0, "lineno": 134, "line": "dict_elements[element].append(i)\n",
            "start_function_line": 100}
    other = dict(line, n_cpu_percent_python=0.0, n_cpu_percent_c=30.0, lineno=317,
                 line="errno = lib.calculate_solid_gmpordernorm(\n", start_function_line=259, n_malloc_mb=0.0)
    prof_json = {
        "elapsed_time_sec": 12.5, "max_footprint_mb": 321.0,
        "files": {
            "/s/site-packages/amptorch/preprocessing/utils.py": {
                "functions": [{"line": "FeatureScaler.norm", "lineno": 100, "n_cpu_percent_python": 40.0,
                               "n_cpu_percent_c": 10.0, "n_sys_percent": 0.0, "n_peak_mb": 5.0}],
                "lines": [line]},
            "/s/site-packages/amptorch/descriptor/GMPOrderNorm/__init__.py": {
                "functions": [{"line": "calculate_fingerprints", "lineno": 259, "n_cpu_percent_python": 0.0,
                               "n_cpu_percent_c": 30.0, "n_sys_percent": 0.0}],
                "lines": [other]},
        },
    }
    path = tmp_path / "scalene.json"
    path.write_text(json.dumps(prof_json))
    s = sm.summarise_scalene(path)
    assert s["cpu_split"] == {"python": pytest.approx(0.4), "native": pytest.approx(0.4), "system": 0.0}
    assert s["categories"][sm.SCALING] == pytest.approx(0.5)
    assert s["categories"][sm.KERNEL] == pytest.approx(0.3)
    assert s["functions"][0]["function"] == "FeatureScaler.norm"
    assert s["memory_lines"][0]["line"] == 134
    assert "Python 40.0%, native 40.0%" in sm.scalene_markdown(s)


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["profile", "--tool", "perf", "--backend", "fastfp"],
    ["profile", "--tool", "py-spy", "--backend", "nope"],
])
def test_unknown_tool_or_backend_is_an_argparse_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_backend_and_stage_are_checked(tmp_path, capsys):
    assert cli.main(["profile", "--tool", "py-spy", "--out", str(tmp_path)]) == 2
    assert "--backend is required" in capsys.readouterr().err
    assert cli.main(["profile", "--tool", "py-spy", "--backend", "fastfp", "--stage", "train",
                     "--out", str(tmp_path)]) == 2
    assert "unknown stage 'train'" in capsys.readouterr().err


@pytest.mark.skipif(HAS_AMPTORCH, reason="AMPTorch is installed here")
def test_amptorch_backend_without_amptorch(tmp_path, capsys):
    assert cli.main(["profile", "--tool", "py-spy", "--backend", "amptorch", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot profile backend 'amptorch'" in err and "AMPTorch is not installed" in err


@pytest.mark.skipif(HAS_AMPTORCH, reason="AMPTorch is installed here")
def test_fastfp_training_needs_amptorch(tmp_path, capsys):
    assert cli.main(["profile", "--tool", "line-profiler", "--backend", "fastfp", "--stage", "train_epoch",
                     "--out", str(tmp_path)]) == 2
    assert "AtomsTrainer" in capsys.readouterr().err


@needs_torch
@pytest.mark.skipif(HAS_AMPTORCH, reason="AMPTorch is installed here")
def test_default_stages_skip_what_needs_amptorch(tiny_traj, tmp_path, capsys):
    """``fastfp profile --backend fastfp`` without AMPTorch profiles preprocessing and
    says why training was left out."""
    assert cli.main(["profile", "--tool", "line-profiler", "--backend", "fastfp", "--frames", "2", "--data",
                     str(tiny_traj), "--descriptor", "gaussian", "--out", str(tmp_path)]) == 0
    assert "skipping stage train_epoch" in capsys.readouterr().err
    assert (tmp_path / "fastfp-preprocess" / "line_profiler.txt").is_file()
    assert not (tmp_path / "fastfp-train_epoch").exists()


def _writable(directory: Path) -> bool:
    try:
        (directory / ".probe").write_text("x")
        (directory / ".probe").unlink()
        return True
    except OSError:
        return False


def test_output_directory_not_writable(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        # root writes into a mode-500 directory; /sys is read-only for everyone
        target = next((d for d in (locked, Path("/sys")) if d.is_dir() and not _writable(d)), None)
        if target is None:
            pytest.skip("no unwritable directory available")
        assert cli.main(["profile", "--tool", "line-profiler", "--backend", "fastfp", "--stage", "featurize",
                         "--out", str(target)]) == 2
        err = capsys.readouterr().err
        assert f"output directory '{target}' is not writable" in err
    finally:
        locked.chmod(0o700)


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["profile", "--tool", "line-profiler", "--backend", "fastfp", "--data",
                     str(tmp_path / "nope.traj"), "--out", str(tmp_path)]) == 2
    assert "no such file, directory or workload" in capsys.readouterr().err


def test_pyspy_failure_message_explains_ptrace():
    why = prof._pyspy_failure("Error: Permission denied (os error 13)\n")
    assert why and "SYS_PTRACE" in why and "scalene" in why
    assert prof._pyspy_failure("Samples: 10 Errors: 0") is None
