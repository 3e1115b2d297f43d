"""Neighbour lists and derivative block layouts for a batch of frames on the GPU.

The same pairs as :func:`fastfp.neighbors.neighbor_pairs` (vesin on the CPU): every
image of every atom closer than the cutoff, images of the centre included, for
periodic, triclinic and mixed-pbc cells and cells smaller than the cutoff. One GPU
thread per centre atom checks every atom j of its frame, each at every periodic image
that can lie within the cutoff: along a periodic axis k the fractional coordinate of
D = r_j + S cell - r_i is bounded by |D| |b_k| (b_k the reciprocal vector, no 2 pi), so
the shifts S_k to try are those with |(r_j - r_i) . b_k + S_k| <= cutoff |b_k|, any
number of them for a cell smaller than the cutoff, none but 0 along a non-periodic axis.
Positions need no wrapping. Work is O(atoms^2) per frame, which suits AMPTorch's frames
(tens to hundreds of atoms); frames of many thousands of atoms would want a cell list.

The same kernel lays out the derivative blocks (:mod:`fastfp.kernels.blocks`): one per
distinct atom j among the pairs of centre i, the first being i itself. Pairs come grouped
by centre; within a centre those with j = i first (the self pair, then the images of
i), then the others by ascending j, images of one j together; so the pairs of each
block are consecutive (``block_pair``), which the descriptor kernels' chunked block
writes (:mod:`.blocks`) rely on. Two launches for all frames, counting then filling,
with one copy of two sizes to the host between them (to allocate the arrays).

Libraries considered (PyPI wheels for CPython 3.12, x86-64, as of 2026-11; neither fits,
hence this module):

- ``matscipy`` 1.3.1: its wheel holds one C extension,
  ``_matscipy``, CPU only; no CUDA code.
- ``matscipy-neighbours`` 1.0.0 (libAtoms' standalone neighbour list with a CUDA/HIP
  backend and CuPy/DLPack output): published as an sdist only; the CUDA backend is an
  opt-in CMake build (``-DENABLE_CUDA=ON``, needs nvcc), so no wheel carries it. One
  system per call.
- ``vesin`` 0.6.2 (what the CPU path uses): the 200 kB wheel's ``libvesin.so`` does have a CUDA backend (cell list
  and brute force compiled at run time with NVRTC; CuPy or torch arrays in and out), but
  one system per call, each call synchronising the device and reading back counts:
  16,000 calls per epoch of the default workload, where this module makes two launches.
- ``vesin-torch`` 0.6.2: the same engine for torch tensors (``libvesin_torch.so`` built
  for torch 2.3-2.14), also one system per call.
- ``nvalchemi-toolkit-ops`` 0.5.0: batched periodic cell lists in NVIDIA Warp (a good
  fit on paper), but it needs ``warp-lang``, whose wheel is 149 MB: not on the GPU
  machines this project is tested on, and over what can be carried to them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import cuda

from .device import check_room, launch
from .frames import DeviceFrames

def pair_bytes(real) -> int:
    """Bytes per pair of the neighbour list: j (int64) and its vector (3 ``real``)."""
    return 8 + 3 * np.dtype(real).itemsize


# shift ranges are widened by this much (fractional units); the distance test decides
_MARGIN = 1e-8


class DevicePairs(NamedTuple):
    """The pairs of a batch and their derivative blocks, device arrays.

    ``ptr``, ``j``, ``vectors``: as :class:`~fastfp.neighbors.NeighborPairs` (vectors in
    the kernels' floating type); ``block_ptr`` (n_atoms + 1), ``block_j`` (n_blocks),
    ``block_pair`` (n_blocks + 1: the pairs of block b are ``block_pair[b]:block_pair[b+1]``)
    and ``pair_block`` (n_pairs): the block layout, empty arrays without derivatives.
    """

    ptr: object
    j: object
    vectors: object
    block_ptr: object
    block_j: object
    block_pair: object
    pair_block: object


@cuda.jit(device=True)
def _shifts(t, periodic, reach):
    """The range of shifts S along an axis with fractional coordinate ``t`` of r_j - r_i:
    |t + S| <= ``reach``; only 0 along a non-periodic axis."""
    if not periodic:
        return 0, 0
    return int(math.ceil(-t - reach)), int(math.floor(-t + reach))


@cuda.jit
def _pairs(positions, atom_frame, offsets, cells, inverse, pbc, cutoff, self_pairs, fill, blocks,
           pair_count, block_count, ptr, block_ptr, pair_j, vectors, pair_block, block_j, block_pair):
    """Thread i: count the pairs and blocks of centre i (into ``pair_count[i]`` and
    ``block_count[i]``) or, with ``fill``, write them from ``ptr[i]`` and
    ``block_ptr[i]`` on, never past ``ptr[i + 1]`` and ``block_ptr[i + 1]``; blocks only
    with ``blocks``. Order: j = i, then the other atoms of the frame ascending, each with
    its shifts ascending."""
    i = cuda.grid(1)
    if i >= positions.shape[0]:
        return
    f = atom_frame[i]
    a0 = offsets[f]
    cutoff2 = cutoff * cutoff
    reach0 = cutoff * math.sqrt(inverse[f, 0, 0] ** 2 + inverse[f, 1, 0] ** 2 + inverse[f, 2, 0] ** 2) + _MARGIN
    reach1 = cutoff * math.sqrt(inverse[f, 0, 1] ** 2 + inverse[f, 1, 1] ** 2 + inverse[f, 2, 1] ** 2) + _MARGIN
    reach2 = cutoff * math.sqrt(inverse[f, 0, 2] ** 2 + inverse[f, 1, 2] ** 2 + inverse[f, 2, 2] ** 2) + _MARGIN
    p = 0
    p_end = 0
    own = 0
    b_end = 0
    if fill:
        p = ptr[i]
        p_end = ptr[i + 1]
        if blocks:
            own = block_ptr[i]
            b_end = block_ptr[i + 1]
            block_j[own] = i
            block_pair[own] = p
    n = 0
    nb = 1  # the own block
    if self_pairs:
        if fill and p < p_end:
            pair_j[p] = i
            vectors[p, 0] = 0.0
            vectors[p, 1] = 0.0
            vectors[p, 2] = 0.0
            if blocks:
                pair_block[p] = own
            p += 1
        n += 1
    for step in range(offsets[f + 1] - a0):
        j = i  # step 0: the images of i, then the other atoms ascending
        if step > 0:
            j = a0 + step - 1 if a0 + step - 1 < i else a0 + step
        dx = positions[j, 0] - positions[i, 0]
        dy = positions[j, 1] - positions[i, 1]
        dz = positions[j, 2] - positions[i, 2]
        lo0, hi0 = _shifts(dx * inverse[f, 0, 0] + dy * inverse[f, 1, 0] + dz * inverse[f, 2, 0], pbc[f, 0], reach0)
        lo1, hi1 = _shifts(dx * inverse[f, 0, 1] + dy * inverse[f, 1, 1] + dz * inverse[f, 2, 1], pbc[f, 1], reach1)
        lo2, hi2 = _shifts(dx * inverse[f, 0, 2] + dy * inverse[f, 1, 2] + dz * inverse[f, 2, 2], pbc[f, 2], reach2)
        block = own
        for s0 in range(lo0, hi0 + 1):
            for s1 in range(lo1, hi1 + 1):
                for s2 in range(lo2, hi2 + 1):
                    if j == i and s0 == 0 and s1 == 0 and s2 == 0:
                        continue
                    vx = dx + s0 * cells[f, 0, 0] + s1 * cells[f, 1, 0] + s2 * cells[f, 2, 0]
                    vy = dy + s0 * cells[f, 0, 1] + s1 * cells[f, 1, 1] + s2 * cells[f, 2, 1]
                    vz = dz + s0 * cells[f, 0, 2] + s1 * cells[f, 1, 2] + s2 * cells[f, 2, 2]
                    if vx * vx + vy * vy + vz * vz >= cutoff2:
                        continue
                    if j != i and block == own:  # the first pair of j: a new block
                        block = own + nb
                        nb += 1
                        if fill and blocks and block < b_end:
                            block_j[block] = j
                            block_pair[block] = p
                    if fill and p < p_end:
                        pair_j[p] = j
                        vectors[p, 0] = vx
                        vectors[p, 1] = vy
                        vectors[p, 2] = vz
                        if blocks:
                            pair_block[p] = block
                        p += 1
                    n += 1
    pair_count[i] = n
    block_count[i] = nb


def cumulative(xp, counts):
    """``[0, counts[0], counts[0] + counts[1], ...]`` (int64), on the device."""
    ptr = xp.zeros(len(counts) + 1, dtype=np.int64)
    ptr[1:] = xp.cumsum(counts)
    return ptr


def neighbor_pairs(xp, frames: DeviceFrames, cutoff: float, *, self_pairs: bool = False, blocks: bool = False,
                   real=np.float64, block_bytes: int = 0) -> DevicePairs:
    """:func:`fastfp.neighbors.neighbor_pairs` on the GPU: all pairs closer than ``cutoff``
    (Å) in every frame of ``frames``, as :class:`DevicePairs` (``xp``: CuPy, or NumPy
    under the simulator), pair vectors in ``real``; with ``blocks`` their derivative
    block layout too. With ``self_pairs`` each atom's pair with itself (zero vector)
    comes first among its pairs.

    Raises :class:`~fastfp.gpu.device.DeviceMemoryError` if the pairs, or with
    ``blocks`` the derivatives (``block_bytes`` per block, of arrays the caller
    allocates), do not fit.
    """
    n_atoms = frames.n_atoms
    args = (frames.positions, frames.atom_frame, frames.offsets, frames.cells, frames.inverse, frames.pbc,
            float(cutoff), bool(self_pairs))
    pair_count = xp.zeros(n_atoms, dtype=np.int64)
    block_count = xp.zeros(n_atoms, dtype=np.int64)
    none = xp.empty(0, dtype=np.int64)
    launch(_pairs, n_atoms, *args, False, bool(blocks), pair_count, block_count, none, none, none,
           xp.empty((0, 3), dtype=real), none, none, none)
    ptr, block_ptr = cumulative(xp, pair_count), cumulative(xp, block_count)
    n_pairs, n_blocks = (int(n) for n in xp.stack([ptr[-1], block_ptr[-1]]).tolist())  # the one copy to the host
    check_room(xp, n_pairs * pair_bytes(real), f"the neighbour list ({n_pairs:,} pairs)")
    pair_j = xp.empty(n_pairs, dtype=np.int64)
    vectors = xp.empty((n_pairs, 3), dtype=real)
    if blocks:
        check_room(xp, n_blocks * (16 + block_bytes) + n_pairs * 8,
                   f"the derivatives ({n_blocks:,} blocks of {block_bytes} bytes)")
        block_j = xp.empty(n_blocks, dtype=np.int64)
        block_pair = xp.empty(n_blocks + 1, dtype=np.int64)
        block_pair[n_blocks:] = n_pairs
        pair_block = xp.empty(n_pairs, dtype=np.int64)
    else:
        block_ptr = block_j = block_pair = pair_block = none
    launch(_pairs, n_atoms, *args, True, bool(blocks), pair_count, block_count, ptr, block_ptr, pair_j, vectors,
           pair_block, block_j, block_pair)
    return DevicePairs(ptr, pair_j, vectors, block_ptr, block_j, block_pair, pair_block)
