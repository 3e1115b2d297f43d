"""Memory for the derivative blocks, used again once nothing refers to it.

The first write to fresh memory costs a page fault per page (the operating system
zeroes each page as it is first touched). The derivative blocks are the one large
array the CPU kernels fill for every batch (about 90 MB for 16 frames of the default
workload), so :func:`empty` hands out the memory of earlier blocks again once nothing
refers to it any more: no array, no view and no tensor made from one (each holds a
reference to the memory's NumPy buffer, and CPython counts them). An on-the-fly epoch
of 1,600 default frames took about 5% less time with it (reports/runs.md). It keeps at
most :data:`KEEP` buffers of at most :data:`MAX_BYTES` each, the memory of the last
batches, for the life of the process.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

#: buffers kept for reuse
KEEP = 3
#: the largest buffer kept (a larger array is always fresh memory)
MAX_BYTES = 256 * 2**20

_lock = threading.Lock()
_kept: list[np.ndarray] = []


def _references(k: int) -> int:
    """CPython's reference count of kept buffer ``k``, as this function sees it."""
    return sys.getrefcount(_kept[k])


_kept.append(np.empty(0))
#: the count of a kept buffer nothing else refers to (the list's reference and the call's)
_UNUSED = _references(0)
_kept.clear()


def empty(shape: tuple) -> np.ndarray:
    """An uninitialised float64 array of ``shape``, in the memory of a kept buffer that
    nothing refers to any more (the smallest that fits) where there is one, else fresh
    (then kept, in place of a free buffer too small or while fewer than :data:`KEEP`
    are kept, if at most :data:`MAX_BYTES`). Thread-safe."""
    size = int(np.prod(shape))
    if size * 8 > MAX_BYTES:
        return np.empty(shape)
    with _lock:
        free = [k for k in range(len(_kept)) if _references(k) == _UNUSED]
        fits = sorted((_kept[k].size, k) for k in free if _kept[k].size >= size)
        if fits:
            buffer = _kept[fits[0][1]]
        else:
            buffer = np.empty(size)
            if free:
                _kept[free[0]] = buffer
            elif len(_kept) < KEEP:
                _kept.append(buffer)
        return buffer[:size].reshape(shape)
