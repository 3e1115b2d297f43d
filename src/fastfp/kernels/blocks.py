"""Derivative block layout shared by all descriptor kernels.

A descriptor of centre i depends on the pair vectors D_p = r_j + shift - r_i of its
neighbours. Its derivative by atom positions is gathered into one (n_features, 3)
block per distinct atom j (images summed) plus the block of i itself:
d/dr_j += d/dD_p and d/dr_i -= d/dD_p.
"""

import numba
import numpy as np


@numba.njit(cache=True)
def pair_blocks(ptr, j):
    """Block layout for the pairs of a :class:`~fastfp.neighbors.NeighborPairs`.

    Returns ``block_ptr`` (n_atoms + 1,), ``block_j`` (n_blocks,) and ``pair_block``
    (n_pairs,): the blocks of centre i are ``block_ptr[i]:block_ptr[i+1]``, the first
    being i itself; pair p adds to block ``pair_block[p]``.
    """
    n_atoms = len(ptr) - 1
    slot = np.full(n_atoms, -1, dtype=np.int64)
    block_ptr = np.empty(n_atoms + 1, dtype=np.int64)
    block_j = np.empty(len(j) + n_atoms, dtype=np.int64)
    pair_block = np.empty(len(j), dtype=np.int64)
    nb = 0
    for i in range(n_atoms):
        block_ptr[i] = nb
        block_j[nb] = i
        slot[i] = nb
        nb += 1
        for p in range(ptr[i], ptr[i + 1]):
            jj = j[p]
            if slot[jj] < 0:
                block_j[nb] = jj
                slot[jj] = nb
                nb += 1
            pair_block[p] = slot[jj]
        for b in range(block_ptr[i], nb):
            slot[block_j[b]] = -1
    block_ptr[n_atoms] = nb
    return block_ptr, block_j[:nb].copy(), pair_block


@numba.njit(cache=True, nogil=True)
def blocks_to_coo(fprime_ptr, fprime_j, fprimes, atom_order, width, threshold):
    """Derivative blocks of one frame as COO entries in AMPTorch's layout.

    ``row = i * width + f`` for features ``f < width`` (the rest must be zero padding),
    ``col = j * 3 + xyz``. Rows of the centres come in ``atom_order``; within a row,
    columns ascend. Entries with ``|val| < threshold`` or equal to zero are dropped.
    Returns ``indices`` (2, nnz) int64 (rows, columns) and ``val`` (nnz,), allocated
    to size: a first pass counts the entries (the frame's blocks stay in cache for
    the second).
    """
    n = 0
    for b in range(fprime_ptr[len(fprime_ptr) - 1]):
        for f in range(width):
            for xyz in range(3):
                v = fprimes[b, f, xyz]
                if v != 0.0 and abs(v) >= threshold:
                    n += 1
    indices = np.empty((2, n), dtype=np.int64)
    val = np.empty(n)
    n = 0
    for i in atom_order:
        b0 = fprime_ptr[i]
        by_j = np.argsort(fprime_j[b0 : fprime_ptr[i + 1]])
        for f in range(width):
            for ob in by_j:
                b = b0 + ob
                for xyz in range(3):
                    v = fprimes[b, f, xyz]
                    if v != 0.0 and abs(v) >= threshold:
                        indices[0, n] = i * width + f
                        indices[1, n] = fprime_j[b] * 3 + xyz
                        val[n] = v
                        n += 1
    return indices, val
