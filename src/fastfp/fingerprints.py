"""The packed result of featurizing a batch of frames, and its conversions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .kernels.blocks import coo_counts, coo_fill
from .threads import run_balanced


@dataclass(frozen=True)
class Fingerprints:
    """Fingerprints and their exact sparse derivatives for a batch of frames.

    Atoms of all frames are concatenated; atom indices are global within the batch.
    Derivatives are stored as dense (n_features, 3) blocks, one per pair of atoms
    (i, j) with j within the cutoff of i (periodic images summed, j = i included):
    ``fprimes[b, f, x] = d fingerprints[i, f] / d positions[j, x]``.

    Attributes
    ----------
    fingerprints : (n_atoms, n_features) float64
        Rows of elements with fewer features than ``n_features`` are zero-padded.
    offsets : (n_frames + 1,) int64, atoms of frame k are ``offsets[k]:offsets[k+1]``
    numbers : (n_atoms,) int64, atomic numbers
    fprime_ptr : (n_atoms + 1,) int64 or None; blocks of centre i are ``fprime_ptr[i]:fprime_ptr[i+1]``
    fprime_j : (n_blocks,) int64 or None, the atom j each block differentiates by
    fprimes : (n_blocks, n_features, 3) float64 or None, 1/Å times the fingerprint's unit

    From ``featurize(..., device="cuda")`` every array is a CuPy array on the GPU (NumPy
    under numba's CUDA simulator), ``fingerprints`` and ``fprimes`` possibly float32;
    :meth:`to_numpy` copies them to the host, where :meth:`coo` and :meth:`coo_frames` work.
    """

    fingerprints: np.ndarray
    offsets: np.ndarray
    numbers: np.ndarray
    fprime_ptr: np.ndarray | None = None
    fprime_j: np.ndarray | None = None
    fprimes: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_features(self) -> int:
        return self.fingerprints.shape[1]

    @property
    def has_derivatives(self) -> bool:
        return self.fprimes is not None

    def frame(self, k: int) -> "Fingerprints":
        """Frame ``k`` alone, as a one-frame :class:`Fingerprints` with local indices."""
        return self.frames(k, k + 1)

    def frames(self, start: int, stop: int) -> "Fingerprints":
        """Frames ``start:stop`` as a :class:`Fingerprints` with indices re-based to 0."""
        if not 0 <= start <= stop <= self.n_frames:
            raise IndexError(f"frames {start}:{stop} out of range for {self.n_frames} frames")
        a0, a1 = int(self.offsets[start]), int(self.offsets[stop])
        derivs = {}
        if self.has_derivatives:
            b0, b1 = int(self.fprime_ptr[a0]), int(self.fprime_ptr[a1])
            derivs = dict(
                fprime_ptr=self.fprime_ptr[a0 : a1 + 1] - b0,
                fprime_j=self.fprime_j[b0:b1] - a0,
                fprimes=self.fprimes[b0:b1],
            )
        return Fingerprints(
            fingerprints=self.fingerprints[a0:a1],
            offsets=self.offsets[start : stop + 1] - a0,
            numbers=self.numbers[a0:a1],
            **derivs,
        )

    def to_numpy(self) -> "Fingerprints":
        """These fingerprints with every array in host memory (NumPy): a copy of device
        (CuPy) arrays, the arrays themselves if they are NumPy already."""
        return Fingerprints(**{
            field.name: _host(getattr(self, field.name)) for field in dataclasses.fields(self)
        })

    def blocks_by_atom(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(centre, j, blocks)``: the derivative blocks (host arrays) sorted by (centre,
        j), a layout that does not depend on the order the backend made them in (the CPU
        path orders a centre's blocks as its neighbour list finds them, the GPU path by j)."""
        if not self.has_derivatives:
            raise ValueError("these fingerprints were computed without derivatives")
        host = self.to_numpy()
        centre = np.repeat(np.arange(len(host.fprime_ptr) - 1), np.diff(host.fprime_ptr))
        order = np.lexsort((host.fprime_j, centre))
        return centre[order], host.fprime_j[order], host.fprimes[order]

    @classmethod
    def concatenate(cls, parts) -> "Fingerprints":
        """The frames of ``parts`` (a non-empty sequence of :class:`Fingerprints`, all with
        or all without derivatives) in order, as one, with indices made global."""
        if len(parts) == 1:
            return parts[0]
        atoms = np.cumsum([0] + [len(p.numbers) for p in parts])
        derivs = {}
        if parts[0].has_derivatives:
            blocks = np.cumsum([0] + [len(p.fprime_j) for p in parts])
            derivs = dict(
                fprime_ptr=np.concatenate([parts[0].fprime_ptr[:1]] + [p.fprime_ptr[1:] + b for p, b in zip(parts, blocks)]),
                fprime_j=np.concatenate([p.fprime_j + a for p, a in zip(parts, atoms)]),
                fprimes=np.concatenate([p.fprimes for p in parts]),
            )
        return cls(
            fingerprints=np.concatenate([p.fingerprints for p in parts]),
            offsets=np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + a for p, a in zip(parts, atoms)]),
            numbers=np.concatenate([p.numbers for p in parts]),
            **derivs,
        )

    def coo(self, k: int, threshold: float = 0.0, atom_order=None):
        """Derivatives of frame ``k`` in AMPTorch's COO layout.

        Returns ``(row, col, val, size)`` with ``row = atom * n_features + feature``,
        ``col = atom * 3 + xyz`` (atoms local to the frame) and
        ``size = (n_atoms * n_features, 3 * n_atoms)``, the layout of
        ``amptorch/descriptor/base_descriptor.py``. Rows come in the order of the atoms
        in ``atom_order`` (default: ascending), columns ascend within a row; entries with
        ``|val| < threshold`` (or exactly zero) are dropped. ``row`` and ``col`` are the
        two rows of one (2, nnz) int64 array.
        """
        (indices, val, size), = self.frame(k).coo_frames(threshold, atom_order)
        return indices[0], indices[1], val, np.array(size)

    def coo_frames(self, threshold: float = 0.0, atom_order=None, widths=None) -> list:
        """:meth:`coo` of every frame, as ``(indices, val, size)`` with ``indices``
        (2, nnz) int64 (rows, columns), converted on :func:`~fastfp.threads.num_threads`
        threads. The arrays of all frames are views into two buffers.

        ``atom_order`` (n_atoms,) lists the batch's atoms frame by frame, each frame's
        atoms in the order its rows should come (default: ascending). ``widths``
        (n_frames,) sets each frame's row width (default ``n_features``): features at
        and beyond it must be zero padding. Raises ``ValueError`` without derivatives.
        """
        if not self.has_derivatives:
            raise ValueError("these fingerprints were computed without derivatives")
        n_atoms = len(self.numbers)
        order = np.arange(n_atoms) if atom_order is None else np.asarray(atom_order, dtype=np.int64)
        widths = np.full(self.n_frames, self.n_features) if widths is None else np.asarray(widths, dtype=np.int64)
        sizes = np.diff(self.offsets)
        width = np.repeat(widths, sizes)
        counts = np.empty(n_atoms, dtype=np.int64)
        block_rows = self.fprimes.reshape(len(self.fprimes), -1)
        run_balanced(lambda a, b: coo_counts(self.fprime_ptr, block_rows, width, threshold, counts, a, b),
                     self.fprime_ptr)
        # entries are numbered frame by frame, a frame's centres in atom_order; frame k's
        # indices are the (2, n_k) block at 2 * starts[k] of one buffer (rows, then columns)
        ends = np.cumsum(counts[order])
        val_at = np.empty(n_atoms, dtype=np.int64)
        val_at[order] = ends - counts[order]
        starts = np.concatenate(([0], ends))[self.offsets]
        frame_n = np.diff(starts)
        row_at = val_at + np.repeat(starts[:-1], sizes)
        col_at = row_at + np.repeat(frame_n, sizes)
        # allocated by numpy, which asks for huge pages on large arrays: a fraction of
        # the page faults of the same memory in small pages
        indices = np.empty(2 * starts[-1], dtype=np.int64)
        val = np.empty(starts[-1])
        first_atom = np.repeat(self.offsets[:-1], sizes)
        run_balanced(lambda a, b: coo_fill(self.fprime_ptr, self.fprime_j, self.fprimes, width, first_atom, threshold,
                                           counts, row_at, col_at, val_at, indices, val, a, b), self.fprime_ptr)
        return [(indices[2 * s : 2 * (s + n)].reshape(2, n), val[s : s + n], (int(m * w), 3 * int(m)))
                for s, n, m, w in zip(starts[:-1], frame_n, sizes, widths)]


def _host(array):
    """``array`` in host memory: NumPy arrays and None as they are, CuPy arrays copied."""
    if array is None or isinstance(array, np.ndarray):
        return array
    return array.get()
