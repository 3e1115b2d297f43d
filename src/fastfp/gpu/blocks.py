"""The derivative block layout of :mod:`fastfp.kernels.blocks`, built on the GPU.

One (n_features, 3) block per distinct atom j among the pairs of centre i, the first
block being i itself. The GPU neighbour list (:mod:`.neighbors`) gives the pairs of a
centre grouped by ascending j, so the blocks of centre i are i, then its other
neighbours in ascending order; every pair with j = i (the self pair, images of i) maps
to the first.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..neighbors import NeighborPairs
from .device import check_room, launch
from .neighbors import cumulative


@cuda.jit
def _blocks(ptr, pair_j, fill, counts, block_ptr, block_j, pair_block):
    """Thread i: count the blocks of centre i (``fill`` False, into ``counts[i]``) or
    write them (``fill`` True): ``block_j`` from ``block_ptr[i]`` on and ``pair_block``
    of its pairs."""
    i = cuda.grid(1)
    if i >= ptr.shape[0] - 1:
        return
    own = 0
    if fill:
        own = block_ptr[i]
        block_j[own] = i
    b = own
    previous = -1
    for p in range(ptr[i], ptr[i + 1]):
        j = pair_j[p]
        if j == i:
            if fill:
                pair_block[p] = own
            continue
        if j != previous:
            b += 1
            previous = j
            if fill:
                block_j[b] = j
        if fill:
            pair_block[p] = b
    if not fill:
        counts[i] = b - own + 1


def pair_blocks(xp, pairs: NeighborPairs, block_bytes: int):
    """:func:`fastfp.kernels.blocks.pair_blocks` for device ``pairs``: ``(block_ptr,
    block_j, pair_block)``. ``block_bytes`` (bytes per block of the derivative array the
    caller will allocate) enters the memory check: raises
    :class:`~fastfp.gpu.device.DeviceMemoryError` naming the size if they do not fit."""
    n_atoms = len(pairs.ptr) - 1
    counts = xp.zeros(n_atoms, dtype=np.int64)
    empty = xp.empty(0, dtype=np.int64)
    launch(_blocks, n_atoms, pairs.ptr, pairs.j, False, counts, empty, empty, empty)
    block_ptr, n_blocks = cumulative(xp, counts)
    check_room(xp, n_blocks * (8 + block_bytes) + len(pairs.j) * 8,
               f"the derivatives ({n_blocks:,} blocks of {block_bytes} bytes)")
    block_j = xp.empty(n_blocks, dtype=np.int64)
    pair_block = xp.empty(len(pairs.j), dtype=np.int64)
    launch(_blocks, n_atoms, pairs.ptr, pairs.j, True, counts, block_ptr, block_j, pair_block)
    return block_ptr, block_j, pair_block
