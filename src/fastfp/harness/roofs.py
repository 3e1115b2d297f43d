"""The CPU's roofs, measured by micro-benchmarks, for a roofline of fastfp's kernels
(:mod:`fastfp.harness.roofline`; the work they are compared with:
:mod:`fastfp.harness.work`).

* ``flops``: fp64 multiply-adds on 32 KiB of data in the L1 cache, ``b = 0.999 b +
  1.0001 a`` (:func:`multiply_add`, the loop of the asv benchmark
  ``ratios.ThreadsCeiling``): 3 flops per element and round. What compiled, vectorised
  fp64 code gets from the core, not the vendor's peak (loads and stores take their
  share, as in the kernels).
* ``read`` and ``write``: a sum over, and a store of a value to every element of,
  memory four times the last-level cache (:data:`STREAM_BYTES`), touched beforehand
  (no page faults): streams beyond the caches.
* ``exp``: the kernels' vectorised ``exp`` (:func:`fastfp.kernels.fastexp.exp_nonpositive`)
  and ``libm``: libm's scalar ``exp`` (numba's ``math.exp``), over 4 KiB of arguments
  in [-30, 0] (the range of the Gaussian decays).

Each roof is the best of a few runs. :func:`measure` runs one copy per thread of
:func:`~fastfp.threads.num_threads` on :func:`~fastfp.threads.run_ranges` (the
streams: one part of the memory per thread), as the kernels run: inside
:func:`~fastfp.threads.calling_thread_only`, the calling thread's roofs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from ..kernels.fastexp import exp_nonpositive
from ..threads import num_threads, run_ranges
from .work import Work



def last_level_cache() -> int:
    """Bytes of the largest CPU cache Linux reports (``/sys/devices/system/cpu/cpu0/cache``),
    0 where it reports none."""
    sizes = [0]
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip()
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes)


#: bytes the memory streams run over: four times the last-level cache (at least 256 MiB, at most 2 GiB)
STREAM_BYTES = min(max(4 * last_level_cache(), 2**28), 2**31)
#: elements of the L1-resident arrays of the flops loop and of the exp loops
FLOPS_ELEMENTS = 2048
EXP_ELEMENTS = 512


@numba.njit(cache=True, nogil=True, fastmath=True)
def multiply_add(a, b, rounds):
    """``b = 0.999 b + 1.0001 a``, ``rounds`` times over: vectorised multiply-adds on data
    held in the L1 cache, bound by the core's arithmetic rather than by memory (3 flops
    per element and round)."""
    for _ in range(rounds):
        for k in range(len(a)):
            b[k] = 0.999 * b[k] + 1.0001 * a[k]


@numba.njit(cache=True, nogil=True, fastmath=True)
def _read(buf):
    total = 0.0
    for k in range(len(buf)):
        total += buf[k]
    return total


@numba.njit(cache=True, nogil=True)
def _write(buf, value):
    for k in range(len(buf)):
        buf[k] = value


@numba.njit(cache=True, nogil=True)
def _fast_exps(x, out, rounds):
    for r in range(rounds):
        for k in range(len(x)):  # a new argument each round: no round is the last one's repeat
            out[k] = exp_nonpositive(x[k] - r * 1e-9)


@numba.njit(cache=True, nogil=True)
def _libm_exps(x, out, rounds):
    for r in range(rounds):
        for k in range(len(x)):
            out[k] = math.exp(x[k] - r * 1e-9)


@dataclass(frozen=True)
class Roofs:
    """Rates on ``threads`` threads: ``flops`` (flop/s), ``read`` and ``write`` (bytes/s
    to and from memory), ``exp`` (vectorised fastexp calls/s), ``libm`` (libm exp
    calls/s)."""

    flops: float
    read: float
    write: float
    exp: float
    libm: float
    threads: int

    def times(self, work: Work) -> dict[str, float]:
        """Seconds ``work`` takes at each roof: ``flops``, ``memory`` (reads at the read
        rate plus writes at the write rate) and ``exp`` (fastexp calls and libm calls at
        their rates)."""
        return {"flops": work.flops / self.flops,
                "memory": work.bytes_read / self.read + work.bytes_written / self.write,
                "exp": work.exps / self.exp + work.libm_calls / self.libm}


def _best(run, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def _per_thread(func, n: int, repeat: int) -> float:
    """Shortest wall time of ``func(k)`` for k < n, one per thread (:func:`run_ranges`)."""
    return _best(lambda: run_ranges(lambda k, _: func(k), [(k, k + 1) for k in range(n)]), repeat)


def measure(stream_bytes: int | None = None, repeat: int = 5, rounds: int = 20_000) -> Roofs:
    """The roofs on :func:`~fastfp.threads.num_threads` threads (one inside
    :func:`~fastfp.threads.calling_thread_only`), each the best of ``repeat`` runs;
    ``rounds`` sets the length of the in-cache loops (about 5 ms each at 20,000 on a
    2 GHz core), ``stream_bytes`` the memory the streams run over (default
    :data:`STREAM_BYTES`)."""
    n = num_threads()
    stream_bytes = stream_bytes or STREAM_BYTES
    rng = np.random.default_rng(0)
    fma = [(rng.random(FLOPS_ELEMENTS), np.zeros(FLOPS_ELEMENTS)) for _ in range(n)]
    multiply_add(*fma[0], 1)  # compiles
    flops = 3 * FLOPS_ELEMENTS * 5 * rounds * n / _per_thread(lambda k: multiply_add(*fma[k], 5 * rounds), n, repeat)
    x = [rng.uniform(-30.0, 0.0, EXP_ELEMENTS) for _ in range(n)]
    out = [np.empty(EXP_ELEMENTS) for _ in range(n)]
    _fast_exps(x[0], out[0], 1)
    _libm_exps(x[0], out[0], 1)
    exp = EXP_ELEMENTS * rounds * n / _per_thread(lambda k: _fast_exps(x[k], out[k], rounds), n, repeat)
    libm = EXP_ELEMENTS * rounds * n / _per_thread(lambda k: _libm_exps(x[k], out[k], rounds), n, repeat)
    buf = np.empty(stream_bytes // 8)
    _write(buf, 1.0)  # touched: the pages exist
    parts = np.array_split(buf, n)
    write = buf.nbytes / _per_thread(lambda k: _write(parts[k], 1.5), n, repeat)
    read = buf.nbytes / _per_thread(lambda k: _read(parts[k]), n, repeat)
    return Roofs(flops=flops, read=read, write=write, exp=exp, libm=libm, threads=n)
