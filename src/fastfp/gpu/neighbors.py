"""Neighbour lists for a batch of frames on the GPU, one launch for all frames.

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
Pairs come grouped by centre and, within a centre, by ascending j (images of one j
together), which :mod:`.blocks` relies on.

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

import numpy as np
from ase.geometry import complete_cell
from numba import cuda

from ..frames import PackedFrames
from ..neighbors import NeighborPairs
from .device import check_room, launch

# bytes per pair: j (int64) and vector (3 float64)
PAIR_BYTES = 8 + 24
# shift ranges are widened by this much (fractional units); the distance test decides
_MARGIN = 1e-8


@cuda.jit
def _pairs(positions, atom_frame, offsets, cells, inverse, reach, pbc, cutoff2, self_pairs, fill,
           counts, ptr, pair_j, vectors):
    """Thread i: count the pairs of centre i into ``counts[i]`` and, with ``fill``, write
    them from ``ptr[i]`` on (never past ``ptr[i + 1]``): j ascending, then shifts S
    ascending."""
    i = cuda.grid(1)
    if i >= positions.shape[0]:
        return
    f = atom_frame[i]
    n = 0
    p = 0
    end = 0
    if fill:
        p = ptr[i]
        end = ptr[i + 1]
    if self_pairs:
        if fill:
            pair_j[p] = i
            vectors[p, 0] = 0.0
            vectors[p, 1] = 0.0
            vectors[p, 2] = 0.0
            p += 1
        n += 1
    for j in range(offsets[f], offsets[f + 1]):
        dx = positions[j, 0] - positions[i, 0]
        dy = positions[j, 1] - positions[i, 1]
        dz = positions[j, 2] - positions[i, 2]
        lo0 = 0
        hi0 = 0
        lo1 = 0
        hi1 = 0
        lo2 = 0
        hi2 = 0
        if pbc[f, 0]:
            t = dx * inverse[f, 0, 0] + dy * inverse[f, 1, 0] + dz * inverse[f, 2, 0]
            lo0 = int(math.ceil(-t - reach[f, 0]))
            hi0 = int(math.floor(-t + reach[f, 0]))
        if pbc[f, 1]:
            t = dx * inverse[f, 0, 1] + dy * inverse[f, 1, 1] + dz * inverse[f, 2, 1]
            lo1 = int(math.ceil(-t - reach[f, 1]))
            hi1 = int(math.floor(-t + reach[f, 1]))
        if pbc[f, 2]:
            t = dx * inverse[f, 0, 2] + dy * inverse[f, 1, 2] + dz * inverse[f, 2, 2]
            lo2 = int(math.ceil(-t - reach[f, 2]))
            hi2 = int(math.floor(-t + reach[f, 2]))
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
                    if fill and p < end:
                        pair_j[p] = j
                        vectors[p, 0] = vx
                        vectors[p, 1] = vy
                        vectors[p, 2] = vz
                        p += 1
                    n += 1
    counts[i] = n


def cumulative(xp, counts):
    """``[0, counts[0], counts[0] + counts[1], ...]`` (int64) and the total as an int."""
    ptr = xp.zeros(len(counts) + 1, dtype=np.int64)
    ptr[1:] = xp.cumsum(counts)
    return ptr, int(ptr[-1])


def neighbor_pairs(xp, packed: PackedFrames, cutoff: float, self_pairs: bool = False) -> NeighborPairs:
    """:func:`fastfp.neighbors.neighbor_pairs` on the GPU: all pairs closer than ``cutoff``
    (Å) in every frame of ``packed``, as a :class:`~fastfp.neighbors.NeighborPairs` of
    device arrays (``xp``: CuPy, or NumPy under the simulator). With ``self_pairs`` each
    atom's pair with itself (zero vector) comes first among its pairs.

    Raises :class:`~fastfp.gpu.device.DeviceMemoryError` if the pairs do not fit.
    """
    # periodic axes: reciprocal vectors (columns of the inverse cell) and the reach
    # cutoff |b_k| in fractional units; non-periodic vectors are completed (any basis
    # works, only the periodic axes' fractional coordinates are used)
    cells = packed.cells.copy()
    for k in np.flatnonzero((np.abs(cells).sum(axis=2) == 0).any(axis=1)):
        cells[k] = complete_cell(cells[k])
    inverse = np.linalg.inv(cells)
    reach = cutoff * np.linalg.norm(inverse, axis=1) + _MARGIN
    atom_frame = np.repeat(np.arange(packed.n_frames), np.diff(packed.offsets))
    args = [xp.asarray(a) for a in (packed.positions, atom_frame, packed.offsets, cells, inverse, reach, packed.pbc)]
    args += [float(cutoff) ** 2, bool(self_pairs)]
    n_atoms = packed.n_atoms
    counts = xp.zeros(n_atoms, dtype=np.int64)
    no_ptr = xp.empty(0, dtype=np.int64)
    launch(_pairs, n_atoms, *args, False, counts, no_ptr, no_ptr, xp.empty((0, 3)))
    ptr, n_pairs = cumulative(xp, counts)
    check_room(xp, n_pairs * PAIR_BYTES, f"the neighbour list ({n_pairs:,} pairs)")
    pair_j = xp.empty(n_pairs, dtype=np.int64)
    vectors = xp.empty((n_pairs, 3))
    found = xp.zeros(n_atoms, dtype=np.int64)
    launch(_pairs, n_atoms, *args, True, found, ptr, pair_j, vectors)
    if not bool((found == counts).all()):  # both passes make the same float decisions
        raise RuntimeError("GPU neighbour list: the counting and filling passes disagree (a bug in fastfp.gpu)")
    return NeighborPairs(ptr=ptr, j=pair_j, vectors=vectors)
