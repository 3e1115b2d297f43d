"""Neighbour lists for a batch of frames, periodic images included.

A cell list compiled with numba (:func:`_cell_list_pairs`): triclinic cells, mixed
periodicity, cells smaller than the cutoff. It runs without the GIL, so one chunk's
pairs are found while other threads run the kernels. matscipy's ``neighbour_list``
(C, used before) holds the GIL and took 82 ms of one thread's CPU time on the first 100
OC20 frames (8 Å, 595,180 pairs), a fifth of featurization with derivatives; this search
takes about a fifth of that. vesin is as fast, but imports torch whenever torch is
installed (7.8 s and 280 MB per process here), which every CLI run would pay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from ase.geometry import complete_cell

from .frames import PackedFrames


@dataclass(frozen=True)
class NeighborPairs:
    """Directed pairs (centre i, neighbour j) within the cutoff, for all frames of a batch.

    Pairs are sorted by centre; the pairs of centre ``i`` are ``ptr[i]:ptr[i+1]``.
    Atom indices are global (into the concatenated atoms of the batch).

    Attributes
    ----------
    ptr : (n_atoms + 1,) int64
    j : (n_pairs,) int64, neighbour atom
    vectors : (n_pairs, 3) float64, Å: position of the neighbour's image minus the centre
    """

    ptr: np.ndarray
    j: np.ndarray
    vectors: np.ndarray

    @property
    def centers(self) -> np.ndarray:
        """(n_pairs,) int64: the centre atom of each pair."""
        return np.repeat(np.arange(len(self.ptr) - 1), np.diff(self.ptr))


def amptorch_bin_window(positions, cell, pbc, cutoff):
    """The bins AMPTorch's own neighbour search puts the atoms of one frame in, or None
    where it keeps every pair (a cell of zero volume).

    AMPTorch's C++ kernels (e.g. ``GMPOrderNorm/calculate_gmpordernorm.cpp``) bin atoms
    by ``get_scaled_positions(wrap=True)`` but take vectors from
    ``get_positions(wrap=True)``, which leaves an atom within 1e-7 below a periodic
    face unwrapped. Such an atom sits one cell away from its bin, and pairs whose image
    falls outside the centre's bin window are silently dropped. A pair (i, j) with
    image shift S is kept when, along every axis, the bin of j's image (shifted as
    AMPTorch shifts it: ``S - wrap[j] + wrap[i]`` cells) lies within ``reach`` bins of
    i's; this keeps every pair in all other frames.

    Returns ``bins`` and ``wrap`` (n_atoms, 3) and ``nbins`` and ``reach`` (3,), floats.
    """
    pbc = np.asarray(pbc, dtype=bool)
    volume = abs(np.linalg.det(cell))
    if volume < 1e-12:
        return None
    frac = np.linalg.solve(cell.T, positions.T).T
    scaled = frac.copy()
    scaled[:, pbc] = (scaled[:, pbc] % 1.0) % 1.0
    eps = 1e-7
    wrap = np.zeros_like(frac)
    wrap[:, pbc] = np.rint(((frac[:, pbc] + eps) % 1.0 - eps) - frac[:, pbc])
    recip = np.linalg.inv(cell).T  # rows: reciprocal vectors (without 2 pi)
    plane = 1.0 / np.linalg.norm(recip, axis=1)
    nbins = np.ceil(plane / cutoff)
    reach = np.ceil(cutoff * nbins / plane)
    return np.trunc(scaled * nbins), wrap, nbins, reach


@numba.njit(cache=True)
def _bins(frac, periodic, plane, cutoff, cell_bins, image, bin_of):
    """Bin the atoms of one frame along one axis. ``frac`` (n,): fractional coordinates;
    ``plane``: distance between the cell's faces across this axis (Å). Periodic axes are
    cut into ``cell_bins`` equal bins of the unit cell, each atom wrapped into it (the
    whole cells it was moved by in ``image``); other axes into bins over the atoms' span.
    Fills ``bin_of`` (n,) and returns (number of bins, how many bins the cutoff reaches)."""
    n = len(frac)
    if periodic:
        lo, span = 0.0, 1.0
        for a in range(n):
            image[a] = math.floor(frac[a])
    else:
        lo, hi = frac[0], frac[0]
        for a in range(n):
            lo = min(lo, frac[a])
            hi = max(hi, frac[a])
            image[a] = 0
        span = hi - lo
    if span * plane < cutoff:  # also span 0: one bin
        n_bins = 1
    else:
        n_bins = max(1, min(cell_bins, int(span * plane / cutoff)))
    for a in range(n):
        b = int(math.floor((frac[a] - image[a] - lo) / span * n_bins)) if span > 0 else 0
        bin_of[a] = min(max(b, 0), n_bins - 1)
    reach = int(math.ceil(cutoff * n_bins / (span * plane))) if span > 0 else 0
    return n_bins, reach


@numba.njit(cache=True, nogil=True)
def _cell_list_pairs(positions, cell, pbc, cutoff, self_pairs, max_bins,
                     window, amp_bins, amp_wrap, amp_nbins, amp_reach):
    """Pairs of one frame (atoms local to it): per centre, its own pair first if
    ``self_pairs``, then every (j, image shift S) with ``|r_j + S cell - r_i| < cutoff``
    (j = i for S != 0 included). With ``window`` only the pairs AMPTorch finds
    (:func:`amptorch_bin_window`'s arrays). Returns ``counts`` (n,), ``j`` (n_pairs,),
    ``vectors`` (n_pairs, 3). ``max_bins`` bounds the bins per axis (cells with vacuum)."""
    n = len(positions)
    # reciprocal vectors (rows): fractional coordinates f = r . recip[d]
    recip = np.empty((3, 3))
    for d in range(3):
        u, v = cell[(d + 1) % 3], cell[(d + 2) % 3]
        recip[d, 0] = u[1] * v[2] - u[2] * v[1]
        recip[d, 1] = u[2] * v[0] - u[0] * v[2]
        recip[d, 2] = u[0] * v[1] - u[1] * v[0]
    volume = cell[0, 0] * recip[0, 0] + cell[0, 1] * recip[0, 1] + cell[0, 2] * recip[0, 2]
    recip /= volume
    image = np.empty((3, n), dtype=np.int64)
    bin_of = np.empty((3, n), dtype=np.int64)
    n_bins = np.empty(3, dtype=np.int64)
    reach = np.empty(3, dtype=np.int64)
    frac = np.empty(n)
    for d in range(3):
        for a in range(n):
            frac[a] = positions[a, 0] * recip[d, 0] + positions[a, 1] * recip[d, 1] + positions[a, 2] * recip[d, 2]
        plane = 1.0 / math.sqrt(recip[d, 0] ** 2 + recip[d, 1] ** 2 + recip[d, 2] ** 2)
        n_bins[d], reach[d] = _bins(frac, pbc[d], plane, cutoff, max_bins, image[d], bin_of[d])

    # atoms sorted by bin (counting sort), with their positions wrapped into the cell
    bin_start = np.zeros(n_bins[0] * n_bins[1] * n_bins[2] + 1, dtype=np.int64)
    flat = (bin_of[2] * n_bins[1] + bin_of[1]) * n_bins[0] + bin_of[0]
    for a in range(n):
        bin_start[flat[a] + 1] += 1
    for c in range(len(bin_start) - 1):
        bin_start[c + 1] += bin_start[c]
    in_bin = np.empty(n, dtype=np.int64)
    fill = bin_start[:-1].copy()
    for a in range(n):
        in_bin[fill[flat[a]]] = a
        fill[flat[a]] += 1
    wrapped = np.empty((n, 3))
    for t in range(n):
        a = in_bin[t]
        for x in range(3):
            wrapped[t, x] = positions[a, x] - image[0, a] * cell[0, x] - image[1, a] * cell[1, x] - image[2, a] * cell[2, x]

    counts = np.zeros(n, dtype=np.int64)
    capacity = max(64, 32 * n)
    js = np.empty(capacity, dtype=np.int64)
    vectors = np.empty((capacity, 3))
    cutoff2 = cutoff * cutoff
    screen2 = cutoff2 * (1.0 + 1e-9)  # wrapped positions differ from r_j - r_i + S cell by rounding
    lo = np.empty(3, dtype=np.int64)
    hi = np.empty(3, dtype=np.int64)
    nb = np.empty(3, dtype=np.int64)
    shift = np.empty(3, dtype=np.int64)
    offset = np.empty(3)
    n_pairs = 0
    for i in range(n):
        if self_pairs:
            if n_pairs == len(js):
                js = _grown(js)
                vectors = _grown(vectors)
            js[n_pairs] = i
            vectors[n_pairs] = 0.0
            n_pairs += 1
            counts[i] += 1
        for d in range(3):
            lo[d] = bin_of[d, i] - reach[d]
            hi[d] = bin_of[d, i] + reach[d]
            if not pbc[d]:
                lo[d] = max(lo[d], 0)
                hi[d] = min(hi[d], n_bins[d] - 1)
        for c2 in range(lo[2], hi[2] + 1):
            for c1 in range(lo[1], hi[1] + 1):
                for c0 in range(lo[0], hi[0] + 1):
                    nb[0], nb[1], nb[2] = c0, c1, c2
                    for d in range(3):  # the periodic image this bin lies in
                        shift[d] = nb[d] // n_bins[d]
                        nb[d] -= shift[d] * n_bins[d]
                    c = (nb[2] * n_bins[1] + nb[1]) * n_bins[0] + nb[0]
                    # wrapped position of j's image minus that of i, to screen candidates
                    for x in range(3):
                        offset[x] = (shift[0] + image[0, i]) * cell[0, x] + (shift[1] + image[1, i]) * cell[1, x] \
                            + (shift[2] + image[2, i]) * cell[2, x] - positions[i, x]
                    for t in range(bin_start[c], bin_start[c + 1]):
                        x = wrapped[t, 0] + offset[0]
                        y = wrapped[t, 1] + offset[1]
                        z = wrapped[t, 2] + offset[2]
                        if x * x + y * y + z * z >= screen2:
                            continue
                        j = in_bin[t]
                        s0 = shift[0] + image[0, i] - image[0, j]
                        s1 = shift[1] + image[1, i] - image[1, j]
                        s2 = shift[2] + image[2, i] - image[2, j]
                        if j == i and s0 == 0 and s1 == 0 and s2 == 0:
                            continue
                        # the vector as r_j - r_i + S cell: exactly S cell for an atom's own
                        # images, whatever its position
                        x = positions[j, 0] - positions[i, 0] + (s0 * cell[0, 0] + s1 * cell[1, 0] + s2 * cell[2, 0])
                        y = positions[j, 1] - positions[i, 1] + (s0 * cell[0, 1] + s1 * cell[1, 1] + s2 * cell[2, 1])
                        z = positions[j, 2] - positions[i, 2] + (s0 * cell[0, 2] + s1 * cell[1, 2] + s2 * cell[2, 2])
                        if x * x + y * y + z * z >= cutoff2:
                            continue
                        if window and not _in_amptorch_window(i, j, s0, s1, s2, amp_bins, amp_wrap, amp_nbins,
                                                              amp_reach):
                            continue
                        if n_pairs == len(js):
                            js = _grown(js)
                            vectors = _grown(vectors)
                        js[n_pairs] = j
                        vectors[n_pairs, 0] = x
                        vectors[n_pairs, 1] = y
                        vectors[n_pairs, 2] = z
                        n_pairs += 1
                        counts[i] += 1
    return counts, js[:n_pairs], vectors[:n_pairs]


@numba.njit(cache=True)
def _grown(a):
    out = np.empty((2 * len(a),) + a.shape[1:], dtype=a.dtype)
    out[: len(a)] = a
    return out


@numba.njit(cache=True)
def _in_amptorch_window(i, j, s0, s1, s2, bins, wrap, nbins, reach):
    """Whether AMPTorch's search finds pair (i, j) with image shift (s0, s1, s2); see
    :func:`amptorch_bin_window`."""
    for d, s in ((0, s0), (1, s1), (2, s2)):
        cells = s - wrap[j, d] + wrap[i, d]
        if abs(bins[j, d] + cells * nbins[d] - bins[i, d]) > reach[d]:
            return False
    return True


#: most bins of the cell list along one axis (a cell with much vacuum)
MAX_BINS = 64


def neighbor_pairs(
    frames: PackedFrames, cutoff: float, self_pairs: bool = False, amptorch_binning: bool = False
) -> NeighborPairs:
    """All pairs closer than ``cutoff`` (Å) in every frame, images of other atoms and of
    the centre itself included.

    With ``self_pairs`` each atom also gets one pair with itself at zero distance (the
    GMP descriptors count an atom's own pseudodensity), placed first among its pairs.
    With ``amptorch_binning`` the pairs AMPTorch misses are dropped
    (:func:`amptorch_bin_window`).
    """
    counts, j_parts, d_parts = [], [], []
    no_window = np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(3), np.zeros(3)
    for k in range(frames.n_frames):
        start, stop = frames.offsets[k], frames.offsets[k + 1]
        positions = frames.positions[start:stop]
        window = amptorch_bin_window(positions, frames.cells[k], frames.pbc[k], cutoff) if amptorch_binning else None
        # zero vectors along non-periodic axes (molecules, slabs) get unit vectors
        cell = complete_cell(frames.cells[k])
        c, j, vectors = _cell_list_pairs(positions, cell, frames.pbc[k], float(cutoff), self_pairs, MAX_BINS,
                                         window is not None, *(window or no_window))
        counts.append(c)
        j_parts.append(j + start)
        d_parts.append(vectors)
    ptr = np.concatenate(([0], np.cumsum(np.concatenate(counts))))
    return NeighborPairs(ptr=ptr, j=np.concatenate(j_parts), vectors=np.concatenate(d_parts))
