"""Frames packed on the device: a whole batch in flat device arrays, ready for the
neighbour list (:mod:`.neighbors`) without a trip back to the host.

The host packs frames once (:func:`fastfp.frames.pack_frames`: positions, numbers,
offsets, cells, pbc, validated) and :func:`to_device` uploads them with what each frame's
periodic images need (the inverse cell). A set of frames that stays on the device (the
frames of on-the-fly training) gives its batches by :meth:`DeviceFrames.select`, a
gather on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.geometry import complete_cell

from ..frames import PackedFrames


@dataclass(frozen=True)
class DeviceFrames:
    """Frames in device arrays (CuPy, or NumPy under numba's CUDA simulator).

    Attributes
    ----------
    positions : (n_atoms, 3) float64, Å
    numbers : (n_atoms,) int64, atomic numbers
    offsets : (n_frames + 1,) int64; atoms of frame k are ``offsets[k]:offsets[k+1]``
    atom_frame : (n_atoms,) int64, the frame of each atom
    cells : (n_frames, 3, 3) float64, Å, lattice vectors as rows; a zero vector of a
        non-periodic axis replaced by one completing the basis (:func:`ase.geometry.complete_cell`)
    inverse : (n_frames, 3, 3) float64, 1/Å: the inverse of ``cells``, whose columns are
        the reciprocal vectors (no 2 pi)
    pbc : (n_frames, 3) bool
    host_offsets : (n_frames + 1,) int64, ``offsets`` on the host (sizes without a copy back)
    """

    positions: object
    numbers: object
    offsets: object
    atom_frame: object
    cells: object
    inverse: object
    pbc: object
    host_offsets: np.ndarray

    @property
    def n_frames(self) -> int:
        return len(self.host_offsets) - 1

    @property
    def n_atoms(self) -> int:
        return int(self.host_offsets[-1])

    def select(self, xp, indices) -> tuple["DeviceFrames", object]:
        """Frames ``indices`` (host integers, in that order) gathered on the device, and
        the indices of their atoms among these frames' (int64, on the device: per-atom
        data gathers alike)."""
        indices = np.asarray(indices, dtype=np.int64)
        counts = self.host_offsets[indices + 1] - self.host_offsets[indices]
        offsets = np.concatenate(([0], np.cumsum(counts)))
        # atom a of the batch is atom a - offsets[n] of frame indices[n]
        shift = np.repeat(self.host_offsets[indices] - offsets[:-1], counts)
        atoms = xp.arange(int(offsets[-1]), dtype=np.int64) + xp.asarray(shift)
        device_indices = xp.asarray(indices)
        return DeviceFrames(
            positions=self.positions[atoms], numbers=self.numbers[atoms], offsets=xp.asarray(offsets),
            atom_frame=xp.asarray(np.repeat(np.arange(len(indices)), counts)),
            cells=self.cells[device_indices], inverse=self.inverse[device_indices], pbc=self.pbc[device_indices],
            host_offsets=offsets,
        ), atoms


def to_device(xp, packed: PackedFrames) -> DeviceFrames:
    """``packed`` (host arrays) on the device, with each frame's inverse cell."""
    cells = packed.cells.copy()
    for k in np.flatnonzero((np.abs(cells).sum(axis=2) == 0).any(axis=1)):  # zero vectors: non-periodic
        cells[k] = complete_cell(cells[k])
    counts = np.diff(packed.offsets)
    return DeviceFrames(
        positions=xp.asarray(packed.positions), numbers=xp.asarray(packed.numbers),
        offsets=xp.asarray(packed.offsets), atom_frame=xp.asarray(np.repeat(np.arange(packed.n_frames), counts)),
        cells=xp.asarray(cells), inverse=xp.asarray(np.linalg.inv(cells)), pbc=xp.asarray(packed.pbc),
        host_offsets=np.asarray(packed.offsets),
    )
