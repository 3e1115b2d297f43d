"""Neighbour lists for a batch of frames, periodic images included.

Wraps vesin's ``NeighborList`` (cell lists in C++, triclinic cells, periodicity per
axis, cells smaller than the cutoff; https://github.com/Luthaf/vesin). It was chosen
over matscipy's ``neighbour_list``, which gives the same pairs (checked on the 300 OC20
frames of ``../shared/data`` at 6 and 8 Å and on random triclinic, mixed-periodicity
geometries) but holds the GIL: with fastfp's kernels on threads, one thread's neighbour
search then stalls the others' Python work, and it was a fifth of one thread's
featurization time (the profiles in ``reports/findings.md``). vesin runs without the
GIL (ctypes) and took half matscipy's time on 60 OC20 frames. Its cost: ``import
vesin`` imports torch (and CuPy) when they are installed, about 0.9 s and 190 MB once
per process here, so it is imported at the first neighbour search, not with fastfp;
processes that train with torch have paid that already.
"""

from __future__ import annotations

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


#: ``keep`` for a frame whose pairs are all kept (:func:`_by_centre`)
_EVERY = np.ones((2, 0), dtype=bool)

#: cells of a smaller volume (Å^3) have a non-periodic vector left out: AMPTorch's binning keeps every pair
_MIN_VOLUME = 1e-12


def amptorch_binning_mask(positions, cell, pbc, cutoff, i, j, shifts) -> np.ndarray:
    """Which pairs AMPTorch's own neighbour search finds (boolean, one per pair).

    AMPTorch's C++ kernels (e.g. ``GMPOrderNorm/calculate_gmpordernorm.cpp``) bin atoms
    by ``get_scaled_positions(wrap=True)`` but take vectors from
    ``get_positions(wrap=True)``, which leaves an atom within 1e-7 below a periodic
    face unwrapped. Such an atom sits one cell away from its bin, and pairs whose image
    falls outside the centre's bin window are silently dropped. This mask reproduces
    that, for AMPTorch-identical numbers; it keeps every pair in all other frames.
    """
    if abs(np.linalg.det(cell)) < _MIN_VOLUME:
        return np.ones(len(i), dtype=bool)
    scaled, wrap, outside = _bins(np.linalg.solve(cell.T, positions.T).T, np.asarray(pbc, dtype=bool))
    if not outside.any():
        # every atom wrapped into its own bin: each neighbour's image lies within reach
        # of the centre's bin (checked against the full test on all frames of ../shared)
        return np.ones(len(i), dtype=bool)
    recip = np.linalg.inv(cell).T  # rows: reciprocal vectors (without 2 pi)
    plane = 1.0 / np.linalg.norm(recip, axis=1)
    nbins = np.ceil(plane / cutoff)
    reach = np.ceil(cutoff * nbins / plane)
    bins = np.trunc(scaled * nbins)
    return _within_bin_window(i, j, shifts, bins, wrap, nbins, reach)


def _outside_their_bins(frames: PackedFrames) -> np.ndarray:
    """(n_frames,) bool: the frames where :func:`amptorch_binning_mask` may drop pairs,
    those with an atom that the wrapped positions leave outside its bin (the test of that
    function's shortcut, for all frames at once; each frame's scaled positions from
    the same call as there, ASE's ``get_scaled_positions``)."""
    sizes = np.diff(frames.offsets)
    fine = np.abs(np.linalg.det(frames.cells)) >= _MIN_VOLUME  # else every pair is kept
    frac = np.zeros_like(frames.positions)
    for k in np.flatnonzero(fine):
        start, stop = frames.offsets[k], frames.offsets[k + 1]
        frac[start:stop] = np.linalg.solve(frames.cells[k].T, frames.positions[start:stop].T).T
    _, _, outside = _bins(frac, np.repeat(frames.pbc, sizes, axis=0))
    return fine & (np.bincount(np.repeat(np.arange(frames.n_frames), sizes)[outside],
                               minlength=frames.n_frames) > 0)


def _bins(frac, periodic):
    """``(scaled, wrap, outside)`` of atoms at fractional coordinates ``frac`` (n, 3),
    periodic along ``periodic`` ((3,) or (n, 3) bool): their scaled positions as
    ``get_scaled_positions(wrap=True)`` gives them (AMPTorch's bins), the cells
    ``get_positions(wrap=True)`` moves them by (none within 1e-7 below a periodic face),
    and (n,) bool whether the two disagree (the atom is outside its bin)."""
    eps = 1e-7
    scaled = np.where(periodic, (frac % 1.0) % 1.0, frac)
    wrap = np.where(periodic, np.rint(((frac + eps) % 1.0 - eps) - frac), 0.0)
    return scaled, wrap, (wrap != np.rint(scaled - frac)).any(axis=1)


@numba.njit(cache=True, nogil=True)
def _within_bin_window(i, j, shifts, bins, wrap, nbins, reach):
    """Pair p is kept when, along every axis, the bin of j's image (shifted as AMPTorch
    shifts it: ``shifts - wrap[j] + wrap[i]`` cells) lies within ``reach`` bins of i's."""
    keep = np.empty(len(i), dtype=np.bool_)
    for p in range(len(i)):
        keep[p] = True
        for d in range(3):
            cells = shifts[p, d] - wrap[j[p], d] + wrap[i[p], d]
            if abs(bins[j[p], d] + cells * nbins[d] - bins[i[p], d]) > reach[d]:
                keep[p] = False
    return keep


def neighbor_pairs(
    frames: PackedFrames, cutoff: float, self_pairs: bool = False, amptorch_binning: bool = False
) -> NeighborPairs:
    """All pairs closer than ``cutoff`` (Å) in every frame, images of other atoms and of
    the centre itself included.

    With ``self_pairs`` each atom also gets one pair with itself at zero distance (the
    GMP descriptors count an atom's own pseudodensity), placed first among its pairs.
    With ``amptorch_binning`` the pairs AMPTorch misses are dropped
    (:func:`amptorch_binning_mask`).
    """
    from vesin import NeighborList  # imports torch where installed: not with fastfp

    # unsorted: vesin's sort costs more than grouping the pairs by centre here. Each pair
    # once (a half list takes vesin about two thirds of the time of a full one); its
    # mirror image (j, i, -shift, -vector) is added while grouping
    search = NeighborList(cutoff=float(cutoff), full_list=False, sorted=False, n_threads=1)
    # AMPTorch's misses can only be in frames with an atom outside its bin (few): only
    # their shifts are asked for and their pairs masked
    masked = _outside_their_bins(frames) if amptorch_binning else np.zeros(frames.n_frames, dtype=bool)
    found = []
    for k in range(frames.n_frames):
        start, stop = frames.offsets[k], frames.offsets[k + 1]
        positions = frames.positions[start:stop]
        # zero vectors along non-periodic axes (molecules, slabs) get unit vectors
        i, j, *shifts, vectors = search.compute(positions, complete_cell(frames.cells[k]), frames.pbc[k],
                                                "ijSD" if masked[k] else "ijD", copy=False)
        keep = _EVERY
        if masked[k]:  # which of each pair and its mirror image AMPTorch finds, in one call
            keep = amptorch_binning_mask(positions, frames.cells[k], frames.pbc[k], cutoff,
                                         np.concatenate((i, j)), np.concatenate((j, i)),
                                         np.concatenate((shifts[0], -shifts[0]))).reshape(2, -1)
        # copies (copy=False: vesin reuses its arrays), indices local to the frame
        found.append((i.astype(np.int64), j.astype(np.int64), np.array(vectors), keep))
    n_pairs = (1 if self_pairs else 0) * frames.n_atoms + sum(
        2 * len(i) if keep is _EVERY else int(np.count_nonzero(keep)) for i, _, _, keep in found)
    ptr = np.empty(frames.n_atoms + 1, dtype=np.int64)
    ptr[0] = 0  # the first frame's first place; each frame sets the rest of its own
    j = np.empty(n_pairs, dtype=np.int64)
    vectors = np.empty((n_pairs, 3))
    for k, (i_k, j_k, vectors_k, keep) in enumerate(found):  # each frame's pairs grouped while in cache
        _by_centre(i_k, j_k, vectors_k, keep, frames.offsets[k], frames.offsets[k + 1], self_pairs, ptr, j, vectors)
    return NeighborPairs(ptr=ptr, j=j, vectors=vectors)


@numba.njit(cache=True, nogil=True)
def _by_centre(i, j, vectors, keep, a0, a1, self_pairs, ptr, all_j, all_vectors):
    """Group one frame's half-list pairs ``i``, ``j``, ``vectors`` (any order, atom
    indices local to the frame, whose atoms are ``a0:a1`` of the batch) and their mirror
    images (j, i, -vector) by centre, into ``all_j`` and ``all_vectors`` (a stable
    counting sort: centre a's pairs at ``ptr[a]:ptr[a+1]``, first those where it is
    ``i``), with ``self_pairs`` each atom's pair with itself (zero vector) first among
    its pairs. ``ptr[a0]`` holds the frame's first place (the previous frame's end);
    ``ptr[a0 + 1 : a1 + 1]`` are set. ``keep`` (2, n_pairs) says which pairs (row 0) and
    mirror images (row 1) to keep; with no columns, all."""
    own = 1 if self_pairs else 0
    every = keep.shape[1] == 0
    ptr[a0 + 1 : a1 + 1] = 0
    for p in range(len(i)):
        if every or keep[0, p]:
            ptr[a0 + i[p] + 1] += 1
        if every or keep[1, p]:
            ptr[a0 + j[p] + 1] += 1
    for a in range(a0, a1):
        ptr[a + 1] += ptr[a] + own
    free = ptr[a0:a1].copy()  # the next place of each centre's pairs
    if self_pairs:
        for a in range(a1 - a0):
            all_j[free[a]] = a0 + a
            all_vectors[free[a]] = 0.0
            free[a] += 1
    for mirror in range(2):
        sign = -1.0 if mirror else 1.0
        for p in range(len(i)):
            if not (every or keep[mirror, p]):
                continue
            centre, other = (j[p], i[p]) if mirror else (i[p], j[p])
            q = free[centre]
            all_j[q] = a0 + other
            for d in range(3):
                all_vectors[q, d] = sign * vectors[p, d]
            free[centre] += 1
