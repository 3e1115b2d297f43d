"""Parameters, limits and inputs shared by the benchmark modules.

The settings come from the ``FASTFP_BENCH_*`` variables of
:mod:`fastfp.harness.settings` (each with its default and meaning there; ``fastfp bench``
sets them). A benchmark that cannot run raises ``NotImplementedError`` in ``setup``,
which asv takes as "skip", and records the reason in ``FASTFP_BENCH_SKIPS`` for the
summary: a backend or library missing, a size above a limit, frames without energies,
inputs that would not fit in memory, a class outside ``--quick``.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path

from fastfp.harness import settings, stages, workloads
from fastfp.harness.backends import BACKENDS as ALL_BACKENDS
from fastfp.harness.backends import PATCHES_ENV, StageUnavailable, is_available

ROOT = Path(__file__).resolve().parents[1]


def _locate_inputs() -> None:
    """asv runs each benchmark in a temporary directory: make a relative
    ``FASTFP_BENCH_DATA`` absolute, from the repository root, point ``FASTFP_SHARED``
    (real frames, pseudodensities) at the ``shared`` folder beside the checkout unless
    set, and ``FASTFP_AMPTORCH_PATCHES`` at this checkout's ``patches/``."""
    text = settings.DATA.get()
    if not Path(text).is_absolute() and (ROOT / text).exists():
        os.environ[settings.DATA.name] = str(ROOT / text)
    if not settings.SHARED.get() and (ROOT.parent / "shared").is_dir():
        os.environ[settings.SHARED.name] = str(ROOT.parent / "shared")
    os.environ.setdefault(PATCHES_ENV, str(ROOT / "patches"))  # for the amptorch-patched backend


def _preimport() -> None:
    """With ``FASTFP_BENCH_PREIMPORT=1`` (``fastfp bench``, which runs asv with
    ``--launch-method forkserver``): import the heavy modules the setups need (torch,
    torch_geometric, AMPTorch) once, in the forkserver, instead of in every benchmark
    process (about 5 s each on 2 cores). Importing starts no threads, so forking
    afterwards is safe."""
    if settings.PREIMPORT.get() != "1":
        return
    import importlib

    for module in ("torch", "torch_geometric.data", "fastfp.amptorch.data", "fastfp.amptorch.patching",
                   "fastfp.store"):
        try:
            importlib.import_module(module)
        except Exception:  # an optional part missing: its benchmarks skip with the reason
            pass
    if is_available("amptorch"):
        importlib.import_module("amptorch.dataset")


_locate_inputs()
_preimport()

BACKENDS = settings.BENCH_BACKENDS.names(ALL_BACKENDS)
DESCRIPTORS = settings.BENCH_DESCRIPTORS.names(settings.DESCRIPTORS)
FRAMES = settings.FRAMES.ints()
ATOMS = list(settings.ATOMS)


def setup_cache(*_):
    """Generate (first time) or load the benchmark frames once per asv run; what the
    setups need (:func:`fastfp.harness.workloads.describe`). Shared by every class (asv
    keys the cache by this function), so no timed stage includes data generation."""
    source = settings.DATA.get()
    cap = settings.MAX_FRAMES.limit()
    limit = max(FRAMES) if cap is None or _uncapped() else min(max(FRAMES), cap)
    return workloads.describe(workloads.load_frames(source, limit), source)


setup_cache.timeout = 4 * 3600  # the 16,000-frame workload is generated on first use


def _uncapped() -> list[str]:
    """The classes ``FASTFP_BENCH_UNCAPPED`` names (``module.Class``); ``ValueError``
    naming the variable for one that is not a benchmark class of this suite."""
    names = [n.strip() for n in settings.UNCAPPED.get().split(",") if n.strip()]
    for name in names:
        module, _, cls = name.partition(".")
        try:
            found = isinstance(getattr(importlib.import_module(f"{__package__}.{module}"), cls), type)
        except (ImportError, AttributeError, ValueError):
            found = False
        if not found:
            raise ValueError(f"{settings.UNCAPPED.name}: {name!r} is not a benchmark class (module.Class, "
                             "e.g. featurize.Featurize)")
    return names


def _record_skip(benchmark, params, reason: str) -> None:
    """Append why ``benchmark`` (an instance) skips at ``params`` to ``FASTFP_BENCH_SKIPS``."""
    path = settings.SKIPS.get()
    if not path:
        return
    cls = type(benchmark)
    entry = {"benchmark": f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}",
             "params": [repr(p) for p in params], "reason": reason}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


class Benchmark:
    """What every benchmark class shares: the frames from :func:`setup_cache`, a timeout
    for 16,000 frames, samples of one call each (a call is seconds to minutes, so no
    calibration or warm-up rounds: at least 1 and up to 3 samples within 30 s, in one
    round), and a ``setup`` that calls the class's ``prepare`` and records why it skips."""

    setup_cache = setup_cache
    timeout = 4 * 3600
    number = 1
    repeat = (1, 3, 30.0)
    rounds = 1
    warmup_time = 0
    #: part of ``fastfp bench --quick``
    quick = True

    def setup(self, info, *params):
        try:
            if settings.QUICK.get() == "1" and not self.quick:
                raise StageUnavailable("not in --quick")
            self._check_cap(dict(zip(getattr(self, "param_names", ()), params)).get("frames"))
            self.prepare(info, *params)
        except NotImplementedError as exc:
            _record_skip(self, params, str(exc))
            raise

    def prepare(self, info, *params):
        """Build what the timed methods need (``self.run``), or raise ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} defines no prepare()")

    def _check_cap(self, frames) -> None:
        """Skip above ``FASTFP_BENCH_MAX_FRAMES`` frames unless ``FASTFP_BENCH_UNCAPPED``
        names this class."""
        cap = settings.MAX_FRAMES.limit()
        if frames is None or cap is None or frames <= cap:
            return
        if f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}" not in _uncapped():
            raise StageUnavailable(f"{frames} frames > {settings.MAX_FRAMES.name}={cap}")


def _check_frames(info: dict, n: int, backend: str, labels: bool) -> None:
    if n > info["n_frames"]:
        raise StageUnavailable(f"{info['source']} has {info['n_frames']} frames, fewer than {n}")
    amp_cap = settings.AMPTORCH_MAX_FRAMES.limit()
    if backend == "amptorch" and n > amp_cap:
        raise StageUnavailable(f"AMPTorch too slow above {amp_cap} frames ({settings.AMPTORCH_MAX_FRAMES.name})")
    if labels and not info["labels"]:
        raise StageUnavailable(stages.NO_LABELS)


def stage_run(stage: str, info: dict, backend: str, n: int, **options):
    """:func:`fastfp.harness.stages.build` of ``stage`` on the first ``n`` benchmark
    frames, or ``StageUnavailable`` (asv: skip) with the reason."""
    reason = stages.why_not(stage, backend)
    if reason:
        raise StageUnavailable(reason)
    _check_frames(info, n, backend, stages.STAGES[stage].needs_labels)
    frames = workloads.load_frames(info["source"], n)
    return stages.build(stage, backend, frames, elements=info["elements"], **options)


def atoms_run(info: dict, backend: str, n_atoms: int, descriptor: str):
    """Featurization with derivatives of frame 0 of the benchmark frames repeated
    in-plane to about ``n_atoms`` atoms, or ``StageUnavailable`` with the reason."""
    reason = stages.why_not("featurize", backend)
    if reason:
        raise StageUnavailable(reason)
    cap = settings.MAX_ATOMS.limit()
    if cap and n_atoms > cap:
        raise StageUnavailable(f"{n_atoms} atoms > {settings.MAX_ATOMS.name}={cap}")
    amp_cap = settings.AMPTORCH_MAX_ATOMS.limit()
    if backend == "amptorch" and n_atoms > amp_cap:
        raise StageUnavailable(f"AMPTorch too slow above {amp_cap} atoms ({settings.AMPTORCH_MAX_ATOMS.name})")
    frame = workloads.supercell(workloads.load_frames(info["source"], 1)[0], n_atoms)
    return stages.build("featurize", backend, [frame], descriptor=descriptor, derivatives=True,
                        elements=info["elements"])


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
