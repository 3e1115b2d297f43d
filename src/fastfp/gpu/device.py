"""Where the GPU work runs: the array module, clear errors, memory, kernel launches.

``device="cuda"`` runs on the current CUDA device through CuPy, or, with
``NUMBA_ENABLE_CUDASIM=1`` set before numba is first imported, in numba's CUDA simulator
on NumPy arrays. It never falls back to the CPU: without CuPy, numba-cuda or a GPU it
raises :class:`DeviceError`.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import numpy as np

from ..errors import DeviceError, DeviceMemoryError

THREADS_PER_BLOCK = 128


def simulated() -> bool:
    """True when numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM`` set and not 0)."""
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


def array_module():
    """The array module for device arrays: ``numpy`` under the simulator, else ``cupy``.

    Raises :class:`DeviceError` naming what is missing: CuPy, a CUDA GPU, numba-cuda,
    or a NumPy that numba-cuda supports.
    """
    if simulated():
        return np
    try:
        import cupy
    except ImportError as err:
        raise DeviceError(
            "device='cuda' needs CuPy, which is not installed: pip install cupy-cuda13x "
            "(CUDA 13) or cupy-cuda12x (CUDA 12), or use device='cpu'"
        ) from err
    try:
        n_gpus = cupy.cuda.runtime.getDeviceCount()
        detail = ""
    except Exception as err:  # CUDARuntimeError: no driver, or no device
        n_gpus, detail = 0, f" ({type(err).__name__}: {err})"
    if n_gpus == 0:
        raise DeviceError(
            f"device='cuda' found no CUDA GPU{detail}; use device='cpu' (or, for testing, "
            "NUMBA_ENABLE_CUDASIM=1 runs the GPU kernels in numba's simulator)"
        )
    try:
        from numba import cuda
    except ImportError as err:
        raise DeviceError("device='cuda' needs numba-cuda: pip install 'numba-cuda[cu13]'") from err
    try:
        # numba-cuda loads these NumPy registries at its first kernel compilation, where a
        # NumPy it does not support fails (0.30 with NumPy 2.5: np.row_stack is gone)
        import numba.cuda.cudaimpl  # noqa: F401
    except AttributeError as err:
        from importlib.metadata import version

        raise DeviceError(
            f"device='cuda': numba-cuda {version('numba-cuda')} does not work with NumPy {np.__version__} "
            f"({err}): pip install 'numpy<2.5' (what the gpu extra asks for)"
        ) from err
    if not cuda.is_available():
        raise DeviceError("device='cuda': CuPy sees a GPU but numba-cuda does not (cuda.is_available() is False)")
    return cupy


def free_bytes(xp) -> int:
    """Bytes that new device arrays can take: the GPU's free memory plus what CuPy's pool
    holds unused; under the simulator, the host's available memory."""
    if xp is np:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    free, _ = xp.cuda.Device().mem_info
    return int(free + xp.get_default_memory_pool().free_bytes())


def check_room(xp, nbytes: int, what: str) -> None:
    """Raise :class:`DeviceMemoryError` if ``nbytes`` for ``what`` exceed :func:`free_bytes`."""
    free = free_bytes(xp)
    if nbytes > free:
        raise DeviceMemoryError(
            f"device='cuda': {what} need {nbytes / 2**30:.2f} GiB, only {free / 2**30:.2f} GiB "
            "of GPU memory is free; featurize fewer frames per call"
        )


def launch(kernel, n_threads: int, *args, threads_per_block: int = THREADS_PER_BLOCK) -> None:
    """Run ``kernel`` on ``n_threads`` threads (at least one block of
    ``threads_per_block``) with ``args``, on CuPy's current stream. Under numba's CUDA
    simulator one kernel runs at a time (its kernel context is global to the process,
    so a kernel launched from a second thread meanwhile, as the products of recomputed
    derivatives in a training step while the loader thread featurizes, would fail)."""
    blocks = max(1, -(-n_threads // threads_per_block))
    if simulated():
        with _SIMULATOR_LOCK:
            kernel[blocks, threads_per_block, 0](*args)
        return
    kernel[blocks, threads_per_block, _stream()](*args)


_SIMULATOR_LOCK = threading.Lock()


def _stream():
    """numba's handle of CuPy's current stream (0, the default stream, under the simulator)."""
    if simulated():
        return 0
    import cupy
    from numba import cuda

    ptr = cupy.cuda.get_current_stream().ptr
    if ptr not in _STREAMS:
        _STREAMS[ptr] = cuda.external_stream(ptr) if ptr else cuda.default_stream()
    return _STREAMS[ptr]


_STREAMS: dict = {}
#: tables on the device, by (id of the host tables, floating type): (host tables, device tables)
_TABLES: dict = {}


def on_device(xp, tables, real):
    """The kernel ``tables`` (:mod:`fastfp.kernels.tables`) on the device, floating values
    in ``real``, copied once per tables and type (the last few kept)."""
    key = (id(tables), np.dtype(real).name, id(xp))
    if key not in _TABLES or _TABLES[key][0] is not tables:
        if len(_TABLES) >= 8:
            _TABLES.pop(next(iter(_TABLES)))
        _TABLES[key] = (tables, tables.on(xp, real))
    return _TABLES[key][1]


@contextmanager
def side_stream():
    """Queue the GPU work of the ``with`` block (CuPy's and the kernels') on fastfp's
    non-blocking CUDA stream, after the work already queued on the default stream, and
    wait for it at the end of the block.

    For work that overlaps what another thread queues meanwhile on the default stream
    (the next training batch featurized during the current training step): the wait at
    the start keeps the stream off device memory that work queued earlier on the default
    stream may still read (CuPy hands memory freed on a stream back to that stream only),
    the wait at the end makes the results ready for any stream. One stream for the
    process, so that the memory CuPy keeps for it is reused from one epoch's loader
    thread to the next. Under the simulator there are no streams: the block just runs.
    """
    if simulated():
        yield
        return
    cupy = array_module()
    with _SIDE_LOCK:
        if "stream" not in _SIDE:
            _SIDE["stream"] = cupy.cuda.Stream(non_blocking=True)
    stream = _SIDE["stream"]
    queued = cupy.cuda.Event(disable_timing=True)
    queued.record(cupy.cuda.Stream.null)
    stream.wait_event(queued)
    with stream:
        yield
    stream.synchronize()


_SIDE: dict = {}
_SIDE_LOCK = threading.Lock()


def synchronize() -> None:
    """Wait until the GPU has finished all work queued so far (for timing); nothing to
    wait for under the simulator."""
    if not simulated():
        array_module().cuda.Device().synchronize()
