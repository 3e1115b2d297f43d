"""Threads for the compiled kernels.

The numba kernels are compiled with ``nogil=True``, so plain Python threads run them in
parallel: the featurization kernels and the COO conversion over disjoint ranges of
centre atoms (each writes only its own rows, blocks and entries), the derivative
scaling over frames (:func:`run_balanced`). The calling thread takes ranges too. Work
that feeds them (the neighbour search of the next frames) runs ahead on one background
thread (:func:`prefetched`).

The number of threads is ``FASTFP_NUM_THREADS`` if set, else the CPUs this process may
run on. ``FASTFP_NUM_THREADS=1`` runs everything in the calling thread.

While fastfp works, BLAS/LAPACK and OpenMP are held to one thread
(:func:`single_threaded_libraries`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from functools import lru_cache

import numpy as np
from threadpoolctl import ThreadpoolController


#: set by :func:`calling_thread_only`
_CALLING_THREAD_ONLY = False


def num_threads() -> int:
    """Threads the kernels use (``FASTFP_NUM_THREADS``, default: the usable CPUs; one
    inside :func:`calling_thread_only`).

    Raises ``ValueError`` if ``FASTFP_NUM_THREADS`` is not a positive integer."""
    if _CALLING_THREAD_ONLY:
        return 1
    text = os.environ.get("FASTFP_NUM_THREADS", "").strip()
    if not text:
        return len(os.sched_getaffinity(0))
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"FASTFP_NUM_THREADS must be a positive integer, got {text!r}")
    return int(text)


@contextlib.contextmanager
def calling_thread_only():
    """Context manager: inside it the kernels run in the calling thread alone, as with
    ``FASTFP_NUM_THREADS=1`` (for the whole process: not to be entered from two threads
    at once). The profiled child builds its stage inside it (the profiles count all work
    in worker threads as the measured stage's); the asv thread ratios
    (``benchmarks/ratios.py``, ``threads_ratio``) time one thread inside it."""
    global _CALLING_THREAD_ONLY
    before, _CALLING_THREAD_ONLY = _CALLING_THREAD_ONLY, True
    try:
        yield
    finally:
        _CALLING_THREAD_ONLY = before


@lru_cache(maxsize=None)
def _controller(torch_loaded: bool) -> ThreadpoolController:
    """The thread pools of the libraries loaded now (found again once torch is imported)."""
    return ThreadpoolController()


def single_threaded_libraries():
    """Context manager holding BLAS/LAPACK (numpy's OpenBLAS) and OpenMP (torch's
    intra-op threads) to one thread in the calling thread, while fastfp's own threads
    do the work.

    fastfp calls LAPACK only on 3 x 3 cell matrices, once per frame. OpenBLAS still wakes
    its threads for them, and they keep spinning afterwards: a core taken from the
    kernels (seen as about twice as much CPU time as wall time in the neighbour search).
    torch's OpenMP threads, woken by the many small tensor operations of AMPTorch's
    preprocessing, wait at barriers for cores that fastfp's threads (or other processes)
    hold: on a busy 2-core machine AMPTorch's scaler fit on 100 OC20 frames took 0.96 s
    with two OpenMP threads and 2 ms with one."""
    return _controller("torch" in sys.modules).limit(limits=1)


@lru_cache(maxsize=None)
def _pool(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=n, thread_name_prefix="fastfp")


# a forked child has none of the parent's threads: it makes its own pool
os.register_at_fork(after_in_child=_pool.cache_clear)


#: ranges per thread in :func:`run_balanced`: threads take ranges as they become free, so
#: one that gets less CPU time (other processes on the machine) takes fewer
RANGES_PER_THREAD = 4


def balanced_ranges(ptr: np.ndarray, n_parts: int) -> list[tuple[int, int]]:
    """Split items ``0:len(ptr)-1`` into at most ``n_parts`` contiguous ranges with about
    equal work, item k weighing ``ptr[k+1] - ptr[k]`` (e.g. its pairs)."""
    n_items = len(ptr) - 1
    bounds = np.searchsorted(ptr, np.linspace(0, ptr[-1], n_parts + 1), side="left")
    bounds[0], bounds[-1] = 0, n_items
    bounds = np.unique(np.clip(bounds, 0, n_items))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])] or [(0, n_items)]


def run_ranges(func, ranges) -> list:
    """``[func(start, stop) for start, stop in ranges]``, on :func:`num_threads` threads,
    the calling thread one of them.

    Each thread takes the next range not yet taken until none is left; ranges run in no
    particular order. The caller waits only for ranges another thread has started, so a
    helper thread that does not get a core in time costs nothing. ``func`` must release
    the GIL for this to run in parallel (numba ``nogil=True``). Exceptions propagate to
    the caller, once the ranges already started have ended; no range starts after one
    raised."""
    n = min(num_threads(), len(ranges))
    if n <= 1:
        return [func(a, b) for a, b in ranges]
    results = [None] * len(ranges)
    todo = enumerate(ranges)  # a C iterator: next() is atomic under the GIL
    failed = []  # once a range raised (or the caller was interrupted), no new range starts

    def work():
        for k, (start, stop) in todo:
            if failed:
                return
            try:
                results[k] = func(start, stop)
            except BaseException:
                failed.append(True)
                raise

    helpers = [_pool(n - 1).submit(work) for _ in range(n - 1)]
    try:
        work()
    finally:
        for future in helpers:
            future.cancel()
        wait(helpers)
    for future in helpers:
        if not future.cancelled():
            future.result()  # raises what the helper raised
    return results


def run_balanced(func, ptr: np.ndarray) -> list:
    """:func:`run_ranges` over ranges of items ``0:len(ptr)-1`` of about equal work
    (:func:`balanced_ranges`), :data:`RANGES_PER_THREAD` per thread."""
    n = num_threads()
    return run_ranges(func, balanced_ranges(ptr, n * RANGES_PER_THREAD if n > 1 else 1))


def prefetched(func, items, ahead: int):
    """``(item, func(item))`` for each of ``items`` in order, ``func`` running on one
    background thread up to ``ahead`` items beyond the one handed over, so that the caller
    works on one item while the next are prepared (the neighbour search of the next
    frames, say, while the kernels featurize these: both release the GIL). With
    :func:`num_threads` 1, everything runs in the calling thread. An error in ``func`` is
    raised where its item is handed over; leaving the loop early cancels the items not
    started and waits for the one running."""
    if num_threads() == 1:
        for item in items:
            yield item, func(item)
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastfp-ahead")
    try:
        pending = deque()
        for item in items:
            pending.append((item, pool.submit(func, item)))
            if len(pending) > ahead:
                item, future = pending.popleft()
                yield item, future.result()
        while pending:
            item, future = pending.popleft()
            yield item, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
