"""Writing derivative blocks from a warp: the part the GPU descriptor kernels share.

The block layout is :mod:`fastfp.kernels.blocks`' (one (n_features, 3) block per distinct
atom j among the pairs of centre i, i's own first), built with the neighbour list
(:mod:`.neighbors`): the pairs of each block are consecutive, ``block_pair[b]:block_pair[b + 1]``.

A warp works through its centre's pairs in *chunks* of consecutive pairs, one per lane
(32, fewer where the stage for 32 would not fit in shared memory: :func:`fit_shared`). Each lane writes d features / dD of its pair into a column of a *stage* in
shared memory (rows: the block's ``width`` = 3 n_features entries). Then
:func:`flush_chunk` adds the columns of each block's pairs and writes the chunk's blocks
to device memory, neighbouring lanes writing neighbouring entries (the blocks of a chunk
are contiguous). A block whose pairs run on into the next chunk is carried in shared
memory (two carry rows, alternating between chunks) and written there. The centre's
own block gets minus the sum over all pairs not its own (d/dr_i = -sum_j d/dr_j):
:func:`subtract_columns` keeps that sum in each lane's ``own`` entries e = lane, lane + 32, ...
and :func:`write_own` writes it at the end. The pairs of the own block (j = i) move both
atoms alike and add nothing; their columns are zero.
"""

from __future__ import annotations

from numba import cuda

from .device import simulated

#: threads per warp
WARP = 32
#: static shared memory a thread block may use (CUDA's limit without opting in)
SHARED_BYTES = 48 * 1024
#: most warps (centres) per thread block
MAX_WARPS = 4


if simulated():

    @cuda.jit(device=True)
    def sync_warp():
        """The warp's lanes wait for each other. numba's CUDA simulator has no syncwarp; its
        syncthreads releases once every live thread of the block waits at a barrier
        (whichever), which orders a warp's lanes as syncwarp does."""
        cuda.syncthreads()

else:

    @cuda.jit(device=True)
    def sync_warp():
        """The warp's lanes wait for each other (``__syncwarp``)."""
        cuda.syncwarp()


def fit_shared(table_bytes: int, warp_bytes: int, row_bytes: int, what: str) -> tuple[int, int]:
    """``(warps per block, chunk)`` for a kernel whose block holds ``table_bytes`` of
    tables and each warp ``warp_bytes`` plus a stage of ``chunk + 1`` columns of
    ``row_bytes``: the widest chunk (32, else 16, 8, ... pairs) that one warp's share fits
    in :data:`SHARED_BYTES`, then as many warps (up to :data:`MAX_WARPS`) as fit. Raises
    ``ValueError`` naming ``what`` if not even a chunk of one pair fits."""
    chunk = WARP
    while table_bytes + warp_bytes + row_bytes * (chunk + 1) > SHARED_BYTES:
        if chunk == 1:
            raise ValueError(f"{what}: too large for the GPU kernel ({table_bytes + warp_bytes + 2 * row_bytes:,} "
                             f"bytes of shared memory for one warp, over {SHARED_BYTES:,})")
        chunk //= 2
    warps = (SHARED_BYTES - table_bytes) // (warp_bytes + row_bytes * (chunk + 1))
    return int(min(MAX_WARPS, warps)), chunk


@cuda.jit(device=True)
def subtract_columns(stage, row0, width, n_cols, lane, own):
    """``own[k] -= sum over columns l < n_cols of stage[row0 + e, l]`` for the entries
    e = lane + 32 k < ``width``."""
    for k in range(len(own)):
        e = lane + WARP * k
        if e < width:
            total = stage[row0 + e, 0]
            for col in range(1, n_cols):
                total += stage[row0 + e, col]
            own[k] -= total


@cuda.jit(device=True)
def flush_chunk(stage, row0, width, p0, n_cols, lane, pair_block, block_pair, own_block, fprimes, carry,
                carry_in, carry_out):
    """Write the blocks of pairs ``p0:p0 + n_cols`` (stage columns ``0:n_cols``) to the
    flat ``fprimes`` (n_blocks * width), block by block, the lanes on consecutive entries:
    the sum of each block's columns, plus ``carry[carry_in + e]`` for a block begun in the
    previous chunk; a block that goes on into the next chunk is left in
    ``carry[carry_out + e]`` instead. The own block is skipped (:func:`write_own`)."""
    for b in range(pair_block[p0], pair_block[p0 + n_cols - 1] + 1):
        if b == own_block:
            continue
        lo = block_pair[b]
        hi = block_pair[b + 1]
        first = max(lo, p0) - p0
        stop = min(hi, p0 + n_cols) - p0
        for e in range(lane, width, WARP):
            total = stage[row0 + e, first]
            if lo < p0:
                total += carry[carry_in + e]
            for col in range(first + 1, stop):
                total += stage[row0 + e, col]
            if hi > p0 + n_cols:
                carry[carry_out + e] = total
            else:
                fprimes[b * width + e] = total


@cuda.jit(device=True)
def write_own(fprimes, own_block, width, lane, own):
    """The own block: entries e = lane + 32 k from ``own[k]``."""
    for k in range(len(own)):
        e = lane + WARP * k
        if e < width:
            fprimes[own_block * width + e] = own[k]
