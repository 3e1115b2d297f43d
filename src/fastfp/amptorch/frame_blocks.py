"""The in-memory data set's derivatives as fastfp's pair blocks instead of COO matrices.

AMPTorch's ``AtomsDataset`` (``amptorch/dataset.py``) keeps each frame's derivative
matrix (n_atoms * width, 3 n_atoms) as a sparse COO tensor: 24 bytes (row, column,
value) per entry, read twice per training step (forces, and the force loss's
gradient). Where fastfp is the fingerprint backend, ``AtomsDataset.process`` runs in the
backend's :func:`~fastfp.amptorch.backend.preprocessing` context, and there each
``Data`` gets a :class:`FrameBlocks` instead: one block of 3 x width values per pair of
atoms (:class:`~fastfp.fingerprints.Fingerprints`' blocks, transposed), 8 bytes per
value and one index per block. They hold the matrix AMPTorch's COO holds: entries
AMPTorch's conversion drops (below the descriptor's ``prime_threshold``) are zero, and
the feature scaler scales them in place as AMPTorch scales its COO values
(:func:`fastfp.amptorch.scaling.norm_features`).

``DataCollater`` (fastfp's ``sparse_block_diag`` hook) gathers a batch's
:class:`FrameBlocks` into a :class:`BlockDiagonal` without copying them; the model
contracts it into forces frame by frame, frames split over fastfp's threads. Blocks
transposed to (3, width) make both products, forces ``-A^T g`` and the force loss's
gradient ``-A v``, runs of contiguous multiply-adds over the features.

Pickled, a :class:`FrameBlocks` becomes AMPTorch's sparse COO tensor, so whatever saves
a data set's ``Data`` (an AMPTorch LMDB written from ``AtomsDataset.data_list``,
``torch.save``) writes AMPTorch's format, readable without fastfp. Predictions
(``AtomsTrainer.predict``) and AMPTorch's LMDB data sets keep COO matrices
(:class:`~fastfp.amptorch.forces.DerivativeMatrix`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np
import torch

from ..fingerprints import Fingerprints
from ..kernels.blocks import kept_transposed
from ..threads import run_balanced
from .forces import DerivativeBlocks, MinusProduct
from .model import CollatedDerivatives


@dataclass(frozen=True, eq=False)
class FrameBlocks:
    """One frame's derivative matrix, AMPTorch's ``Data.fprimes``, as transposed pair blocks.

    Entry (i * width + f, 3 j + c) of the matrix is ``fprimes_t[b, c, f]`` for the block
    b of centre i and atom j (``fprime_ptr[i] <= b < fprime_ptr[i + 1]``,
    ``fprime_j[b] == j``; atoms numbered within the frame), zero where i and j have no
    block: ``fprimes_t[b]`` is the transpose of the block ``fprimes[b]`` of
    :class:`~fastfp.fingerprints.Fingerprints`. ``fprime_ptr`` (n_atoms + 1,) and
    ``fprime_j`` (n_blocks,) int64, ``fprimes_t`` (n_blocks, 3, width) float64 or
    float32, 1/Å times the fingerprint's unit.

    Raises ``ValueError`` if the arrays do not fit together.
    """

    fprime_ptr: np.ndarray
    fprime_j: np.ndarray
    fprimes_t: np.ndarray

    def __post_init__(self):
        n_blocks = len(self.fprime_j)
        ptr = self.fprime_ptr
        if len(ptr) < 1 or ptr[0] != 0 or ptr[-1] != n_blocks or (ptr[1:] < ptr[:-1]).any():
            raise ValueError(f"fprime_ptr must rise from 0 to {n_blocks}")
        if self.fprimes_t.ndim != 3 or self.fprimes_t.shape[:2] != (n_blocks, 3):
            raise ValueError(f"fprimes_t has shape {self.fprimes_t.shape}, expected ({n_blocks}, 3, width)")
        if n_blocks and (self.fprime_j.min() < 0 or self.fprime_j.max() >= self.n_atoms):
            raise ValueError("fprime_j has an atom index outside the frame")

    @classmethod
    def of_frames(cls, fps: Fingerprints, widths, threshold: float, dtype=np.float64) -> list["FrameBlocks"]:
        """The :class:`FrameBlocks` of every frame of ``fps`` (with derivatives), frame k
        ``widths[k]`` features wide (AMPTorch's row width; the features beyond it are
        zero padding), in ``dtype``: its blocks transposed, without the entries
        AMPTorch's COO conversion with ``threshold`` drops (:meth:`Fingerprints.coo`).
        Frames are converted on :func:`~fastfp.threads.num_threads` threads."""
        atoms = fps.offsets
        blocks = fps.fprime_ptr[atoms]
        out = [cls(fps.fprime_ptr[atoms[k] : atoms[k + 1] + 1] - blocks[k], fps.fprime_j[blocks[k] : blocks[k + 1]]
                   - atoms[k], np.empty((blocks[k + 1] - blocks[k], 3, width), dtype=dtype))
               for k, width in enumerate(widths)]

        def convert(start, stop):
            for k in range(start, stop):
                kept_transposed(fps.fprimes[blocks[k] : blocks[k + 1]], threshold, out[k].fprimes_t)

        run_balanced(convert, blocks)
        return out

    @property
    def n_atoms(self) -> int:
        return len(self.fprime_ptr) - 1

    @property
    def width(self) -> int:
        return self.fprimes_t.shape[2]

    @property
    def shape(self) -> torch.Size:
        """The matrix's shape, (n_atoms * width, 3 n_atoms), as AMPTorch's COO tensor's."""
        return torch.Size((self.n_atoms * self.width, 3 * self.n_atoms))

    def to_coo(self) -> torch.Tensor:
        """The same matrix as AMPTorch's sparse COO tensor: its nonzero entries, rows
        ascending, columns ascending within a row (:meth:`Fingerprints.coo`)."""
        fps = Fingerprints(np.empty((self.n_atoms, self.width)), np.array([0, self.n_atoms]),
                           np.zeros(self.n_atoms, dtype=np.int64), self.fprime_ptr, self.fprime_j,
                           np.ascontiguousarray(self.fprimes_t.transpose(0, 2, 1)))
        (indices, val, size), = fps.coo_frames()
        return torch.sparse_coo_tensor(torch.from_numpy(indices), torch.from_numpy(val), size, check_invariants=False)

    def to_dense(self) -> torch.Tensor:
        """The matrix as a dense tensor (for tests and small frames)."""
        return self.to_coo().to_dense()

    def __reduce_ex__(self, protocol):
        return self.to_coo().__reduce_ex__(protocol)  # pickled: AMPTorch's COO tensor

    def __copy__(self) -> "FrameBlocks":
        return FrameBlocks(self.fprime_ptr, self.fprime_j, self.fprimes_t)

    def __deepcopy__(self, memo) -> "FrameBlocks":
        return FrameBlocks(self.fprime_ptr.copy(), self.fprime_j.copy(), self.fprimes_t.copy())


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _minus_t(fprime_ptr, fprime_j, fprimes_t, x, out):
    """``out[j, c] -= sum_f fprimes_t[b, c, f] * x[i, f]`` for every block b of centre i
    and atom j: ``out -= A^T x``. Sums in an order the compiler chooses (vectorised), fixed
    for a given width."""
    for i in range(len(fprime_ptr) - 1):
        for b in range(fprime_ptr[i], fprime_ptr[i + 1]):
            s0 = s1 = s2 = 0.0
            for f in range(fprimes_t.shape[2]):
                s0 += fprimes_t[b, 0, f] * x[i, f]
                s1 += fprimes_t[b, 1, f] * x[i, f]
                s2 += fprimes_t[b, 2, f] * x[i, f]
            j = fprime_j[b]
            out[j, 0] -= s0
            out[j, 1] -= s1
            out[j, 2] -= s2


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _minus(fprime_ptr, fprime_j, fprimes_t, g, out):
    """``out[i, f] -= sum_c fprimes_t[b, c, f] * g[j, c]`` for every block b of centre i
    and atom j: ``out -= A g``, the transposed product of :func:`_minus_t`."""
    acc = np.empty(fprimes_t.shape[2], dtype=out.dtype)
    for i in range(len(fprime_ptr) - 1):
        acc[:] = 0.0
        for b in range(fprime_ptr[i], fprime_ptr[i + 1]):
            j = fprime_j[b]
            g0, g1, g2 = g[j, 0], g[j, 1], g[j, 2]
            for f in range(fprimes_t.shape[2]):
                acc[f] += fprimes_t[b, 0, f] * g0 + fprimes_t[b, 1, f] * g1 + fprimes_t[b, 2, f] * g2
        for f in range(fprimes_t.shape[2]):
            out[i, f] -= acc[f]


@dataclass(frozen=True, eq=False)
class BlockDiagonal(CollatedDerivatives):
    """A collated batch's derivative matrix: the block diagonal of its frames'
    :class:`FrameBlocks` (AMPTorch's ``sparse_block_diag`` of their COO matrices), the
    frames' arrays not copied. ``contract(gradients)`` gives the forces (AMPTorch's
    fingerprint-backend hook, as :class:`~fastfp.amptorch.forces.DerivativeMatrix`).

    Raises ``TypeError`` if a frame's derivatives are not :class:`FrameBlocks`,
    ``ValueError`` if the frames' widths differ.
    """

    frames: tuple

    def __post_init__(self):
        if not self.frames or not all(isinstance(f, FrameBlocks) for f in self.frames):
            raise TypeError("BlockDiagonal collates FrameBlocks (fastfp's stored derivatives) only, got "
                            f"{sorted({type(f).__name__ for f in self.frames})}")
        widths = sorted({f.width for f in self.frames})
        if len(widths) > 1:
            raise ValueError(f"the frames' derivative widths differ: {widths}")

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        """(n_frames + 1,) the first atom of each frame in the batch."""
        return np.cumsum([0] + [f.n_atoms for f in self.frames])

    @functools.cached_property
    def block_offsets(self) -> np.ndarray:
        """(n_frames + 1,) the first block of each frame in the batch."""
        return np.cumsum([0] + [len(f.fprime_j) for f in self.frames])

    @property
    def n_atoms(self) -> int:
        return int(self.offsets[-1])

    @property
    def width(self) -> int:
        return self.frames[0].width

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.n_atoms * self.width, 3 * self.n_atoms))

    def contract(self, gradients: torch.Tensor) -> torch.Tensor:
        """Forces (n_atoms, 3) ``-A^T g`` from ``gradients`` g = dE/dG with n_atoms *
        width elements (any shape), float64 or float32 on the CPU; differentiable to any
        order in ``gradients``."""
        if gradients.device.type != "cpu" or gradients.dtype not in (torch.float64, torch.float32):
            raise ValueError(f"the stored derivative blocks contract on the CPU in float64 or float32, got gradients "
                             f"{gradients.dtype} on {gradients.device}")
        if gradients.numel() != self.n_atoms * self.width:
            raise ValueError(f"gradients has {gradients.numel()} elements, the blocks' rows {self.n_atoms * self.width}")
        return MinusProduct.apply(self, gradients.reshape(self.n_atoms, self.width), False)

    def minus_product(self, x: torch.Tensor, transpose: bool) -> torch.Tensor:
        """``-A^T x`` (x (n_atoms, width) -> (n_atoms, 3)) or, with ``transpose``, ``-A x``
        ((n_atoms, 3) -> (n_atoms, width)), in the dtype of ``x``; no autograd. Frame by
        frame (the matrix is block diagonal: each frame writes its own rows of the
        result), frames split over :func:`~fastfp.threads.num_threads` threads."""
        x = x.detach().contiguous().numpy()
        kernel, width = (_minus, self.width) if transpose else (_minus_t, 3)
        out = np.zeros((self.n_atoms, width), dtype=x.dtype)
        offsets = self.offsets

        def frames(start, stop):
            for k in range(start, stop):
                f, a0, a1 = self.frames[k], offsets[k], offsets[k + 1]
                kernel(f.fprime_ptr, f.fprime_j, f.fprimes_t, x[a0:a1], out[a0:a1])

        run_balanced(frames, self.block_offsets)
        return torch.from_numpy(out)

    def to(self, *args, **kwargs):
        """The matrix on the device of ``torch.Tensor.to``'s arguments (torch_geometric's
        ``Batch.to`` calls it): itself on the CPU, else :meth:`torch_blocks` there."""
        device = torch.empty(0).to(*args, **kwargs).device
        return self if device.type == "cpu" else self.torch_blocks(device)

    def torch_blocks(self, device) -> DerivativeBlocks:
        """The same matrix as a :class:`~fastfp.amptorch.forces.DerivativeBlocks` of torch
        tensors on ``device`` (the frames' blocks concatenated), contracted by torch ops."""
        ptr = np.concatenate([f.fprime_ptr[:-1] + b for f, b in zip(self.frames, self.block_offsets)]
                             + [self.block_offsets[-1:]])
        j = np.concatenate([f.fprime_j + a for f, a in zip(self.frames, self.offsets)])
        fprimes = torch.from_numpy(np.concatenate([f.fprimes_t for f in self.frames])).transpose(1, 2)
        factor = torch.ones((self.n_atoms, self.width), dtype=fprimes.dtype, device=device)
        return DerivativeBlocks(torch.as_tensor(ptr, device=device), torch.as_tensor(j, device=device),
                                fprimes.to(device).contiguous(), factor)

    def __reduce__(self):
        # the frames as blocks (a FrameBlocks alone pickles as AMPTorch's COO tensor)
        return _block_diagonal, ([(f.fprime_ptr, f.fprime_j, f.fprimes_t) for f in self.frames],)


def _block_diagonal(arrays) -> BlockDiagonal:
    return BlockDiagonal(tuple(FrameBlocks(*a) for a in arrays))


def warm_up() -> None:
    """Load (compile on first use, then from numba's cache) the kernels of
    :class:`BlockDiagonal`, for float64 and float32, so that the first real call is not
    slower than the rest."""
    batch = BlockDiagonal((FrameBlocks(np.array([0, 1]), np.array([0]), np.ones((1, 3, 2))),))
    for dtype in (torch.float64, torch.float32):
        gradients = torch.ones(2, dtype=dtype, requires_grad=True)
        batch.contract(gradients).sum().backward()
