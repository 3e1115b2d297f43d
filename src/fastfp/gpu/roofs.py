"""The device's roofs, by micro-benchmark, and timing device work.

:func:`measure_roofs` measures what the GPU kernels' shares are taken against
(``scripts/gpu_check.py``): the rate of fused multiply-adds and of exps in float64 and
float32, and of writes to device memory; :func:`timing` gives the device and wall
seconds of a block of code.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import numpy as np
from numba import cuda

from .device import array_module, simulated

#: independent chains per thread (enough to hide the latency of each operation)
_CHAINS = 8


@cuda.jit
def _fma(out, n, b, c):
    """``_CHAINS`` chains of ``n`` fused multiply-adds a = a b + c per thread."""
    i = cuda.grid(1)
    a0 = out[i]
    a1 = a0 + b
    a2 = a0 + c
    a3 = a1 + c
    a4 = a2 + b
    a5 = a3 + b
    a6 = a4 + c
    a7 = a5 + c
    for _ in range(n):
        a0 = a0 * b + c
        a1 = a1 * b + c
        a2 = a2 * b + c
        a3 = a3 * b + c
        a4 = a4 * b + c
        a5 = a5 * b + c
        a6 = a6 * b + c
        a7 = a7 * b + c
    out[i] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7


@cuda.jit
def _exp(out, n, b):
    """Four chains of ``n`` exps a = exp(a b) per thread."""
    i = cuda.grid(1)
    a0 = out[i]
    a1 = a0 + b
    a2 = a1 + b
    a3 = a2 + b
    for _ in range(n):
        a0 = math.exp(a0 * b)
        a1 = math.exp(a1 * b)
        a2 = math.exp(a2 * b)
        a3 = math.exp(a3 * b)
    out[i] = a0 + a1 + a2 + a3


@cuda.jit
def _fill(out, value):
    for k in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[k] = value


@contextmanager
def timing():
    """A dict with the ``"device"`` and ``"wall"`` seconds of the ``with`` block at its
    end: device work queued on CuPy's current stream (CUDA events, the device idle at
    the start), wall time on the host. Under the simulator both are wall seconds."""
    times = {}
    if simulated():
        start = time.perf_counter()
        yield times
        times["device"] = times["wall"] = time.perf_counter() - start
        return
    cupy = array_module()
    cupy.cuda.Device().synchronize()
    begin, end = cupy.cuda.Event(), cupy.cuda.Event()
    start = time.perf_counter()
    begin.record()
    yield times
    end.record()
    end.synchronize()
    times["wall"] = time.perf_counter() - start
    times["device"] = cupy.cuda.get_elapsed_time(begin, end) / 1e3


def _best_seconds(run, repeats: int = 3) -> float:
    """The least device seconds of ``repeats`` calls of ``run()``."""
    best = math.inf
    for _ in range(repeats):
        with timing() as times:
            run()
        best = min(best, times["device"])
    return best


def measure_roofs() -> dict[str, float]:
    """The current device's rates, best of three: ``"fp64"``, ``"fp32"`` (flop/s of
    independent fused multiply-adds, 2 flops each), ``"exp64"``, ``"exp32"`` (exps per
    second) and ``"write"`` (bytes per second written to device memory, 4 GiB). Under
    numba's CUDA simulator the kernels run on a few threads and the rates mean nothing."""
    xp = array_module()
    if simulated():
        threads, blocks, n, size = 32, 1, 4, 256
    else:
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        threads, blocks, n, size = 256, 8 * props["multiProcessorCount"], 8192, 2**29
    roofs = {}
    for real in (np.float64, np.float32):
        bits = 8 * np.dtype(real).itemsize
        out = xp.full(threads * blocks, 0.5, dtype=real)
        seconds = _best_seconds(lambda: _fma[blocks, threads](out, n, real(0.999), real(1e-3)))
        roofs[f"fp{bits}"] = 2 * _CHAINS * n * threads * blocks / seconds
        seconds = _best_seconds(lambda: _exp[blocks, threads](out, n // 8, real(-0.5)))
        roofs[f"exp{bits}"] = 4 * (n // 8) * threads * blocks / seconds
    target = xp.empty(size, dtype=np.float64)
    roofs["write"] = target.nbytes / _best_seconds(lambda: _fill[blocks, threads](target, 1.0))
    return roofs
