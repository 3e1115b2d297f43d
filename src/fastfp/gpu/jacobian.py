"""Products with the derivative matrix of a batch's fingerprints on the GPU, recomputed,
never stored: :class:`fastfp.jacobian.Jacobian`'s counterpart for frames on the device.

Force training needs J = d fingerprints / d positions only through the forces -J^T g
and, for the gradient of a force loss, J v (:mod:`fastfp.jacobian`). The descriptor
kernels (:func:`fastfp.gpu.gmp.product`, :func:`fastfp.gpu.gaussian.product`) compute
both from the pair vectors, each pair's derivatives recomputed where they are
contracted, so a batch's memory grows with its pairs (their vectors, 3 values each),
never with pairs x features x 3 (the derivative blocks of ``featurize(...,
device="cuda")``: 3 n_features values per block).

J^T x is summed into atoms without atomics, so the results do not depend on scheduling:
the kernel writes each pair's vector v_p = sum_f x[i, f] dG_if/dD_p, and
:func:`sum_pair_vectors` (a thread per atom a) adds those of the pairs whose neighbour
is a, in the order of the pairs sorted by neighbour once per batch, and subtracts those
of its own pairs, in pair order. That reads 3 values per pair twice, against the
derivative arithmetic of every feature per pair in the kernel.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..fingerprints import Fingerprints
from .device import array_module, check_room, launch, simulated
from .featurize import KERNELS
from .frames import DeviceFrames
from .neighbors import cumulative, neighbor_pairs


@cuda.jit
def sum_pair_vectors(ptr, by_j, j_ptr, pair_vectors, out):
    """``out[a]`` (n_atoms, 3) = J^T x from the ``JT_PAIRS`` vectors of the kernel: the sum
    of ``pair_vectors[by_j[k]]`` over ``k`` in ``j_ptr[a]:j_ptr[a + 1]`` (the pairs whose
    neighbour is a) minus the sum over a's own pairs ``ptr[a]:ptr[a + 1]``, each in order."""
    a = cuda.grid(1)
    if a >= len(ptr) - 1:
        return
    for xyz in range(3):
        total = 0.0
        for k in range(j_ptr[a], j_ptr[a + 1]):
            total += pair_vectors[by_j[k], xyz]
        for p in range(ptr[a], ptr[a + 1]):
            total -= pair_vectors[p, xyz]
        out[a, xyz] = total


class DeviceJacobian:
    """J = d fingerprints / d positions of ``frames`` (:class:`~fastfp.gpu.frames.DeviceFrames`)
    for a descriptor ``desc``, as products recomputed by its GPU kernel, in float64:
    :class:`fastfp.jacobian.Jacobian`'s methods on device arrays (CuPy, or NumPy under
    numba's CUDA simulator). The neighbour pairs (no derivative blocks) are found once,
    here, on CuPy's current stream, and kept.

    Raises :class:`~fastfp.gpu.device.DeviceError` if no GPU can run,
    :class:`~fastfp.gpu.device.DeviceMemoryError` if the pairs do not fit.

    Examples
    --------
    >>> jac = DeviceJacobian(desc, to_device(cupy, pack_frames(frames, desc.numbers)))  # doctest: +SKIP
    >>> forces = -jac.transposed_product(dE_dG)                                        # doctest: +SKIP
    """

    #: where torch tensors of its arrays lie (``torch.from_dlpack``)
    device = "cpu" if simulated() else "cuda"

    def __init__(self, desc, frames: DeviceFrames):
        xp = self._xp = array_module()
        self.frames = frames
        self.n_features = desc.n_features
        self._kernels = KERNELS[type(desc.tables)]
        self._tables = desc.tables
        self._species = xp.asarray(desc.species_of)[frames.numbers]
        self.pairs = neighbor_pairs(xp, frames, desc.cutoff, self_pairs=self._kernels.SELF_PAIRS, real=np.float64)
        j = self.pairs.j
        self._by_j = xp.argsort(j, kind="stable")
        self._j_ptr = cumulative(xp, xp.bincount(j, minlength=self.n_atoms))

    @property
    def n_atoms(self) -> int:
        return self.frames.n_atoms

    def fingerprints(self) -> Fingerprints:
        """The frames' fingerprints (no derivatives), device arrays, as
        ``featurize(..., device="cuda", derivatives=False)`` computes them."""
        xp = self._xp
        fp = xp.empty((self.n_atoms, self.n_features))
        self._kernels.run(xp, self._tables, self._species, self.pairs, False, fp, xp.empty((0, self.n_features, 3)))
        return Fingerprints(fingerprints=fp, offsets=self.frames.offsets, numbers=self.frames.numbers)

    def product(self, x):
        """J x: ``x`` (n_atoms, 3) (a device array, or anything ``from_dlpack`` takes:
        a torch tensor on the device), a displacement per atom -> (n_atoms, n_features)."""
        x = self._input(x, 3)
        out = self._xp.empty((self.n_atoms, self.n_features))
        self._kernels.product(self._xp, self._tables, self._species, self.pairs, x, out, False)
        return out

    def transposed_product(self, x):
        """J^T x: ``x`` (n_atoms, n_features), e.g. dE/dG -> (n_atoms, 3) (-J^T dE/dG are
        the forces)."""
        xp = self._xp
        x = self._input(x, self.n_features)
        n_pairs = len(self.pairs.j)
        check_room(xp, n_pairs * 3 * 8, f"the pair vectors of J^T x ({n_pairs:,} pairs)")
        pair_vectors = xp.empty((n_pairs, 3))
        self._kernels.product(xp, self._tables, self._species, self.pairs, x, pair_vectors, True)
        out = xp.empty((self.n_atoms, 3))
        launch(sum_pair_vectors, self.n_atoms, self.pairs.ptr, self._by_j, self._j_ptr, pair_vectors, out)
        return out

    def _input(self, x, width: int):
        """``x`` as a C-contiguous float64 device array of shape (n_atoms, width), or ``ValueError``."""
        xp = self._xp
        if not isinstance(x, xp.ndarray):
            x = xp.from_dlpack(x)
        if x.shape != (self.n_atoms, width):
            raise ValueError(f"x has shape {tuple(x.shape)}, expected {(self.n_atoms, width)}")
        return xp.ascontiguousarray(x, dtype=np.float64)
