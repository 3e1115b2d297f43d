"""``device="cuda"`` without a GPU: bad input, import isolation, and the GPU tests
(``tests/gpu``) and ``scripts/gpu_check.py`` run in numba's CUDA simulator.

The simulator must be switched on before numba is first imported, so those runs are
subprocesses: this test process never sees it.
"""

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from conftest import write_pseudodensities
from fastfp import GMPOrderNorm
from fastfp.cli import main
from fastfp.framefile import FrameFile
from fastfp.frames import pack_frames
from fastfp.gpu.device import DeviceError, simulated
from fastfp.store import featurize_to_store

ROOT = Path(__file__).resolve().parents[1]
not_simulated = pytest.mark.skipif(simulated(), reason="NUMBA_ENABLE_CUDASIM is set in this process")


# a small GMPOrderNorm on H and O: its pseudodensities and settings
GAUSSIANS = {"H": [(1.0, 1.0)], "O": [(2.0, 0.5)]}
SETTINGS = {"MCSHs": {"orders": [0, 1], "sigmas": [0.5]}, "cutoff": 4.0}


def _descriptor(tmp_path):
    paths = write_pseudodensities(tmp_path, GAUSSIANS)
    return GMPOrderNorm(dict(SETTINGS, atom_gaussians=paths), ["H", "O"])


def _descriptor_code(tmp_path) -> str:
    """Python lines that build the descriptor of :func:`_descriptor`, as ``desc``, in a subprocess (see :func:`_run`)."""
    return f"""
from pathlib import Path
from fastfp import GMPOrderNorm
from conftest import write_pseudodensities
paths = write_pseudodensities(Path({str(tmp_path)!r}), {GAUSSIANS!r})
desc = GMPOrderNorm(dict({SETTINGS!r}, atom_gaussians=paths), ["H", "O"])
"""


def _run(args, **env_extra):
    """``python *args`` in the repository root with this checkout's fastfp; the simulator
    only if ``env_extra`` asks for it."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]), **env_extra)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_import_and_the_cpu_path_never_import_cupy_or_numba_cuda(tmp_path):
    code = """
import sys
from ase.build import molecule
import fastfp, fastfp.amptorch
""" + _descriptor_code(tmp_path) + """
assert desc.featurize([molecule("H2O")], device="cpu").has_derivatives
loaded = sorted(m for m in sys.modules if m == "cupy" or m.startswith(("cupy.", "numba.cuda", "numba_cuda", "fastfp.gpu")))
print("loaded:", loaded)
"""
    done = _run(["-c", code])
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout


def test_bad_device_or_dtype_is_a_clear_error(tmp_path):
    desc = _descriptor(tmp_path)
    water = [molecule("H2O")]
    with pytest.raises(ValueError, match=r"device must be 'cpu' or 'cuda', got 'gpu'"):
        desc.featurize(water, device="gpu")
    with pytest.raises(ValueError, match="result_dtype must be float64 or float32, got float16"):
        desc.featurize(water, device="cuda", result_dtype="float16")
    with pytest.raises(ValueError, match="result_dtype float32 is available with device='cuda' only"):
        desc.featurize(water, result_dtype="float32")
    with pytest.raises(ValueError, match="amptorch_binning .* CPU only; use device='cpu'"):
        desc.featurize_packed(pack_frames(water, desc.numbers), device="cuda", amptorch_binning=True)


def _store_inputs(tmp_path):
    """A frames file and a config file for :func:`fastfp.store.featurize_to_store` / ``fastfp featurize``."""
    ase.io.write(tmp_path / "water.traj", [molecule("H2O")])
    config = {"fp_scheme": "gmpordernorm", "elements": ["H", "O"],
              "fp_params": dict(SETTINGS, atom_gaussians=write_pseudodensities(tmp_path, GAUSSIANS))}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path / "water.traj", tmp_path / "config.json", config


def test_a_store_on_an_unknown_device_is_refused_before_anything_is_written(tmp_path):
    frames, _, config = _store_inputs(tmp_path)
    with pytest.raises(ValueError, match=r"device must be 'cpu' or 'cuda', got 'gpu'"):
        featurize_to_store(FrameFile(frames), config, tmp_path / "out.store", device="gpu")
    assert not (tmp_path / "out.store").exists()


@not_simulated
def test_a_store_on_a_device_that_cannot_run_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    frames, config_file, config = _store_inputs(tmp_path)
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    with pytest.raises(DeviceError, match="needs CuPy, which is not installed"):
        featurize_to_store(FrameFile(frames), config, tmp_path / "out.store", device="cuda")
    assert main(["featurize", str(frames), "--config", str(config_file), "--out", str(tmp_path / "out.store"),
                 "--device", "cuda"]) == 2
    assert "fastfp featurize: error: device='cuda' needs CuPy, which is not installed" in capsys.readouterr().err
    assert not (tmp_path / "out.store").exists()


@not_simulated
def test_cuda_without_cupy_is_a_clear_error_not_a_cpu_fallback(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    with pytest.raises(DeviceError, match=r"needs CuPy, which is not installed: pip install cupy-cuda13x"):
        _descriptor(tmp_path).featurize([molecule("H2O")], device="cuda")


@not_simulated
def test_cuda_without_a_gpu_is_a_clear_error_not_a_cpu_fallback(tmp_path, monkeypatch):
    class CUDARuntimeError(RuntimeError):
        pass

    def no_device():
        raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device)))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    with pytest.raises(DeviceError, match=r"found no CUDA GPU \(CUDARuntimeError: cudaErrorNoDevice.*use device='cpu'"):
        _descriptor(tmp_path).featurize([molecule("H2O")], device="cuda")


@not_simulated
@pytest.mark.skipif(np.lib.NumpyVersion(np.__version__) < "2.0.0",
                    reason="numba-cuda registers np.row_stack only with NumPy 2")
def test_a_numpy_that_numba_cuda_does_not_support_is_a_clear_error(tmp_path):
    # as on a GPU machine with NumPy 2.5 and numba-cuda 0.30: np.row_stack gone
    code = """
import sys, types
sys.modules["cupy"] = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1)))
from ase.build import molecule
from fastfp.gpu.device import DeviceError
""" + _descriptor_code(tmp_path) + """
import numpy
del numpy.row_stack  # after the imports that list NumPy's names (scipy's)
try:
    desc.featurize([molecule("H2O")], device="cuda")
except DeviceError as err:
    print("DeviceError:", err)
"""
    done = _run(["-c", code])
    assert done.returncode == 0, done.stderr
    assert re.search(r"DeviceError: device='cuda': numba-cuda \S+ does not work with NumPy \S+ "
                     r"\(module 'numpy' has no attribute 'row_stack'\): pip install 'numpy<2.5'", done.stdout), done.stdout


@pytest.mark.slow
def test_gpu_tests_pass_in_the_cuda_simulator():
    done = _run(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/gpu"], NUMBA_ENABLE_CUDASIM="1")
    output = done.stdout + done.stderr
    assert done.returncode == 0 and " passed" in output, output
    # everything ran but the PTX build (no compiler in the simulator; it runs in this
    # process) and the check of CUDA streams, without torch (or torch_geometric) the
    # DLPack check and on-the-fly training, and without AMPTorch its trainer's device data set
    skipped = [line for line in output.splitlines() if line.startswith("SKIPPED")]
    assert any("compiles no PTX" in line for line in skipped), output
    allowed = ("compiles no PTX", "has no streams", "could not import 'torch'", "could not import 'torch_geometric'",
               "AMPTorch is not installed")
    assert all(any(reason in line for reason in allowed) for line in skipped), output


@pytest.mark.slow
def test_gpu_check_script_runs_in_the_cuda_simulator(tmp_path):
    out = tmp_path / "gpu.md"
    done = _run(["scripts/gpu_check.py", "--simulate", "--frames", "1", "--check-frames", "1", "--runs", "1",
                 "--tests", "neighbour", "--wheels", str(tmp_path / "no-wheels"), "--out", str(out)],
                FASTFP_NUM_THREADS="2")
    assert done.returncode == 0, done.stdout + done.stderr
    report = out.read_text()
    for expected in ("numba's CUDA simulator on the CPU", "## GPU tests (`tests/gpu`)", "passed in",
                     "`water-metal`, first 1 frames, 35 atoms", "Micro-benchmarks ran in the simulator",
                     "largest difference", "| GPU, 1 frames with derivatives, float64 (s) |",
                     "| GPU, the same in float32 (s) |", "| GMP kernel, share of its binding roof (%) |",
                     "| CPU / GPU (float64) |", "not assessed (simulator)", "### The host's part of a batch",
                     "| neighbour list |", "| descriptor kernel |", "**the host's part**",
                     "### The GMP kernel's share of its roof", "Gflop", "### The CPU", "fastest: 1",
                     "1 thread: ", "2 threads: ", "### The on-the-fly epoch", "on `cpu`",
                     "| on-the-fly epoch, SingleNN 3x20, batch 256, forces, float64, derivatives blocks (s) |",
                     "| on-the-fly epoch, SingleNN 3x20, batch 256, forces, float64, derivatives recomputed (s) |",
                     "Run 1, derivatives blocks: 1 batches in", "Run 1, derivatives recomputed: 1 batches in",
                     "differ from those with blocks by"):
        assert expected in report, expected
    assert "Incomplete" not in report and "## Error" not in report and "**failed**" not in report
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.slow
def test_fp32_error_script_reports_the_errors(tmp_path):
    pytest.importorskip("torch_geometric", reason="could not import 'torch_geometric' (the 'torch' extra)")
    out = tmp_path / "fp32.md"
    done = _run(["scripts/fp32_error.py", "--frames", "3", "--chunk", "2", "--out", str(out)], FASTFP_NUM_THREADS="2")
    assert done.returncode == 0, done.stdout + done.stderr
    report = out.read_text()
    for expected in ("the first 3 frames of `water-metal`", "| fingerprints | ", "| derivatives (per Å) | ",
                     "| forces of one model, eV/Å (scaled) | ", "Training loss", "last epoch differs by",
                     "below AMPTorch's threshold (1e-05): **"):
        assert expected in report, expected
    errors = re.search(r"\| fingerprints \| (\S+) \| (\S+) \|", report)
    assert 0 < float(errors[2]) < 2e-5  # float32, not float64: errors of float32's size
    assert not list(tmp_path.glob(".*tmp"))
