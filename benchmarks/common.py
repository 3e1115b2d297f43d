"""Parameters, limits and inputs shared by the benchmark modules.

Environment variables (all optional; ``fastfp bench`` sets them):

``FASTFP_BENCH_DATA``
    frames to use instead of the default 16,000-frame workload (ASE file or directory);
    a relative path is taken from the repository root (asv runs benchmarks elsewhere).
``FASTFP_BENCH_FRAMES``
    frame counts to benchmark (default ``100 1000 16000``).
``FASTFP_BENCH_MAX_FRAMES``
    setups skip larger frame counts (``fastfp bench --quick``: 100).
``FASTFP_BENCH_MAX_ATOMS``
    setups of the per-atom benchmarks skip larger supercells.
``FASTFP_BENCH_AMPTORCH_MAX_FRAMES`` / ``FASTFP_BENCH_AMPTORCH_MAX_ATOMS``
    AMPTorch runs only up to these sizes (default 1000 frames, 2000 atoms): at about
    0.4 s per 66-atom frame with derivatives, 16,000 frames would take hours per stage.
``FASTFP_BENCH_PREIMPORT``
    ``1``: import torch, torch_geometric and AMPTorch when the suite is imported (for
    asv's forkserver launch method; see :func:`_preimport`).
``FASTFP_BENCH_MEMORY_GB``
    memory a stage's inputs may take (default 70% of the available memory); larger
    inputs are skipped with the estimate (see :func:`fastfp.harness.stages.estimate_bytes`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from fastfp.harness import stages

__all__ = ["ATOMS", "BACKENDS", "Benchmark", "DESCRIPTORS", "FRAMES", "atoms_frame", "bench_frames", "setup_cache",
           "best_time"]


def _ints(name: str, default):
    text = os.environ.get(name, "").replace(",", " ").split()
    if not text:
        return list(default)
    try:
        values = sorted({int(t) for t in text})
    except ValueError:
        raise ValueError(f"{name} must list integers, got {os.environ[name]!r}") from None
    return [v for v in values if v > 0] or list(default)


def _int(name: str, default):
    text = os.environ.get(name, "").strip()
    return int(text) if text else default


def _preimport() -> None:
    """With ``FASTFP_BENCH_PREIMPORT=1`` (``fastfp bench``, which runs asv with
    ``--launch-method forkserver``): import the heavy modules the setups need (torch via
    the workloads' neighbour lists, torch_geometric, AMPTorch) once, in the forkserver,
    instead of in every benchmark process (about 5 s each on 2 cores). Importing starts
    no threads, so forking afterwards is safe."""
    if os.environ.get("FASTFP_BENCH_PREIMPORT") != "1":
        return
    import importlib

    for module in ("fastfp.harness.workloads", "torch", "torch_geometric.data", "fastfp.amptorch.data",
                   "fastfp.amptorch.patching", "fastfp.store"):
        try:
            importlib.import_module(module)
        except Exception:  # an optional part missing: its benchmarks skip with the reason
            pass
    if stages.available("amptorch") is None:
        importlib.import_module("amptorch.dataset")


def _absolute_data_path() -> None:
    """asv runs each benchmark in a temporary directory: make a relative
    ``FASTFP_BENCH_DATA`` absolute, from the repository root (where asv is run)."""
    text = os.environ.get("FASTFP_BENCH_DATA", "")
    path = Path(__file__).resolve().parents[1] / text
    if text and not Path(text).is_absolute() and path.exists():
        os.environ["FASTFP_BENCH_DATA"] = str(path)


_absolute_data_path()
_preimport()

BACKENDS = list(stages.BACKENDS)
DESCRIPTORS = list(stages.DESCRIPTORS)
FRAMES = _ints("FASTFP_BENCH_FRAMES", [100, 1000, 16000])
ATOMS = [500, 2000, 4000, 10000]


def setup_cache(*_):
    """Generate (first time) or load the benchmark frames once per asv run; what the
    setups need (:func:`fastfp.harness.stages.describe_data`). Shared by every class
    (asv keys the cache by this function), so no timed stage includes data generation."""
    return stages.describe_data()


setup_cache.timeout = 4 * 3600  # the 16,000-frame workload is generated on first use


class Benchmark:
    """Settings every benchmark class shares: the frames from :func:`setup_cache`, a
    timeout for 16,000 frames, and samples of one call each (a call is seconds to
    minutes, so no calibration or warm-up rounds): at least 1 and up to 3 samples
    within 30 s, in one round."""

    setup_cache = setup_cache
    timeout = 4 * 3600
    number = 1
    repeat = (1, 3, 30.0)
    rounds = 1
    warmup_time = 0


def _skip(reason: str):
    raise NotImplementedError(reason)


def _check_backend(backend: str) -> None:
    reason = stages.available(backend)
    if reason:
        _skip(reason)


def bench_frames(info: dict, n: int, backend: str | None = None, labels: bool = False) -> list:
    """The first ``n`` benchmark frames, or ``NotImplementedError`` (asv: skip) with the
    reason: backend missing, ``n`` above a limit or above the frames available, no
    energies where ``labels`` are needed."""
    if backend is not None:
        _check_backend(backend)
    cap = stages.max_frames()
    if cap is not None and n > cap:
        _skip(f"{n} frames > FASTFP_BENCH_MAX_FRAMES={cap}")
    if n > info["n_frames"]:
        _skip(f"{info['source']} has {info['n_frames']} frames, fewer than {n}")
    amp_cap = _int("FASTFP_BENCH_AMPTORCH_MAX_FRAMES", 1000)
    if backend == "amptorch" and n > amp_cap:
        _skip(f"AMPTorch skipped above {amp_cap} frames (FASTFP_BENCH_AMPTORCH_MAX_FRAMES)")
    if labels and info["labels"]:
        _skip(info["labels"])
    return stages.load_bench_frames(n, info["source"])


def atoms_frame(info: dict, n_atoms: int, backend: str):
    """Frame 0 of the benchmark frames repeated in-plane to about ``n_atoms`` atoms."""
    _check_backend(backend)
    cap = _int("FASTFP_BENCH_MAX_ATOMS", 0)
    if cap and n_atoms > cap:
        _skip(f"{n_atoms} atoms > FASTFP_BENCH_MAX_ATOMS={cap}")
    amp_cap = _int("FASTFP_BENCH_AMPTORCH_MAX_ATOMS", 2000)
    if backend == "amptorch" and n_atoms > amp_cap:
        _skip(f"AMPTorch skipped above {amp_cap} atoms (FASTFP_BENCH_AMPTORCH_MAX_ATOMS)")
    return stages.supercell(stages.load_bench_frames(1, info["source"])[0], n_atoms)


def best_time(run, repeat: int = 3, budget: float = 30.0) -> float:
    """Shortest of up to ``repeat`` timings of ``run()`` (fewer once ``budget`` seconds
    are spent), in seconds."""
    best = float("inf")
    spent = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        spent += dt
        if spent > budget:
            break
    return best
