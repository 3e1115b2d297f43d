"""What the descriptor kernels compute, and the derivative block layout they share.

A descriptor of centre i depends on the pair vectors D_p = r_j + shift - r_i of its
neighbours. Its derivative by atom positions is gathered into one (n_features, 3)
block per distinct atom j (images summed) plus the block of i itself:
d/dr_j += d/dD_p and d/dr_i -= d/dD_p.

Every kernel (:func:`~fastfp.kernels.gmp.gmp_kernel`,
:func:`~fastfp.kernels.gaussian.gaussian_kernel`) fills the fingerprints of a range of
centres and, by its ``mode``, one of (J = d fingerprints / d positions, the matrix
AMPTorch stores as COO fprimes, rows (i, f), columns (k, xyz)):

* :data:`FINGERPRINTS`: nothing else;
* :data:`BLOCKS`: the derivative blocks (n_blocks, n_features, 3) of :func:`pair_blocks`;
* :data:`JT_PAIRS`: for an ``x`` (n_atoms, n_features), each pair's vector
  sum_f x[i, f] dG_if/dD_p (n_pairs, 3), which :func:`sum_pair_vectors` turns into
  J^T x (forces are -J^T dE/dG);
* :data:`J_PRODUCT`: for an ``x`` (n_atoms, 3), J x (n_atoms, n_features), that is
  sum over the pairs p of centre i of dG_if/dD_p . (x[j_p] - x[i]).

The last two never hold a (pairs x features x 3) array: each pair's derivatives are
recomputed and contracted where they arise.
"""

import numba
import numpy as np

#: kernel modes (see the module's docstring)
FINGERPRINTS, BLOCKS, JT_PAIRS, J_PRODUCT = 0, 1, 2, 3


@numba.njit(cache=True, nogil=True)
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


@numba.njit(cache=True, inline="always")
def _kept(v, threshold):
    """1 if a derivative entry ``v`` goes into the COO output, else 0."""
    return (v != 0.0) & (abs(v) >= threshold)


@numba.njit(cache=True, nogil=True)
def coo_counts(fprime_ptr, block_rows, width, threshold, counts, atom_start, atom_stop):
    """``counts[i]``: the COO entries of centre i, for centres ``atom_start:atom_stop``:
    entries of its blocks at features ``f < width[i]`` with ``v != 0`` and
    ``|v| >= threshold``. ``block_rows`` are the blocks (n_blocks, n_features, 3) as rows
    (n_blocks, 3 n_features), so a block's candidates are contiguous and the compiler
    vectorises their count."""
    for i in range(atom_start, atom_stop):
        n = 0
        w = 3 * width[i]
        for b in range(fprime_ptr[i], fprime_ptr[i + 1]):
            for k in range(w):
                n += _kept(block_rows[b, k], threshold)
        counts[i] = n


#: :func:`coo_fill`'s marks for :func:`_ascending`: this many per block of the range's
#: centre with the most blocks (a centre's neighbours in frames of up to a few times that
#: many atoms are ordered by marks, the others sorted)
_SPAN_PER_BLOCK = 4


@numba.njit(cache=True, nogil=True, inline="always")
def _ascending(values, marks, order):
    """``order[:n]`` = the places of the ``n`` distinct integers ``values`` in ascending
    order of value. Where they span less than ``len(marks)`` (all -1, and left so), each
    place is marked at its value and the marks read in order, in time linear in the
    span; else by ``np.argsort``. A centre's neighbours lie in its frame, whose atoms
    span about as many indices as it has neighbours in small periodic cells (OC20): there
    the COO conversion took about a tenth less time than with numba's argsort
    (``scripts/roofline.py --kernels coo``, reports/runs.md)."""
    n = len(values)
    low = values[0]
    high = values[0]
    for k in range(1, n):
        low = min(low, values[k])
        high = max(high, values[k])
    if high - low >= len(marks):
        order[:n] = np.argsort(values)
        return
    for k in range(n):
        marks[values[k] - low] = k
    found = 0
    for m in range(high - low + 1):
        if marks[m] >= 0:
            order[found] = marks[m]
            found += 1
            marks[m] = -1


@numba.njit(cache=True, nogil=True)
def coo_fill(fprime_ptr, fprime_j, fprimes, width, first_atom, threshold, counts, row_at, col_at, val_at,
             indices, val, atom_start, atom_stop):
    """Write the ``counts[i]`` COO entries of centres ``atom_start:atom_stop`` (see
    :func:`coo_counts`) in AMPTorch's layout, indices local to the centre's frame (whose
    first atom is ``first_atom[i]``): ``row = (i - first_atom[i]) * width[i] + f``,
    ``col = (j - first_atom[i]) * 3 + xyz``, rows ascending, columns ascending within a
    row. Centre i's rows go to ``indices[row_at[i]:]``, its columns to
    ``indices[col_at[i]:]``, its values to ``val[val_at[i]:]``; disjoint centre ranges
    write disjoint entries.

    Each centre's blocks are gathered feature-major in column order, then every
    candidate entry up to the last kept one is written at the next free place, which
    only a kept entry moves on (no branch on the threshold), so nothing is written past
    the centre's ``counts[i]`` entries. The blocks are read in memory order, each copied
    to its column (a stream the hardware prefetches, not a jump per block), and the
    place is unsigned (numba adds no wraparound of negative indices to the writes): the
    two took about a sixth off the conversion's time (``scripts/roofline.py --kernels
    coo``, reports/runs.md)."""
    max_blocks = 0
    max_width = 0
    for i in range(atom_start, atom_stop):
        max_blocks = max(max_blocks, fprime_ptr[i + 1] - fprime_ptr[i])
        max_width = max(max_width, width[i])
    gathered = np.empty((max_width, 3 * max_blocks))
    cols = np.empty(3 * max_blocks, dtype=np.int64)
    by_j = np.empty(max_blocks, dtype=np.int64)
    column_of = np.empty(max_blocks, dtype=np.int64)
    marks = np.full(_SPAN_PER_BLOCK * max_blocks, -1, dtype=np.int64)
    for i in range(atom_start, atom_stop):
        b0 = fprime_ptr[i]
        nb = fprime_ptr[i + 1] - b0
        _ascending(fprime_j[b0 : b0 + nb], marks, by_j)
        a0 = first_atom[i]
        w = width[i]
        for k in range(nb):
            column_of[by_j[k]] = k
        for q in range(nb):
            b = b0 + q
            k = column_of[q]
            for xyz in range(3):
                cols[3 * k + xyz] = (fprime_j[b] - a0) * 3 + xyz
            for f in range(w):
                for xyz in range(3):
                    gathered[f, 3 * k + xyz] = fprimes[b, f, xyz]
        if counts[i] == 0:
            continue
        # the last kept candidate: no write beyond it lands past counts[i]
        last = w * 3 * nb - 1
        while not _kept(gathered[last // (3 * nb), last % (3 * nb)], threshold):
            last -= 1
        rows = indices[row_at[i] : row_at[i] + counts[i]]
        columns = indices[col_at[i] : col_at[i] + counts[i]]
        values = val[val_at[i] : val_at[i] + counts[i]]
        n = np.uint64(0)
        for f in range(last // (3 * nb) + 1):
            row = (i - a0) * w + f
            for m in range(min(3 * nb, last + 1 - f * 3 * nb)):
                v = gathered[f, m]
                rows[n] = row
                columns[n] = cols[m]
                values[n] = v
                n += np.uint64(_kept(v, threshold))


@numba.njit(cache=True, nogil=True)
def scale_coo_rows(values, rows, factor, divide):
    """In place: ``values[k] /= factor[rows[k]]`` if ``divide`` else ``*=`` (a COO
    matrix's rows scaled)."""
    for k in range(len(values)):
        if divide:
            values[k] /= factor[rows[k]]
        else:
            values[k] *= factor[rows[k]]


@numba.njit(cache=True, nogil=True)
def kept_transposed(fprimes, threshold, out):
    """``out[b, c, f] = fprimes[b, f, c]`` for ``f < out.shape[2]`` where the entry goes
    into the COO output (:func:`coo_counts`: nonzero, at least ``threshold`` in
    magnitude, not NaN), else 0: the blocks ``fprimes`` (n_blocks, n_features, 3) as the
    COO entries of the same threshold make them, transposed to (n_blocks, 3, width)."""
    for b in range(out.shape[0]):
        for c in range(3):
            for f in range(out.shape[2]):
                v = fprimes[b, f, c]
                out[b, c, f] = v if _kept(v, threshold) else 0.0


@numba.njit(cache=True, nogil=True)
def scale_block_rows(fprime_ptr, fprimes_t, factor, divide):
    """In place: ``fprimes_t[b, :, f] /= factor[i, f]`` if ``divide`` else ``*=``, for every
    block b of centre i (``fprime_ptr[i] <= b < fprime_ptr[i + 1]``) of transposed blocks
    (n_blocks, 3, width): the rows (i, f) of the derivative matrix scaled, as
    :func:`scale_coo_rows` scales its COO entries."""
    for i in range(len(fprime_ptr) - 1):
        for b in range(fprime_ptr[i], fprime_ptr[i + 1]):
            for c in range(3):
                for f in range(fprimes_t.shape[2]):
                    if divide:
                        fprimes_t[b, c, f] /= factor[i, f]
                    else:
                        fprimes_t[b, c, f] *= factor[i, f]


@numba.njit(cache=True, nogil=True)
def sum_pair_vectors(ptr, j, pair_vectors, out):
    """``out += J^T x`` from the :data:`JT_PAIRS` vectors of a kernel: ``out[j[p]] +=
    pair_vectors[p]`` and ``out[i] -= pair_vectors[p]`` for every pair p of centre i,
    pair by pair in order (so the sums do not depend on how the kernel's centres were
    split over threads). ``out`` is (n_atoms, 3)."""
    for i in range(len(ptr) - 1):
        for p in range(ptr[i], ptr[i + 1]):
            for xyz in range(3):
                out[j[p], xyz] += pair_vectors[p, xyz]
                out[i, xyz] -= pair_vectors[p, xyz]
