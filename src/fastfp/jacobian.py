"""Products with the derivative matrix of a batch's fingerprints, recomputed, never stored.

Force training needs the derivatives J = d fingerprints / d positions ((n_atoms *
n_features) x (3 n_atoms): the matrix of :meth:`Descriptor.featurize
<fastfp.descriptors.base.Descriptor.featurize>`'s derivative blocks, AMPTorch's
``fprimes``) only through two products: the forces F = -J^T g (g = dE/dG per atom) and,
for the gradient of a force loss, J v (v = dL/dF). The descriptor kernels compute both
from the pair vectors, recomputing each pair's derivatives where they are contracted
(the kernel modes of :mod:`fastfp.kernels.blocks`), as TorchANI's cuaev does for its
AEVs: nothing of size pairs x features x 3 is ever allocated, so memory grows with the
atoms, not the pairs.

On the GPU the same products are :class:`fastfp.gpu.jacobian.DeviceJacobian`'s.

A :class:`Jacobian` works on its frames in parts of about :data:`PART_ATOMS` atoms. The
neighbour pairs of a part are found once and kept while all kept pairs fit in
:data:`KEEP_PAIRS`; the pairs of parts beyond are found again for each product, so a
batch of any size runs in bounded memory.
"""

from __future__ import annotations

import numpy as np

from .fingerprints import Fingerprints
from .frames import PackedFrames
from .threads import single_threaded_libraries

#: atoms per part (whole frames; a larger frame is a part of its own)
PART_ATOMS = 4096
#: neighbour pairs kept between products (32 bytes each: 128 MiB; a batch of 16
#: frames of the default workload has about 200,000)
KEEP_PAIRS = 2**22


class Jacobian:
    """J = d fingerprints / d positions of ``packed`` frames for a descriptor, as products
    recomputed by its kernels: made by :meth:`Descriptor.jacobian
    <fastfp.descriptors.base.Descriptor.jacobian>`, which hands over the descriptor's
    ``n_features``, its neighbour search of packed frames (``neighbor_pairs(packed)``),
    its featurization from found pairs (``featurize_pairs(packed, pairs, derivatives=...)``)
    and its kernels' products (``product(packed, pairs, x, transpose)``). ``pairs``: the
    frames' neighbour pairs where they were found already (frames that make one part: at
    most :data:`PART_ATOMS` atoms, or a single frame), else None.

    Results are float64 and the same whatever the number of threads (each centre's
    pairs in a fixed order, sums over pairs of different centres in pair order).

    Examples
    --------
    >>> jac = desc.jacobian(pack_frames(frames, desc.numbers))  # doctest: +SKIP
    >>> fps = jac.fingerprints()                                # doctest: +SKIP
    >>> forces = -jac.transposed_product(dE_dG)                 # doctest: +SKIP
    """

    #: where its arrays lie (NumPy arrays on the CPU; :class:`fastfp.gpu.jacobian.DeviceJacobian`
    #: is the GPU's counterpart)
    device = "cpu"

    def __init__(self, packed: PackedFrames, n_features: int, neighbor_pairs, featurize_pairs, product, pairs=None):
        self.packed = packed
        self.n_features = n_features
        self._neighbor_pairs = neighbor_pairs
        self._featurize_pairs = featurize_pairs
        self._kernel_product = product
        # parts: frames start:stop, whole frames of about PART_ATOMS atoms
        bounds = [0]
        offsets = packed.offsets
        while bounds[-1] < packed.n_frames:
            k = bounds[-1]
            bounds.append(max(k + 1, int(np.searchsorted(offsets, offsets[k] + PART_ATOMS, side="right")) - 1))
        self._parts = list(zip(bounds[:-1], bounds[1:]))
        self._pairs = [None] * len(self._parts)
        self._kept = 0
        if pairs is not None:
            if len(self._parts) != 1:
                raise ValueError(f"pairs found already are taken for frames of at most {PART_ATOMS} atoms, "
                                 f"not {packed.n_atoms}")
            self._keep(0, pairs)

    @property
    def n_atoms(self) -> int:
        return self.packed.n_atoms

    def _keep(self, n: int, pairs) -> None:
        """Keep ``pairs`` as part ``n``'s while all kept pairs fit in :data:`KEEP_PAIRS`."""
        if self._kept + len(pairs.j) <= KEEP_PAIRS:
            self._pairs[n] = pairs
            self._kept += len(pairs.j)

    def _part_pairs(self):
        """``(part, its packed frames, its atoms' slice, its neighbour pairs)`` for every
        part, keeping the pairs while the kept ones fit in :data:`KEEP_PAIRS`."""
        for n, (start, stop) in enumerate(self._parts):
            part = self.packed.slice(start, stop)
            atoms = slice(int(self.packed.offsets[start]), int(self.packed.offsets[stop]))
            pairs = self._pairs[n]
            if pairs is None:
                with single_threaded_libraries():
                    pairs = self._neighbor_pairs(part)
                self._keep(n, pairs)
            yield part, atoms, pairs

    def fingerprints(self) -> Fingerprints:
        """The frames' fingerprints (no derivatives), as :meth:`Descriptor.featurize
        <fastfp.descriptors.base.Descriptor.featurize>` computes them."""
        out = np.empty((self.n_atoms, self.n_features))
        with single_threaded_libraries():
            for part, atoms, pairs in self._part_pairs():
                out[atoms] = self._featurize_pairs(part, pairs, derivatives=False).fingerprints
        return Fingerprints(fingerprints=out, offsets=self.packed.offsets, numbers=self.packed.numbers)

    def product(self, x) -> np.ndarray:
        """J x: ``x`` (n_atoms, 3), a displacement per atom -> (n_atoms, n_features),
        the change of each fingerprint to first order."""
        return self._product(np.asarray(x, dtype=np.float64), (self.n_atoms, 3), self.n_features, False)

    def transposed_product(self, x) -> np.ndarray:
        """J^T x: ``x`` (n_atoms, n_features), e.g. dE/dG -> (n_atoms, 3) (-J^T dE/dG are
        the forces)."""
        return self._product(np.asarray(x, dtype=np.float64), (self.n_atoms, self.n_features), 3, True)

    def _product(self, x: np.ndarray, shape: tuple, width: int, transpose: bool) -> np.ndarray:
        if x.shape != shape:
            raise ValueError(f"x has shape {x.shape}, expected {shape}")
        out = np.empty((self.n_atoms, width))
        for part, atoms, pairs in self._part_pairs():
            out[atoms] = self._kernel_product(part, pairs, x[atoms], transpose)
        return out
