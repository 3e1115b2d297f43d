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

BACKENDS = ("amptorch", "amptorch-patched", "fastfp", "cupy")

#: where the README explains how to install AMPTorch beside fastfp
AMPTORCH_HINT = "see README 'Comparing with AMPTorch'"


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
        from .patched import why_unavailable as why_not_patched

        return why_not_patched()
    if backend == "cupy":
        if importlib.util.find_spec("numba_cuda") is None and importlib.util.find_spec("cupy") is None:
            return "no GPU backend here: CuPy and numba-cuda are not installed (pip install -e '.[gpu]')"
        from fastfp.gpu.device import DeviceError, array_module, simulated

        if simulated():
            return "numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM): its times are not a GPU's"
        try:
            array_module()
        except DeviceError as exc:
            return str(exc)
        return None
    raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")


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
