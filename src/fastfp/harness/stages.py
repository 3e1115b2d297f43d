"""The pipeline stages, once, for every backend: what the benchmarks, ``fastfp bench``
and the profilers time.

A stage is built in two steps, so that only the measured work is timed::

    from fastfp.harness import stages
    frames = stages.load_bench_frames(100)             # the default workload, first 100 frames
    run = stages.build("featurize", "fastfp", frames, descriptor="gmpordernorm", derivatives=True)
    run()                                               # the measured work; returns its result

``build`` checks that the backend can run the stage, prepares the inputs (untimed) and
returns a zero-argument callable. It raises :class:`StageUnavailable` (a
``NotImplementedError``, so asv skips the benchmark) with the reason when the backend
is missing, the frames have no energies for a training stage, or the inputs would not
fit in memory.

Backends
--------
``"amptorch"``
    AMPTorch's own classes (``amptorch.descriptor.*``, ``FeatureScaler``,
    ``DataCollater``, ``AtomsDataset``, ``AtomsTrainer``), with
    :func:`fastfp.amptorch.install` not in effect.
``"fastfp"``
    fastfp's classes with the same interfaces and output formats
    (:mod:`fastfp.amptorch`), or AMPTorch's own code with :func:`fastfp.amptorch.install`
    in effect where the stage is AMPTorch's (collation, end-to-end preprocessing, training).
``"cupy"``
    reserved for a GPU backend; :func:`available` gives the reason it cannot run.

Stages (:data:`STAGES`)
-----------------------
``featurize``   ``prepare_fingerprints`` of a descriptor (``gmpordernorm``, ``gmp``,
                ``gaussian``), fingerprints only or with derivatives, 256 frames per
                call, results of a chunk dropped before the next (memory stays bounded);
``scale``       feature + target scaling fitted and applied to the same ``Data`` list
                (AMPTorch's ``FeatureScaler``/``TargetScaler`` vs fastfp's);
``store_write`` / ``store_read``  the fastfp HDF5 store (AMPTorch has no comparable store);
``collate``     every batch of 16 ``Data`` (``DataCollater``: AMPTorch's
                ``sparse_block_diag`` vs fastfp's);
``force_contraction``  on every collated batch of 16: forces from dE/dG (a leaf
                tensor) and the derivative matrix, a loss of the forces, ``backward()``
                (AMPTorch's ``torch.sparse.mm`` expression from ``amptorch/model.py`` vs
                :func:`fastfp.amptorch.forces.contract_forces`); the "amptorch" side
                is plain torch but, like every "amptorch" stage, runs only where
                AMPTorch is installed, so its column never shows an imitation;
``train_epoch`` one epoch of ``AtomsTrainer`` (SingleNN 3×20, batch 16, forces,
                force_coefficient 0.05) without / with ``install()``;
``preprocess``  end to end: ``AtomsDataset(frames, ...)`` without / with ``install()``
                (fingerprints, derivatives, ``Data``, feature and target scaling).

Inputs
------
:func:`load_bench_frames` reads the frames the benchmarks use: the first N frames of the
default 16,000-frame workload (:mod:`fastfp.harness.workloads`), or of the file/directory named
by ``FASTFP_BENCH_DATA``. Descriptor settings for their elements come from
:func:`descriptor_setup`; GMP pseudodensities are read from ``FASTFP_GMP_DIR`` or the
``gmp/`` folder beside the shared data directory (never shipped with fastfp).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.util
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

BACKENDS = ("amptorch", "fastfp", "cupy")
DESCRIPTORS = ("gmpordernorm", "gmp", "gaussian")

#: the default benchmark workload (:func:`fastfp.harness.workloads.load_workload`) and its size
DEFAULT_WORKLOAD = "water-metal"
WORKLOAD_FRAMES = 16000

ENV_DATA = "FASTFP_BENCH_DATA"
ENV_MAX_FRAMES = "FASTFP_BENCH_MAX_FRAMES"
ENV_MEMORY = "FASTFP_BENCH_MEMORY_GB"
ENV_GMP_DIR = "FASTFP_GMP_DIR"

AMPTORCH_HINT = "see README 'Comparing with AMPTorch'"
NO_LABELS = "frames have no energies/forces: training stages skipped"

#: frames per ``prepare_fingerprints`` call in the featurize stage (both backends)
CHUNK_FRAMES = 256
#: AMPTorch's default scaling in ``AtomsTrainer``
SCALING = {"type": "normalize", "range": (0, 1), "elementwise": True}
#: the training stage's model and optimiser
TRAIN_MODEL = {"name": "singlenn", "get_forces": True, "num_layers": 3, "num_nodes": 20}
TRAIN_OPTIM = {"device": "cpu", "force_coefficient": 0.05, "lr": 1e-2, "batch_size": 16, "epochs": 1}
BATCH_SIZE = 16


class StageUnavailable(NotImplementedError):
    """A stage that cannot run here; the message says why. A ``NotImplementedError``,
    which asv takes as "skip this benchmark"."""


# -- backends --------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def available(backend: str) -> str | None:
    """``None`` if ``backend`` can be used here, else the reason it cannot."""
    if backend == "fastfp":
        try:
            importlib.import_module("fastfp.amptorch.descriptors")
        except Exception as exc:  # pragma: no cover - fastfp itself broken
            return f"fastfp cannot be imported: {type(exc).__name__}: {exc}"
        return None
    if backend == "amptorch":
        if importlib.util.find_spec("amptorch") is None:
            return f"AMPTorch is not installed: {AMPTORCH_HINT}"
        try:
            importlib.import_module("amptorch.trainer")
            importlib.import_module("amptorch.descriptor.GMPOrderNorm")
        except Exception as exc:
            return f"AMPTorch cannot be imported ({type(exc).__name__}: {exc}): {AMPTORCH_HINT}"
        return None
    if backend == "cupy":
        try:
            cupy = importlib.import_module("cupy")
            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            return f"CuPy/GPU not available ({type(exc).__name__}: {exc})"
        if n < 1:
            return "CuPy/GPU not available (no CUDA device)"
        return "CuPy/GPU not available: fastfp has no CuPy backend yet (reserved)"
    raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")


def require(backend: str) -> None:
    """Raise :class:`StageUnavailable` with the reason if ``backend`` cannot be used."""
    reason = available(backend)
    if reason:
        raise StageUnavailable(reason)


def _require_torch() -> None:
    for module in ("torch", "torch_geometric"):
        if importlib.util.find_spec(module) is None:
            raise StageUnavailable(f"{module} is not installed: pip install -e '.[torch]'")


@contextlib.contextmanager
def _fastfp_installed(state: bool):
    """``fastfp.amptorch.install()`` in effect (``state``) or not, restored afterwards."""
    if available("amptorch"):  # nothing to patch
        yield
        return
    from fastfp.amptorch import patching

    was = patching.installed()
    if state and not was:
        patching.install()
    elif not state and was:
        patching.uninstall()
    try:
        yield
    finally:
        if was and not patching.installed():
            patching.install()
        elif not was and patching.installed():
            patching.uninstall()


# -- inputs: frames --------------------------------------------------------------------


def data_source() -> str:
    """The frames the benchmarks use: ``FASTFP_BENCH_DATA`` or the default workload."""
    return os.environ.get(ENV_DATA) or DEFAULT_WORKLOAD


def max_frames() -> int | None:
    """``FASTFP_BENCH_MAX_FRAMES`` (benchmarks skip larger frame counts), or None."""
    text = os.environ.get(ENV_MAX_FRAMES, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{ENV_MAX_FRAMES} must be an integer, got {text!r}") from None
    return value if value > 0 else None


def shared_dir() -> Path:
    """The shared data directory (:func:`fastfp.harness.workloads.shared_data_dir`)."""
    from fastfp.harness.workloads import shared_data_dir

    found = shared_data_dir()
    # not found: ../shared/data beside a source checkout, named in error messages
    return Path(found) if found is not None else Path(__file__).resolve().parents[4] / "shared" / "data"


def gmp_dir() -> Path:
    """Folder with ``psp_v3/`` and ``valence_gaussians/``: ``FASTFP_GMP_DIR`` or the
    ``gmp/`` folder beside the shared data directory."""
    env = os.environ.get(ENV_GMP_DIR)
    if env:
        return Path(env)
    return shared_dir().parent / "gmp"


def _gmp_missing(what: str) -> FileNotFoundError:
    default = shared_dir().parent / "gmp"
    env = os.environ.get(ENV_GMP_DIR)
    return FileNotFoundError(
        f"GMP pseudodensities not found: {what}. Set {ENV_GMP_DIR} to a folder with psp_v3/ "
        f"and valence_gaussians/ (AMPTorch's pseudodensity files; fastfp does not ship them)"
        + (f" ({ENV_GMP_DIR}={env!r})" if env else f", or put them at {default}")
    )


def check_gmp_dir() -> Path:
    """:func:`gmp_dir`, or ``FileNotFoundError`` naming ``FASTFP_GMP_DIR`` and the default folder."""
    d = gmp_dir()
    for sub in ("psp_v3", "valence_gaussians"):
        if not (d / sub).is_dir():
            raise _gmp_missing(f"no folder {d / sub}")
    return d


def _is_workload(source: str) -> bool:
    """Whether ``source`` names a workload (``name`` or ``name:N``) rather than a path."""
    if Path(source).exists():
        return False
    from fastfp.harness.workloads import list_workloads

    return source.split(":", 1)[0] in list_workloads()


def load_bench_frames(n: int | None = None, source: str | None = None) -> list:
    """The first ``n`` frames (all if None) of ``source`` (default :func:`data_source`):
    a workload name, optionally ``name:N`` (:func:`fastfp.harness.workloads.load_frames`; the
    default workload is generated once, then read from its cache), an ASE-readable file
    or a directory of them. Raises :class:`StageUnavailable` if there are fewer than
    ``n`` frames."""
    from fastfp.harness import workloads

    source = source or data_source()
    name, _, size = source.partition(":")
    if not Path(source).exists() and name == workloads.REFERENCE:
        total = int(size) if size.isdigit() else WORKLOAD_FRAMES
        if n is not None and n > total:
            raise StageUnavailable(f"{source!r} has {total} frames, fewer than {n}")
        frames = workloads.load_workload(name, n_frames=total if n is None else n, progress=False)
    elif Path(source).is_file():
        import ase.io

        frames = ase.io.read(source, index=slice(0, n))
        if not isinstance(frames, list):
            frames = [frames]
    else:
        frames = workloads.load_frames(source)
    frames = list(frames)
    if n is not None:
        if len(frames) < n:
            raise StageUnavailable(f"{source!r} has {len(frames)} frames, fewer than {n}")
        frames = frames[:n]
    return frames


def elements_of(frames) -> list[str]:
    """Sorted chemical symbols present in ``frames``."""
    return sorted({s for a in frames for s in a.get_chemical_symbols()})


def labels_reason(frames) -> str | None:
    """None if every frame has an energy and forces (read without constraints, as
    AMPTorch does), else :data:`NO_LABELS`."""
    for atoms in frames:
        calc = atoms.calc
        if calc is None:
            return NO_LABELS
        try:
            results = getattr(calc, "results", {})
            if "energy" not in results and "free_energy" not in results:
                atoms.get_potential_energy(apply_constraint=False)
            if "forces" not in results:
                atoms.get_forces(apply_constraint=False)
        except Exception:
            return NO_LABELS
    return None


_UNSET = object()


def describe_data(source: str | None = None, limit=_UNSET, frames=None) -> dict:
    """Load (and, for a workload, generate and cache) the benchmark frames once; return
    what benchmark setups need: ``source``, ``n_frames`` available (at most ``limit``,
    default ``FASTFP_BENCH_MAX_FRAMES``), ``elements``, ``labels`` (None or the reason
    there are none), ``atoms_per_frame`` (mean). Used by asv's ``setup_cache``.
    ``frames``: the frames already loaded."""
    source = source or data_source()
    cap = max_frames() if limit is _UNSET else limit
    if frames is None:
        frames = None if cap is None else _first_frames(source, cap)
        if frames is None:
            frames = load_bench_frames(None, source)
    frames = list(frames)[:cap] if cap else list(frames)
    if not frames:
        raise ValueError(f"no frames in {source!r}")
    return {
        "source": source,
        "n_frames": len(frames),
        "elements": elements_of(frames),
        "labels": labels_reason(frames),
        "atoms_per_frame": float(np.mean([len(a) for a in frames])),
    }


def _first_frames(source: str, n: int):
    """The first ``n`` frames, or all of them if there are fewer (for a workload: only
    what is needed is built)."""
    try:
        return load_bench_frames(n, source)
    except StageUnavailable:
        return None


def supercell(frame, target_atoms: int):
    """``frame`` repeated along its first two cell vectors to about ``target_atoms``
    atoms (a slab stays a slab; bulk grows in-plane)."""
    k = max(1, round(target_atoms / len(frame)))
    nx = max(1, int(np.floor(np.sqrt(k))))
    ny = max(1, round(k / nx))
    big = frame.repeat((nx, ny, 1))
    big.calc = None
    return big


# -- descriptor settings -------------------------------------------------------------

GMPORDERNORM_SIGMAS = [0.4, 0.8, 1.2, 1.6, 2.0]
#: MCSH orders/groups and sigmas of ../shared/reference/gmp_groups.npz's config
GMP_SIGMAS = [0.2, 0.69, 1.1, 1.66, 2.66]
GMP_GROUPS = {"0": [1], "1": [1], "2": [1, 2]}


def _psp_v3(elements) -> dict:
    base = check_gmp_dir() / "psp_v3"
    out = {}
    for el in elements:
        path = base / f"{el}_pseudodensity.g"
        if not path.is_file():
            raise _gmp_missing(f"no {path.name} in {base}")
        out[el] = str(path)
    return out


def _valence(elements) -> dict:
    base = check_gmp_dir() / "valence_gaussians"
    out = {}
    for el in elements:
        found = sorted(base.glob(f"{el}_pseudodensity_*.g"))
        if not found:
            raise _gmp_missing(f"no {el}_pseudodensity_<n>.g in {base}")
        out[el] = str(found[0])
    return out


def descriptor_setup(descriptor: str, elements: Sequence[str]) -> tuple:
    """AMPTorch's ``descriptor_setup`` ``(fp_scheme, fp_params, cutoff_params, elements)``
    of the benchmark settings for ``elements``:

    * ``gmpordernorm``: MCSH orders 0–3 × sigmas 0.4–2.0 Å (5), cutoff 8 Å, psp_v3
      pseudodensities;
    * ``gmp``: MCSH orders 0, 1, 2 (groups 1; 1; 1, 2) × sigmas 0.2–2.66 Å (5), cutoff 8 Å,
      valence-Gaussian pseudodensities;
    * ``gaussian``: G2 (4 etas 0.05–5 Å⁻², rs 0) + G4 (eta 0.005, zetas 1, 4, gammas ±1),
      cosine cutoff 6 Å.
    """
    elements = list(elements)
    if descriptor == "gmpordernorm":
        params = {"MCSHs": {"orders": [0, 1, 2, 3], "sigmas": list(GMPORDERNORM_SIGMAS)},
                  "cutoff": 8.0, "atom_gaussians": _psp_v3(elements)}
        return "gmpordernorm", params, {}, elements
    if descriptor == "gmp":
        params = {"MCSHs": {order: {"groups": list(groups), "sigmas": list(GMP_SIGMAS)}
                            for order, groups in GMP_GROUPS.items()},
                  "cutoff": 8.0, "atom_gaussians": _valence(elements)}
        return "gmp", params, {}, elements
    if descriptor == "gaussian":
        etas = np.logspace(np.log10(0.05), np.log10(5.0), num=4).tolist()
        params = {"default": {"G2": {"etas": etas, "rs_s": [0]},
                              "G4": {"etas": [0.005], "zetas": [1.0, 4.0], "gammas": [1.0, -1.0]},
                              "cutoff": 6}}
        return "gaussian", params, {"cutoff_func": "Cosine"}, elements
    raise ValueError(f"unknown descriptor {descriptor!r}; known: {', '.join(DESCRIPTORS)}")


def descriptor_config(descriptor: str, elements: Sequence[str]) -> dict:
    """:func:`descriptor_setup` as a fastfp config dict (:mod:`fastfp.config`)."""
    scheme, params, cutoff_params, els = descriptor_setup(descriptor, elements)
    return {"fp_scheme": scheme, "fp_params": params, "elements": els, "cutoff_params": cutoff_params}


def make_descriptor(backend: str, descriptor: str, elements: Sequence[str]):
    """The AMPTorch-interface descriptor object of ``backend``, as AMPTorch's
    ``construct_descriptor`` builds it."""
    scheme, params, cutoff_params, els = descriptor_setup(descriptor, elements)
    if backend == "amptorch":
        require("amptorch")
        from amptorch.dataset import construct_descriptor

        # the module attribute may be fastfp's while install() is in effect
        with _fastfp_installed(False):
            return construct_descriptor((scheme, params, cutoff_params, els))
    if backend == "fastfp":
        from fastfp.amptorch import descriptors

        if scheme == "gaussian":
            return descriptors.Gaussian(Gs=params, elements=els, **{k.lower(): v for k, v in cutoff_params.items()})
        cls = descriptors.GMPOrderNorm if scheme == "gmpordernorm" else descriptors.GMP
        return cls(MCSHs=params, elements=els)
    require(backend)
    raise StageUnavailable(f"no {descriptor} descriptor for backend {backend!r}")


# -- memory budget ---------------------------------------------------------------------


def memory_budget() -> float:
    """Bytes a stage's inputs may take: ``FASTFP_BENCH_MEMORY_GB`` or 70% of the memory
    available now."""
    env = os.environ.get(ENV_MEMORY)
    if env:
        return float(env) * 2**30
    try:
        import psutil

        return 0.7 * psutil.virtual_memory().available
    except ImportError:  # pragma: no cover
        return 0.7 * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


_SIZES: dict = {}


def _sizes_per_atom(frames, descriptor: str, elements) -> dict:
    """Measured with fastfp on up to eight frames spread over ``frames`` (a workload
    interleaves its systems): derivative entries (COO, AMPTorch layout) and derivative
    blocks per atom, and the fingerprint width."""
    frames = list(frames)
    sample = [frames[i] for i in sorted(set(np.linspace(0, len(frames) - 1, min(8, len(frames))).astype(int)))]
    key = (descriptor, tuple(elements), tuple(len(a) for a in sample),
           tuple(float(a.positions[0, 0]) for a in sample))
    if key not in _SIZES:
        desc = make_descriptor("fastfp", descriptor, elements)
        fps = desc.featurize(sample, derivatives=True)
        images = desc.image_dicts(fps, True)
        atoms = max(1, fps.fingerprints.shape[0])
        _SIZES[key] = {
            "nnz": sum(len(im["descriptor_primes"]["val"]) for im in images) / atoms,
            "blocks": len(fps.fprime_j) / atoms,
            "features": fps.n_features,
        }
    return _SIZES[key]


def estimate_bytes(stage: str, frames, descriptor: str = "gmpordernorm", elements=None) -> float:
    """Rough peak bytes of ``stage``'s inputs and results for ``frames``."""
    elements = elements or elements_of(frames)
    s = _sizes_per_atom(frames, descriptor, elements)
    atoms = sum(len(a) for a in frames)
    coo = atoms * (s["nnz"] * 24 + s["features"] * 8)  # int64 row, col + float64 value
    blocks = atoms * s["blocks"] * (s["features"] * 24 + 8)
    if stage in ("store_write",):
        return blocks
    if stage in ("scale", "collate", "force_contraction", "preprocess", "train_epoch"):
        return 1.5 * coo  # the Data list and transient copies
    return 0.0


def _check_memory(stage: str, frames, descriptor: str, elements) -> None:
    need = estimate_bytes(stage, frames, descriptor, elements)
    budget = memory_budget()
    if need > budget:
        raise StageUnavailable(
            f"{stage} on {len(frames)} frames needs about {need / 2**30:.1f} GiB "
            f"(derivative matrices), more than the {budget / 2**30:.1f} GiB allowed "
            f"({ENV_MEMORY} sets it)"
        )


def _check_disk(path: Path, need: float, what: str) -> None:
    free = shutil.disk_usage(path).free
    if need > 0.25 * free:
        raise StageUnavailable(f"{what} needs about {need / 2**30:.1f} GiB of disk, "
                               f"{free / 2**30:.1f} GiB free in {path}")


def _tempdir(owner) -> Path:
    d = Path(tempfile.mkdtemp(prefix="fastfp-bench-"))
    weakref.finalize(owner, shutil.rmtree, d, True)
    return d


class _Run:
    """The callable a stage returns; holds what its work needs (and temp files)."""

    def __init__(self, func: Callable[[], Any], stage: str, backend: str, **info):
        self._func = func
        self.stage = stage
        self.backend = backend
        self.info = info

    def __call__(self):
        return self._func()

    def __repr__(self) -> str:
        return f"<stage {self.stage} [{self.backend}] {self.info}>"


# -- stages ----------------------------------------------------------------------------


def _chunks(seq, size):
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


def _featurize(backend, frames, descriptor="gmpordernorm", derivatives=True, elements=None,
               collect=False, warm=True):
    desc = make_descriptor(backend, descriptor, elements)
    frames = list(frames)
    if backend == "fastfp" and warm:  # load the numba kernels (compiled and cached on first use)
        desc.prepare_fingerprints([_tiny(frames[0])], derivatives)

    def run():
        out = [] if collect else None
        atoms = 0
        for chunk in _chunks(frames, CHUNK_FRAMES):
            images = desc.prepare_fingerprints(chunk, derivatives, False, False, 1, None)
            atoms += sum(int(im["num_atoms"]) for im in images)
            if collect:
                out.extend(images)
            del images
        return out if collect else atoms

    return run


def _tiny(atoms, n: int = 8):
    """The first ``n`` atoms of ``atoms`` (same cell): enough to load the kernels."""
    small = atoms[: min(n, len(atoms))]
    small.calc = None
    return small


def _torch_setup():
    _require_torch()
    import torch

    torch.set_default_dtype(torch.float64)  # as AtomsTrainer does
    return torch


def _data_list(frames, descriptor, elements):
    """AMPTorch ``Data`` objects (fingerprints, derivatives, energy, forces) of ``frames``,
    made by fastfp (identical to AMPTorch's, see tests/test_amptorch_dropin.py)."""
    from fastfp.amptorch.data import images_to_data

    desc = make_descriptor("fastfp", descriptor, elements)
    return images_to_data(desc, list(frames), True, True, True, disable_tqdm=True)


def _scale(backend, frames, descriptor="gmpordernorm", elements=None, data=None):
    _torch_setup()
    data = data if data is not None else _data_list(frames, descriptor, elements)
    if backend == "amptorch":
        from amptorch.preprocessing import FeatureScaler, TargetScaler
    else:
        from fastfp.amptorch.scaling import FeatureScaler, TargetScaler

    def run():
        with _fastfp_installed(False):  # AMPTorch's own FeatureScaler.norm for "amptorch"
            return _fit_and_scale(data, FeatureScaler, TargetScaler)

    return run


def _fit_and_scale(data, feature_scaler, target_scaler):
    """What ``AtomsDataset.process`` does after conversion: fit both scalers on ``data``
    (forces on, :data:`SCALING`) and scale it in place. Returns ``data``."""
    features = feature_scaler(data, True, SCALING)
    targets = target_scaler(data, True)
    features.norm(data, disable_tqdm=True)
    targets.norm(data, disable_tqdm=True)
    return data


def _store_config(descriptor, elements):
    from fastfp.config import resolve_config

    return resolve_config(descriptor_config(descriptor, elements))


def _store_write(backend, frames, descriptor="gmpordernorm", derivatives=True, elements=None, owner=None):
    from fastfp.store import StoreWriter

    config = _store_config(descriptor, elements)
    desc = make_descriptor("fastfp", descriptor, elements)
    batches = [desc.featurize(chunk, derivatives=derivatives) for chunk in _chunks(list(frames), CHUNK_FRAMES)]
    directory = _tempdir(owner)
    _check_disk(directory, estimate_bytes("store_write", frames, descriptor, elements), "the store")
    path = directory / "bench.h5"

    def run():
        with StoreWriter(path, config, desc.n_features, derivatives) as writer:
            for fps in batches:
                writer.append(fps)
        return path

    return run


def _store_read(backend, frames, descriptor="gmpordernorm", derivatives=True, elements=None, owner=None,
                collect=False):
    from fastfp.store import featurize_to_store, open_store

    config = _store_config(descriptor, elements)
    directory = _tempdir(owner)
    _check_disk(directory, estimate_bytes("store_write", frames, descriptor, elements), "the store")
    path = directory / "bench.h5"
    featurize_to_store(list(frames), config, path, derivatives=derivatives, chunk_size=CHUNK_FRAMES)

    def run():
        with open_store(path) as store:
            if collect:
                return store.read_all()
            n = 0
            for fps in store.chunks(CHUNK_FRAMES):
                n += fps.n_frames
            return n

    return run


def _collate_like_amptorch(data_list, block_diag):
    """AMPTorch's ``DataCollater(train=True, forcetraining=True)`` with ``block_diag``
    (used for "fastfp" where AMPTorch is not installed)."""
    from torch_geometric.data import Batch

    mtxs = [d.fprimes for d in data_list]
    for d in data_list:
        d.fprimes = None
    batch = Batch.from_data_list(data_list)
    for d, m in zip(data_list, mtxs):
        d.fprimes = m
    batch.fprimes = block_diag(mtxs)
    return batch, [batch.energy, batch.forces]


def _collate(backend, frames, descriptor="gmpordernorm", elements=None, data=None, collect=False,
             batch_size=BATCH_SIZE):
    _torch_setup()
    data = data if data is not None else _data_list(frames, descriptor, elements)
    batches = list(_chunks(data, batch_size))
    use_amptorch = backend == "amptorch" or available("amptorch") is None
    if use_amptorch:
        from amptorch.dataset import DataCollater

        collater = DataCollater(train=True, forcetraining=True)
    else:
        from fastfp.amptorch.collate import sparse_block_diag

        def collater(batch):
            return _collate_like_amptorch(batch, sparse_block_diag)

    def run():
        out = []
        with _fastfp_installed(use_amptorch and backend == "fastfp"):
            for batch in batches:
                result = collater(batch)
                if collect:
                    out.append(result)
        return out if collect else len(batches)

    return run


def _amptorch_forces(fprimes, gradients):
    """AMPTorch's force contraction, verbatim from ``BPNN.forward`` and
    ``SingleNN.forward`` in AMPTorch's ``amptorch/model.py`` (AMPTorch 0.1, lines 202
    and 297: ``forces = -1 * torch.sparse.mm(batch.fprimes.t(), gradients.t()).view(-1, 3)``;
    tests/test_bench.py checks the installed file still has it)."""
    import torch

    return -1 * torch.sparse.mm(fprimes.t(), gradients.t()).view(-1, 3)


def _force_contraction(backend, frames, descriptor="gmpordernorm", elements=None, data=None, collect=False,
                       batch_size=BATCH_SIZE):
    """Forces from dE/dG and the derivative matrix of every collated batch, then a loss
    of the forces (sum of squares) and ``loss.backward()``: what each training step does
    with this product. dE/dG is a leaf (1, n_rows) tensor, as AMPTorch's ``gradients``
    (random values, seeded: the cost does not depend on them). Collation and the
    tensors are made in setup, once, the same way for both backends. ``collect``: per
    batch ``(dE/dG, forces, gradient of the loss by dE/dG)``."""
    torch = _torch_setup()
    # the batches as training sees them; fastfp's collation gives AMPTorch's matrices
    # (tests/test_bench.py), faster
    batches = _collate("fastfp", frames, descriptor, elements, data=data, collect=True, batch_size=batch_size)()
    matrices = [batch.fprimes for batch, _ in batches]
    del batches
    generator = torch.Generator().manual_seed(0)
    gradients = [torch.randn(1, m.shape[0], generator=generator, dtype=m.dtype).requires_grad_()
                 for m in matrices]
    if backend == "amptorch":
        contract = _amptorch_forces
    else:
        from fastfp.amptorch.forces import contract_forces as contract, warm_up

        warm_up()  # load the compiled kernel outside the timing

    def run():
        out = []
        for fprimes, dEdG in zip(matrices, gradients):
            dEdG.grad = None
            forces = contract(fprimes, dEdG)
            loss = (forces ** 2).sum()
            loss.backward()
            if collect:
                out.append((dEdG.detach(), forces.detach(), dEdG.grad))
        return out if collect else len(matrices)

    return run


def _train_config(frames, descriptor, elements, run_dir) -> dict:
    scheme, params, cutoff_params, els = descriptor_setup(descriptor, elements)
    dataset = {"raw_data": list(frames), "val_split": 0, "fp_scheme": scheme, "fp_params": params,
               "elements": els, "save_fps": False, "scaling": dict(SCALING)}
    if cutoff_params:
        dataset["cutoff_params"] = cutoff_params
    return {
        "model": dict(TRAIN_MODEL),
        "optim": dict(TRAIN_OPTIM),
        "dataset": dataset,
        "cmd": {"debug": True, "run_dir": str(run_dir), "seed": 1, "identifier": "bench",
                "verbose": False, "logger": False},
    }


def _train_epoch(backend, frames, descriptor="gmpordernorm", elements=None, owner=None):
    require("amptorch")
    _torch_setup()
    from amptorch.trainer import AtomsTrainer

    run_dir = _tempdir(owner)
    trainer = AtomsTrainer(_train_config(frames, descriptor, elements, run_dir))
    cwd = os.getcwd()
    try:
        # preprocessing is not what this stage measures: done the fast way for both
        # backends (the Data are the same, tests/test_amptorch_dropin.py)
        with contextlib.redirect_stdout(open(os.devnull, "w")), _fastfp_installed(True):
            trainer.load()
            trainer.net.initialize()
    finally:
        os.chdir(cwd)  # AtomsTrainer.load_config chdirs into run_dir

    def run():
        with _fastfp_installed(backend == "fastfp"):
            trainer.net.partial_fit(trainer.train_dataset, None)
        return float(trainer.net.history[-1]["train_loss"])

    run.trainer = trainer
    return run


def _preprocess(backend, frames, descriptor="gmpordernorm", elements=None):
    _torch_setup()
    scheme, params, cutoff_params, els = descriptor_setup(descriptor, elements)
    frames = list(frames)
    if backend == "amptorch" or available("amptorch") is None:
        from amptorch.dataset import AtomsDataset

        if backend == "fastfp":  # load the numba kernels outside the timing
            _featurize("fastfp", frames[:1], descriptor, True, elements)  # (warms up on a few atoms)

        def run():
            with _fastfp_installed(backend == "fastfp"):
                dataset = AtomsDataset(list(frames), (scheme, copy.deepcopy(params), dict(cutoff_params), els),
                                       forcetraining=True, save_fps=False, scaling=dict(SCALING))
            return dataset.data_list

        return run

    # fastfp without AMPTorch: what AtomsDataset.process does under install()
    from fastfp.amptorch.data import images_to_data
    from fastfp.amptorch.scaling import FeatureScaler, TargetScaler

    desc = make_descriptor("fastfp", descriptor, elements)
    desc.prepare_fingerprints([_tiny(frames[0])], True)

    def run():
        data = images_to_data(desc, list(frames), True, True, True, disable_tqdm=True)
        return _fit_and_scale(data, FeatureScaler, TargetScaler)

    return run


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its name, a title for tables, what it needs, its builder."""

    name: str
    title: str
    builder: Callable
    needs_labels: bool = False
    needs_torch: bool = False
    #: backends that can run it at all (others: StageUnavailable with ``why_not``)
    backends: tuple = ("amptorch", "fastfp")
    why_not: str = ""
    #: the fastfp side runs inside AMPTorch's code (needs AMPTorch installed)
    fastfp_needs_amptorch: bool = False
    #: the memory check (:func:`estimate_bytes`) applies
    memory_checked: bool = False


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("featurize", "featurize", _featurize),
        Stage("scale", "feature + target scaling", _scale, needs_labels=True, needs_torch=True,
              memory_checked=True),
        Stage("store_write", "store write", _store_write, backends=("fastfp",),
              why_not="AMPTorch has no fingerprint store comparable to fastfp's (its save_fps HDF5 "
                      "cache is one file per image, read back inside prepare_fingerprints): not compared",
              memory_checked=True),
        Stage("store_read", "store read", _store_read, backends=("fastfp",),
              why_not="AMPTorch has no fingerprint store comparable to fastfp's (its save_fps HDF5 "
                      "cache is one file per image, read back inside prepare_fingerprints): not compared"),
        Stage("collate", "collate (batches of 16)", _collate, needs_labels=True, needs_torch=True,
              memory_checked=True),
        Stage("force_contraction", "force contraction, forward + backward", _force_contraction,
              needs_labels=True, needs_torch=True, memory_checked=True),
        Stage("train_epoch", "training epoch", _train_epoch, needs_labels=True, needs_torch=True,
              fastfp_needs_amptorch=True, memory_checked=True),
        Stage("preprocess", "end-to-end preprocessing", _preprocess, needs_labels=True, needs_torch=True,
              memory_checked=True),
    )
}


def build(stage: str, backend: str, frames, **options) -> Callable[[], Any]:
    """Prepare ``stage`` for ``backend`` on ``frames`` and return the zero-argument
    callable that does the measured work (and returns its result).

    Options: ``descriptor`` (``"gmpordernorm"``), ``elements`` (default: those of
    ``frames``; pass the data set's to keep settings equal across subsets),
    ``derivatives`` (featurize, store), ``collect`` (featurize, store_read, collate,
    force_contraction: return the full results instead of a count, for comparisons),
    ``data`` (scale, collate, force_contraction: a ready ``Data`` list, modified in
    place by scale), ``batch_size`` (collate, force_contraction: 16), ``check_memory`` (True).
    Raises :class:`StageUnavailable` with the reason if it cannot run here.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    spec = STAGES[stage]
    require(backend)
    if backend not in spec.backends:
        raise StageUnavailable(spec.why_not or f"{stage} has no {backend} implementation")
    if spec.fastfp_needs_amptorch and backend == "fastfp":
        reason = available("amptorch")
        if reason:
            raise StageUnavailable(f"{spec.title} runs AMPTorch's AtomsTrainer with fastfp.amptorch.install(); {reason}")
    if spec.needs_torch:
        _require_torch()
    if backend == "fastfp" and available("amptorch") is None:
        importlib.import_module("fastfp.amptorch.patching")  # here, so that no stage times its imports
    frames = list(frames)
    if not frames:
        raise ValueError("no frames")
    if spec.needs_labels:
        reason = labels_reason(frames)
        if reason:
            raise StageUnavailable(reason)
    options = dict(options)
    descriptor = options.setdefault("descriptor", "gmpordernorm")
    if options.get("elements") is None:
        options["elements"] = elements_of(frames)
    check = options.pop("check_memory", True)
    if check and spec.memory_checked and options.get("data") is None:
        _check_memory(stage, frames, descriptor, options["elements"])
    run = _Run(None, stage, backend, frames=len(frames), **{k: v for k, v in options.items()
                                                             if k in ("descriptor", "derivatives")})
    if "owner" in spec.builder.__code__.co_varnames:
        options["owner"] = run  # temp files live as long as the callable
    run._func = spec.builder(backend, frames, **options)
    return run
