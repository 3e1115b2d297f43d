"""What can run here, and why not: the backends the harness compares.

``"amptorch"``
    AMPTorch's own classes (``amptorch.descriptor.*``, ``FeatureScaler``,
    ``DataCollater``, ``AtomsDataset``, ``AtomsTrainer``), with
    :func:`fastfp.amptorch.install` not in effect.
``"amptorch-patched"``
    AMPTorch with fastfp's patch series (``patches/``), built from ``$FASTFP_AMPTORCH_SRC``
    by the harness: its own code with ``config["dataset"]["fp_backend"] = "fastfp"``,
    no :func:`fastfp.amptorch.install`, in a worker process beside an unpatched AMPTorch
    (:mod:`fastfp.harness.patched`).
``"fastfp"``
    fastfp's classes with the same interfaces and output formats
    (:mod:`fastfp.amptorch`), or AMPTorch's own code with :func:`fastfp.amptorch.install`
    in effect where the stage is AMPTorch's (collation, end-to-end preprocessing, training).
``"cupy"``
    fastfp on a CUDA GPU (``device="cuda"``, :mod:`fastfp.gpu`): CuPy arrays, numba-cuda
    kernels. Not under numba's CUDA simulator, whose times are no GPU's.

A stage that cannot run raises :class:`StageUnavailable` with the reason: a
``NotImplementedError``, which asv takes as "skip this benchmark".
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import shutil
from pathlib import Path

BACKENDS = ("amptorch", "amptorch-patched", "fastfp", "cupy")

#: where the README explains how to install AMPTorch beside fastfp
AMPTORCH_HINT = "see README 'Comparing with AMPTorch'"
#: AMPTorch master fastfp's patch series is made against
BASE = "02e5af3639484feda2a01a4e721f434ad54a70a1"
#: the environment variable naming an AMPTorch git checkout at BASE (``amptorch-patched``)
SRC_ENV = "FASTFP_AMPTORCH_SRC"
#: the environment variable naming the folder of the series (``patches/`` of a fastfp
#: checkout; ``benchmarks/common.py`` and ``scripts/train_epoch.py`` set it from theirs)
PATCHES_ENV = "FASTFP_AMPTORCH_PATCHES"


class StageUnavailable(NotImplementedError):
    """A stage that cannot run here; the message says why. A ``NotImplementedError``,
    which asv takes as "skip this benchmark"."""


@functools.lru_cache(maxsize=None)
def why_unavailable(backend: str) -> str | None:
    """The reason ``backend`` cannot be used here, or None if it can. Raises
    ``ValueError`` for an unknown backend."""
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
    if backend == "amptorch-patched":
        return why_patched_unavailable()
    if backend == "cupy":
        if importlib.util.find_spec("numba_cuda") is None and importlib.util.find_spec("cupy") is None:
            return "no GPU backend here: CuPy and numba-cuda are not installed (pip install -e '.[gpu]')"
        from fastfp.errors import DeviceError
        from fastfp.gpu.device import array_module, simulated

        if simulated():
            return "numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM): its times are not a GPU's"
        try:
            array_module()
        except DeviceError as exc:
            return str(exc)
        return None
    raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")


def patches() -> list[Path]:
    """The files of fastfp's AMPTorch patch series, in order: in ``$FASTFP_AMPTORCH_PATCHES``,
    else in the ``patches/`` folder of the fastfp checkout holding the working directory;
    empty if there is none."""
    if os.environ.get(PATCHES_ENV):
        return sorted(Path(os.environ[PATCHES_ENV]).glob("*.patch"))
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "pyproject.toml").is_file() and list((folder / "patches").glob("0001-*.patch")):
            return sorted((folder / "patches").glob("*.patch"))
    return []


def patched_imported() -> bool:
    """Whether the AMPTorch this process imports has the series (``amptorch.fp_backends``)."""
    try:
        return importlib.util.find_spec("amptorch.fp_backends") is not None
    except ModuleNotFoundError:
        return False


def why_patched_unavailable() -> str | None:
    """Why ``amptorch-patched`` cannot run here, or None (not cached: reads the
    environment): this process's AMPTorch has the series, or the harness can build it
    from ``$FASTFP_AMPTORCH_SRC`` (:mod:`fastfp.harness.patched`)."""
    if patched_imported():
        return None
    source = os.environ.get(SRC_ENV)
    if not source:
        return (f"{SRC_ENV} is not set: point it at an AMPTorch git checkout at {BASE[:7]} to benchmark AMPTorch "
                "with fastfp's patch series (patches/), built by the harness into its cache")
    if not Path(source, ".git").exists():
        return f"{SRC_ENV}={source} is not a git checkout of AMPTorch"
    if not patches():
        return (f"no patch series: set {PATCHES_ENV} to the patches/ folder of a fastfp checkout, or run from "
                "inside one")
    if shutil.which("git") is None:
        return "git is not installed (the harness applies the series with git am)"
    for module in ("torch", "torch_geometric", "torch_scatter", "skorch", "cffi", "lmdb", "scipy"):
        if importlib.util.find_spec(module) is None:
            return f"AMPTorch needs {module}, which is not installed here"
    return None


def is_available(backend: str) -> bool:
    """Whether ``backend`` can be used here (:func:`why_unavailable` gives the reason)."""
    return why_unavailable(backend) is None


def missing_torch() -> str | None:
    """Why the torch stages cannot run (torch or torch_geometric missing), or None."""
    for module in ("torch", "torch_geometric"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: pip install -e '.[torch]'"
    return None


@contextlib.contextmanager
def fastfp_installed(state: bool):
    """``fastfp.amptorch.install()`` in effect (``state``) or not, restored afterwards;
    nothing to do where AMPTorch is not installed."""
    if not is_available("amptorch"):
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
