"""What the benchmarks take: every ``FASTFP_BENCH_*`` variable with its default, the
descriptor settings, and the memory and disk budgets.

``fastfp bench`` sets the variables for the asv run; anyone may set them for a plain
``asv run``. Each is a :class:`Variable` below, read with ``VARIABLE.get()``.
``fastfp bench --settings`` lists them (:func:`describe`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .backends import BACKENDS, StageUnavailable


@dataclass(frozen=True)
class Variable:
    """An environment variable of the benchmarks: its name, default and meaning."""

    name: str
    default: str
    help: str

    def get(self) -> str:
        """The variable's value, or its default when unset or blank."""
        return os.environ.get(self.name, "").strip() or self.default

    def ints(self) -> list[int]:
        """The value as sorted positive integers (separated by spaces or commas);
        ``ValueError`` naming the variable otherwise."""
        text = self.get().replace(",", " ").split()
        try:
            values = sorted({int(t) for t in text})
        except ValueError:
            raise ValueError(f"{self.name} must list integers, got {self.get()!r}") from None
        if any(v < 1 for v in values):
            raise ValueError(f"{self.name} must list positive integers, got {self.get()!r}")
        return values

    def limit(self) -> int | None:
        """The value as one positive integer, or None when unset."""
        values = self.ints()
        if len(values) > 1:
            raise ValueError(f"{self.name} must be one integer, got {self.get()!r}")
        return values[0] if values else None

    def names(self, known: Sequence[str]) -> list[str]:
        """The value as comma-separated names from ``known``, in ``known``'s order;
        ``ValueError`` naming the variable and the unknown names otherwise."""
        names = [t.strip().lower() for t in self.get().split(",") if t.strip()]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise ValueError(f"{self.name}={self.get()!r}: unknown name(s) {unknown}; choose from {','.join(known)}")
        return [k for k in known if k in names]


#: descriptors the featurization benchmarks compare (settings: :func:`descriptor_config`)
DESCRIPTORS = ("gmpordernorm", "gmp", "gaussian")
#: atoms per frame of the one-frame benchmarks (frame 0 repeated in-plane)
ATOMS = (500, 2000, 4000, 10000)
DATA = Variable("FASTFP_BENCH_DATA", "water-metal",  # fastfp.harness.workloads.REFERENCE
                "frames to benchmark: a workload name (NAME or NAME:N, see fastfp.harness.workloads), an "
                "ASE-readable file or a directory of them; relative paths are taken from the repository root "
                "when asv runs the suite")
FRAMES = Variable("FASTFP_BENCH_FRAMES", "100 1000 16000", "frame counts the benchmarks take")
MAX_FRAMES = Variable("FASTFP_BENCH_MAX_FRAMES", "", "benchmarks of more frames skip (default: none)")
UNCAPPED = Variable("FASTFP_BENCH_UNCAPPED", "",
                    "benchmarks FASTFP_BENCH_MAX_FRAMES does not cap, comma-separated module.Class names (e.g. "
                    "featurize.Featurize,pipeline.TrainEpochOnTheFly: the largest frame counts for those only)")
MAX_ATOMS = Variable("FASTFP_BENCH_MAX_ATOMS", "", "one-frame benchmarks of more atoms skip (default: none)")
AMPTORCH_MAX_FRAMES = Variable("FASTFP_BENCH_AMPTORCH_MAX_FRAMES", "1000",
                               "AMPTorch runs up to this many frames: at about 3 frames/s with derivatives, "
                               "16,000 frames would take hours per stage")
AMPTORCH_MAX_ATOMS = Variable("FASTFP_BENCH_AMPTORCH_MAX_ATOMS", "2000",
                              "AMPTorch's one-frame benchmarks run up to this many atoms")
BENCH_BACKENDS = Variable("FASTFP_BENCH_BACKENDS", ",".join(BACKENDS), "backends the benchmarks take")
BENCH_DESCRIPTORS = Variable("FASTFP_BENCH_DESCRIPTORS", ",".join(DESCRIPTORS),
                             "descriptors the featurization benchmarks take (the other stages use gmpordernorm)")
QUICK = Variable("FASTFP_BENCH_QUICK", "0",
                 "1: benchmarks outside the fastfp bench --quick subset skip, saying so")
MEMORY_GB = Variable("FASTFP_BENCH_MEMORY_GB", "",
                     "memory (GiB) a stage's inputs may take; larger inputs skip with the estimate "
                     "(default: 70% of the memory available when the stage is built)")
PREIMPORT = Variable("FASTFP_BENCH_PREIMPORT", "0",
                     "1: import torch, torch_geometric and AMPTorch when the suite is imported, once in "
                     "asv's forkserver instead of in every benchmark process")
SKIPS = Variable("FASTFP_BENCH_SKIPS", "",
                 "file to which each skipped benchmark appends its reason (JSON lines); fastfp bench reads it")
ROW_BUDGET = Variable("FASTFP_BENCH_ROW_BUDGET", "60",
                      "seconds of samples fastfp bench may spend on one row: rows whose spread is above "
                      "±10% take more samples until it is below or this is spent (then they are flagged noisy)")
HISTORY = Variable("FASTFP_BENCH_HISTORY", "",
                   "folder of the fast subset's inputs (benchmarks/history.py: frames.traj, descriptor.json); "
                   "fastfp bench --history / --compare write it")
SHARED = Variable("FASTFP_SHARED", "",
                  "the shared folder (real frames in data/, pseudodensities in gmp/; default: the first "
                  "shared/ with a data/ folder found walking up from the working directory)")
GMP_DIR = Variable("FASTFP_GMP_DIR", "",
                   "folder with psp_v3/ and valence_gaussians/ (AMPTorch's pseudodensity files; default: the "
                   "gmp/ folder of the shared folder)")

VARIABLES = (DATA, FRAMES, MAX_FRAMES, UNCAPPED, MAX_ATOMS, AMPTORCH_MAX_FRAMES, AMPTORCH_MAX_ATOMS, BENCH_BACKENDS,
             BENCH_DESCRIPTORS, QUICK, MEMORY_GB, PREIMPORT, SKIPS, ROW_BUDGET, HISTORY, SHARED, GMP_DIR)

#: ``fastfp bench --quick``: frame counts and descriptors (unless ``--frames`` or
#: ``--descriptors`` say otherwise), and the other variables it sets; benchmark classes
#: with ``quick = False`` skip
QUICK_FRAMES = (10, 30, 100)
QUICK_DESCRIPTORS = ("gmpordernorm",)
QUICK_SETTINGS = {MAX_ATOMS: "2000", AMPTORCH_MAX_ATOMS: "500", QUICK: "1"}


def describe() -> str:
    """One line per variable: name, default and meaning."""
    return "\n".join(f"{v.name} (default {v.default or 'unset'}): {v.help}" for v in VARIABLES)


# -- shared data and descriptor settings ------------------------------------------------


def shared_data_dir() -> Path | None:
    """The shared real-data folder (``shared/data``), or None if absent:
    ``FASTFP_SHARED`` (the ``shared`` folder or its ``data`` folder), else the first
    ``shared/data`` found walking up from the working directory."""
    if SHARED.get():
        for candidate in (Path(SHARED.get()) / "data", Path(SHARED.get())):
            if candidate.is_dir():
                return candidate
        return None
    start = Path.cwd()
    for folder in (start, *start.parents):
        if (folder / "shared" / "data").is_dir():
            return folder / "shared" / "data"
    return None


GMPORDERNORM_SIGMAS = [0.4, 0.8, 1.2, 1.6, 2.0]
#: MCSH orders/groups and sigmas of ../shared/reference/gmp_groups.npz's config
GMP_SIGMAS = [0.2, 0.69, 1.1, 1.66, 2.66]
GMP_GROUPS = {"0": [1], "1": [1], "2": [1, 2]}


def gmp_dir() -> Path:
    """Folder with ``psp_v3/`` and ``valence_gaussians/``: ``FASTFP_GMP_DIR``, else the
    ``gmp/`` folder beside the shared data folder; ``FileNotFoundError`` naming both
    when it lacks them."""
    if GMP_DIR.get():
        folder = Path(GMP_DIR.get())
    else:
        shared = shared_data_dir()
        folder = shared.parent / "gmp" if shared is not None else None
    for sub in ("psp_v3", "valence_gaussians"):
        if folder is None or not (folder / sub).is_dir():
            where = f"no folder {folder / sub}" if folder is not None else "no shared data folder found"
            raise FileNotFoundError(
                f"GMP pseudodensities not found ({where}). Set {GMP_DIR.name} to a folder with psp_v3/ and "
                "valence_gaussians/ (AMPTorch's pseudodensity files; fastfp does not ship them), or "
                "FASTFP_SHARED to the shared folder holding gmp/")
    return folder


def _pseudodensities(sub: str, pattern: str, elements) -> dict:
    base = gmp_dir() / sub
    out = {}
    for el in elements:
        found = sorted(base.glob(pattern.format(el=el)))
        if not found:
            raise FileNotFoundError(f"GMP pseudodensities not found: no {pattern.format(el=el)} in {base} "
                                    f"({GMP_DIR.name} sets the folder)")
        out[el] = str(found[0])
    return out


def descriptor_config(descriptor: str, elements: Sequence[str]) -> dict:
    """The benchmark settings of ``descriptor`` for ``elements``, as a resolved fastfp
    config (:mod:`fastfp.config`):

    * ``gmpordernorm``: MCSH orders 0–3 × sigmas 0.4–2.0 Å (5), cutoff 8 Å, psp_v3
      pseudodensities;
    * ``gmp``: MCSH orders 0, 1, 2 (groups 1; 1; 1, 2) × sigmas 0.2–2.66 Å (5), cutoff 8 Å,
      valence-Gaussian pseudodensities;
    * ``gaussian``: G2 (4 etas 0.05–5 Å⁻², rs 0) + G4 (eta 0.005, zetas 1, 4, gammas ±1),
      cosine cutoff 6 Å.
    """
    from fastfp.config import resolve_config

    elements = list(elements)
    if descriptor == "gmpordernorm":
        params = {"MCSHs": {"orders": [0, 1, 2, 3], "sigmas": list(GMPORDERNORM_SIGMAS)},
                  "cutoff": 8.0, "atom_gaussians": _pseudodensities("psp_v3", "{el}_pseudodensity.g", elements)}
        cutoff_params = {}
    elif descriptor == "gmp":
        params = {"MCSHs": {order: {"groups": list(groups), "sigmas": list(GMP_SIGMAS)}
                            for order, groups in GMP_GROUPS.items()},
                  "cutoff": 8.0,
                  "atom_gaussians": _pseudodensities("valence_gaussians", "{el}_pseudodensity_*.g", elements)}
        cutoff_params = {}
    elif descriptor == "gaussian":
        etas = np.logspace(np.log10(0.05), np.log10(5.0), num=4).tolist()
        params = {"default": {"G2": {"etas": etas, "rs_s": [0]},
                              "G4": {"etas": [0.005], "zetas": [1.0, 4.0], "gammas": [1.0, -1.0]},
                              "cutoff": 6}}
        cutoff_params = {"cutoff_func": "Cosine"}
    else:
        raise ValueError(f"unknown descriptor {descriptor!r}; known: {', '.join(DESCRIPTORS)}")
    return resolve_config({"fp_scheme": descriptor, "fp_params": params, "elements": elements,
                           "cutoff_params": cutoff_params})


# -- memory and disk budgets -----------------------------------------------------------


def memory_budget() -> float:
    """Bytes a stage's inputs may take: ``FASTFP_BENCH_MEMORY_GB`` or 70% of the memory
    available now."""
    if MEMORY_GB.get():
        return float(MEMORY_GB.get()) * 2**30
    import psutil

    return 0.7 * psutil.virtual_memory().available


_SIZES: dict = {}


def _sizes_per_atom(frames, descriptor: str, elements) -> dict:
    """Measured with fastfp on up to eight frames spread over ``frames`` (a workload
    interleaves its systems): derivative entries (COO, AMPTorch layout) and derivative
    blocks per atom, and the fingerprint width."""
    from fastfp.config import build_descriptor

    frames = list(frames)
    sample = [frames[i] for i in sorted(set(np.linspace(0, len(frames) - 1, min(8, len(frames))).astype(int)))]
    key = (descriptor, tuple(elements), tuple(len(a) for a in sample),
           tuple(float(a.positions[0, 0]) for a in sample))
    if key not in _SIZES:
        desc = build_descriptor(descriptor_config(descriptor, elements), amptorch=True)
        fps = desc.featurize(sample, derivatives=True, amptorch_binning=True)
        images = desc.image_dicts(fps, True)
        atoms = max(1, fps.fingerprints.shape[0])
        _SIZES[key] = {
            "nnz": sum(len(im["descriptor_primes"]["val"]) for im in images) / atoms,
            "blocks": len(fps.fprime_j) / atoms,
            "features": fps.n_features,
        }
    return _SIZES[key]


def estimate_bytes(kind: str, frames, descriptor: str, elements) -> float:
    """Rough peak bytes of ``frames``' derivatives held at once: ``"coo"`` (AMPTorch's
    ``Data`` list: COO matrices and transient copies) or ``"blocks"`` (fastfp's
    derivative blocks)."""
    s = _sizes_per_atom(frames, descriptor, elements)
    atoms = sum(len(a) for a in frames)
    if kind == "blocks":
        return atoms * s["blocks"] * (s["features"] * 24 + 8)
    if kind == "coo":
        return 1.5 * atoms * (s["nnz"] * 24 + s["features"] * 8)  # int64 row, col + float64 value
    raise ValueError(f"unknown kind {kind!r}")


def check_memory(need: float, what: str) -> None:
    """:class:`StageUnavailable` when ``need`` bytes exceed :func:`memory_budget`."""
    budget = memory_budget()
    if need > budget:
        raise StageUnavailable(f"{what} needs about {need / 2**30:.1f} GiB (derivative matrices), more than the "
                               f"{budget / 2**30:.1f} GiB allowed ({MEMORY_GB.name} sets it)")


def check_disk(path: Path, need: float, what: str) -> None:
    """:class:`StageUnavailable` when ``need`` bytes exceed a quarter of the free disk at ``path``."""
    free = shutil.disk_usage(path).free
    if need > 0.25 * free:
        raise StageUnavailable(f"{what} needs about {need / 2**30:.1f} GiB of disk, "
                               f"{free / 2**30:.1f} GiB free in {path}")
