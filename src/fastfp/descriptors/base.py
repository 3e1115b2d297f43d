"""What every descriptor shares: elements, cutoff, featurize()."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from .. import buffers
from ..fingerprints import Fingerprints
from ..frames import PackedFrames, element_numbers, pack_frames
from ..jacobian import Jacobian
from ..kernels.blocks import BLOCKS, FINGERPRINTS, J_PRODUCT, JT_PAIRS, pair_blocks, sum_pair_vectors
from ..neighbors import NeighborPairs
from ..threads import run_balanced, single_threaded_libraries


def check_device(device: str, result_dtype="float64", amptorch_binning: bool = False) -> np.dtype:
    """What may run where, checked once at each public entry point (:meth:`Descriptor.featurize`,
    :func:`fastfp.store.featurize_to_store`, :class:`fastfp.amptorch.onthefly.OnTheFlyDataset`):
    ``device`` is "cpu" or "cuda"; the results' ``result_dtype`` is float64, or float32
    on "cuda"; AMPTorch's neighbour binning (``amptorch_binning``,
    :func:`~fastfp.neighbors.amptorch_binning_mask`) exists on "cpu" only. Returns
    ``result_dtype`` as a NumPy dtype; raises ``ValueError`` naming what is not allowed."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if amptorch_binning and device != "cpu":
        raise ValueError("amptorch_binning (dropping the pairs AMPTorch's neighbour search misses) is "
                         "implemented on the CPU only; use device='cpu'")
    try:
        dtype = np.dtype(result_dtype)
    except TypeError:
        raise ValueError(f"result_dtype must be float64 or float32, got {result_dtype!r}") from None
    if dtype not in (np.float64, np.float32):
        raise ValueError(f"result_dtype must be float64 or float32, got {dtype}")
    if dtype == np.float32 and device == "cpu":
        raise ValueError("result_dtype float32 is available with device='cuda' only; the CPU kernels compute float64")
    return dtype


class Descriptor(ABC):
    """A descriptor of atomic environments within ``cutoff`` (Å) for ``elements``.

    Subclasses build :attr:`tables` from their settings and implement
    :meth:`neighbor_pairs` and :meth:`_kernel_inputs` on packed frames.
    """

    #: the arrays the kernels read, built once from the settings: a
    #: :class:`~fastfp.kernels.tables.GMPTables` or
    #: :class:`~fastfp.kernels.tables.GaussianTables`, the same object for the CPU and
    #: GPU kernels
    tables: tuple

    #: AMPTorch's name of the descriptor (``descriptor_type``)
    descriptor_type: str = ""

    def __init__(self, elements: Sequence[str], cutoff: float):
        if len(elements) == 0:
            raise ValueError("'elements' is empty")
        self.elements = list(elements)
        self.numbers = element_numbers(self.elements)
        self.cutoff = float(cutoff)  # checked with the parameters (fastfp.descriptors.params)
        # species index (position in ``elements``) of each atomic number
        self.species_of = np.full(119, -1, dtype=np.int64)
        self.species_of[self.numbers] = np.arange(len(self.numbers))

    @property
    @abstractmethod
    def n_features(self) -> int:
        """Width of the fingerprint rows (the largest over elements)."""

    def features_per_element(self) -> dict[str, int]:
        """Number of (unpadded) features of each element."""
        return {el: self.n_features for el in self.elements}

    def featurize(self, frames, *, derivatives: bool = True, first_index: int = 0, device: str = "cpu",
                  result_dtype="float64", amptorch_binning: bool = False) -> Fingerprints:
        """Fingerprints of ``frames`` (a sequence of ASE ``Atoms``), all in one batch.

        With ``derivatives`` the exact derivative blocks are included (see
        :class:`~fastfp.fingerprints.Fingerprints`). ``first_index`` offsets frame numbers in
        error messages. ``device="cuda"`` computes on the current CUDA GPU and returns CuPy
        arrays there (:func:`fastfp.gpu.featurize.featurize_packed`); ``result_dtype``
        float32 (GPU only) computes in float32: half the memory, and the speed of GPUs
        whose float64 is slow. ``amptorch_binning`` (CPU only)
        drops the pairs of atoms AMPTorch's own neighbour search misses
        (:func:`~fastfp.neighbors.amptorch_binning_mask`), for AMPTorch's numbers one to
        one. Raises :class:`~fastfp.frames.FrameError` naming a bad frame, ``ValueError``
        for what :func:`check_device` refuses, :class:`fastfp.gpu.device.DeviceError` if
        ``device="cuda"`` cannot run (never a silent fall-back to the CPU).
        """
        result_dtype = check_device(device, result_dtype, amptorch_binning)
        packed = pack_frames(frames, self.numbers, first_index=first_index)
        return self._featurize_packed(packed, derivatives, device, result_dtype, amptorch_binning)

    def featurize_packed(self, packed: PackedFrames, *, derivatives: bool = True, device: str = "cpu",
                         result_dtype="float64", amptorch_binning: bool = False) -> Fingerprints:
        """As :meth:`featurize`, for frames already packed by :func:`~fastfp.frames.pack_frames`."""
        result_dtype = check_device(device, result_dtype, amptorch_binning)
        return self._featurize_packed(packed, derivatives, device, result_dtype, amptorch_binning)

    def _featurize_packed(self, packed: PackedFrames, derivatives: bool, device: str, result_dtype: np.dtype,
                          amptorch_binning: bool) -> Fingerprints:
        """:meth:`featurize_packed` with arguments :func:`check_device` has checked."""
        if device == "cuda":
            from ..gpu.featurize import featurize_packed  # CuPy and numba-cuda only when asked for

            return featurize_packed(self, packed, derivatives=derivatives, result_dtype=result_dtype)
        with single_threaded_libraries():
            return self.featurize_pairs(packed, self.neighbor_pairs(packed, amptorch_binning=amptorch_binning),
                                        derivatives=derivatives)

    def jacobian(self, packed: PackedFrames, *, amptorch_binning: bool = False,
                 pairs: NeighborPairs | None = None) -> Jacobian:
        """The derivative matrix J = d fingerprints / d positions of ``packed`` frames
        (:func:`~fastfp.frames.pack_frames`; the matrix of :meth:`featurize`'s derivative
        blocks) as a :class:`~fastfp.jacobian.Jacobian`: its fingerprints and the
        products J x and J^T x, recomputed by this descriptor's kernels on the CPU without
        storing J. ``amptorch_binning`` as in :meth:`featurize`; ``pairs``, the frames'
        :meth:`neighbor_pairs` where found already (then the search is not repeated; frames
        of at most :data:`~fastfp.jacobian.PART_ATOMS` atoms, else ``ValueError``)."""
        return Jacobian(packed, self.n_features,
                        functools.partial(self.neighbor_pairs, amptorch_binning=amptorch_binning),
                        self.featurize_pairs, self._jacobian_product, pairs=pairs)

    def featurize_pairs(self, packed: PackedFrames, pairs: NeighborPairs, *, derivatives: bool = True) -> Fingerprints:
        """As :meth:`featurize_packed` on the CPU, in its second step: for frames whose
        :meth:`neighbor_pairs` were found already (in another thread, say, while this one
        featurizes; or to time the kernels alone)."""
        fp, deriv = self._compute(packed, pairs, derivatives)
        return Fingerprints(fingerprints=fp, offsets=packed.offsets, numbers=packed.numbers, **deriv)

    def _compute(self, packed: PackedFrames, pairs: NeighborPairs, derivatives: bool) -> tuple[np.ndarray, dict]:
        """Return fingerprints (n_atoms, n_features) and, with derivatives, the dict
        ``fprime_ptr``, ``fprime_j``, ``fprimes`` (else an empty dict), of ``packed``
        from its :meth:`neighbor_pairs` ``pairs``."""
        if not derivatives:
            return self._run_kernel(FINGERPRINTS, packed, pairs)[0], {}
        block_ptr, block_j, pair_block = pair_blocks(pairs.ptr, pairs.j)
        # uninitialised (each centre's blocks are zeroed just before they are filled), in
        # the memory of earlier blocks nothing refers to any more: no page faults
        fprimes = buffers.empty((len(block_j), self.n_features, 3))
        fp = self._run_kernel(BLOCKS, packed, pairs, blocks=(pair_block, block_ptr, fprimes))[0]
        return fp, dict(fprime_ptr=block_ptr, fprime_j=block_j, fprimes=fprimes)

    def _jacobian_product(self, packed: PackedFrames, pairs: NeighborPairs, x: np.ndarray,
                          transpose: bool = False) -> np.ndarray:
        """J x ((n_atoms, 3) -> (n_atoms, n_features)) or, with ``transpose``, J^T x
        ((n_atoms, n_features) -> (n_atoms, 3)), J = d fingerprints / d positions of
        ``packed`` (the matrix of :meth:`featurize`'s derivative blocks), float64,
        recomputed pair by pair from the frames' :meth:`neighbor_pairs` ``pairs``: no
        array of J's size is made (the kernel modes of :mod:`fastfp.kernels.blocks`).
        The same numbers whatever the number of threads."""
        n_atoms = len(pairs.ptr) - 1
        width = self.n_features if transpose else 3
        if x.shape != (n_atoms, width):
            raise ValueError(f"x has shape {x.shape}, expected {(n_atoms, width)}")
        x = np.ascontiguousarray(x, dtype=np.float64)
        if not transpose:
            return self._run_kernel(J_PRODUCT, packed, pairs, x=x, out=np.empty((n_atoms, self.n_features)))[1]
        pair_vectors = self._run_kernel(JT_PAIRS, packed, pairs, x=x, out=np.empty((len(pairs.j), 3)))[1]
        out = np.zeros((n_atoms, 3))
        sum_pair_vectors(pairs.ptr, pairs.j, pair_vectors, out)
        return out

    def _run_kernel(self, mode: int, packed: PackedFrames, pairs: NeighborPairs, blocks=None, x=None,
                    out=None) -> tuple[np.ndarray, np.ndarray]:
        """Run this descriptor's kernel in ``mode`` (:mod:`fastfp.kernels.blocks`) over
        all centres of ``pairs``, in ranges of about equal pair counts on
        :func:`~fastfp.threads.num_threads` threads (:func:`~fastfp.threads.run_balanced`),
        with its :attr:`tables` and the inputs of :meth:`_kernel_inputs`: ``blocks``
        ``(pair_block, block_ptr, fprimes)`` for ``BLOCKS``, ``x`` and ``out`` for the
        products. Returns the fingerprints (allocated here) and ``out``."""
        n_atoms = len(pairs.ptr) - 1
        kernel, inputs = self._kernel_inputs(packed, pairs)
        empty_index = np.empty(0, dtype=np.int64)
        pair_block, block_ptr, fprimes = blocks or (empty_index, empty_index, np.empty((0, 0, 0)))
        x = np.empty((0, 0)) if x is None else x
        out = np.empty((0, 0)) if out is None else out
        fp = np.empty((n_atoms, self.n_features))
        run_balanced(lambda start, stop: kernel(pairs.ptr, pairs.j, *inputs, self.tables, mode, fp, pair_block,
                                                block_ptr, fprimes, x, out, start, stop), pairs.ptr)
        return fp, out

    @abstractmethod
    def _kernel_inputs(self, packed: PackedFrames, pairs: NeighborPairs) -> tuple:
        """``(kernel, inputs)``: this descriptor's kernel and the arrays of ``packed``
        and its ``pairs`` it takes between the neighbours and the tables (see
        :meth:`_run_kernel`)."""

    @abstractmethod
    def neighbor_pairs(self, packed: PackedFrames, *, amptorch_binning: bool = False) -> NeighborPairs:
        """The pairs of atoms of ``packed`` that the kernels read, grouped by centre
        (:func:`fastfp.neighbors.neighbor_pairs` with this descriptor's settings and
        ``amptorch_binning``): the first step of :meth:`featurize_packed` on the CPU."""
