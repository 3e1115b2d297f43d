"""What every descriptor shares: elements, cutoff, featurize()."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from ..fingerprints import Fingerprints
from ..frames import PackedFrames, element_numbers, pack_frames
from ..kernels.blocks import pair_blocks
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
    :meth:`neighbor_pairs` and :meth:`_compute` on packed frames.
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

    def featurize_pairs(self, packed: PackedFrames, pairs: NeighborPairs, *, derivatives: bool = True) -> Fingerprints:
        """As :meth:`featurize_packed` on the CPU, in its second step: for frames whose
        :meth:`neighbor_pairs` were found already (in another thread, say, while this one
        featurizes; or to time the kernels alone)."""
        fp, deriv = self._compute(packed, pairs, derivatives)
        return Fingerprints(fingerprints=fp, offsets=packed.offsets, numbers=packed.numbers, **deriv)

    def _run_kernel(self, kernel, pairs: NeighborPairs, derivatives: bool, *inputs) -> tuple[np.ndarray, dict]:
        """Run a featurization ``kernel`` over all centres of ``pairs``, in ranges of
        about equal pair counts on :func:`~fastfp.threads.num_threads` threads
        (:func:`~fastfp.threads.run_balanced`). The kernel is called as ``kernel(ptr,
        pair_block, block_ptr, *inputs, tables, derivatives, fp, fprimes, atom_start,
        atom_stop)`` with this descriptor's :attr:`tables` and fills ``fp`` and ``fprimes``
        (allocated here). Returns what :meth:`_compute` returns."""
        n_atoms = len(pairs.ptr) - 1
        derivatives = bool(derivatives)
        if derivatives:
            block_ptr, block_j, pair_block = pair_blocks(pairs.ptr, pairs.j)
        else:
            block_ptr = block_j = pair_block = np.empty(0, dtype=np.int64)
        # np.empty, filled by the kernels: numpy asks for huge pages on large arrays (a
        # fraction of the page faults), and each centre's blocks are zeroed just before
        # they are filled
        fp = np.empty((n_atoms, self.n_features))
        fprimes = np.empty((len(block_j), self.n_features, 3))
        run_balanced(lambda start, stop: kernel(pairs.ptr, pair_block, block_ptr, *inputs, self.tables, derivatives,
                                                fp, fprimes, start, stop), pairs.ptr)
        if not derivatives:
            return fp, {}
        return fp, dict(fprime_ptr=block_ptr, fprime_j=block_j, fprimes=fprimes)

    @abstractmethod
    def neighbor_pairs(self, packed: PackedFrames, *, amptorch_binning: bool = False) -> NeighborPairs:
        """The pairs of atoms of ``packed`` that the kernels read, grouped by centre
        (:func:`fastfp.neighbors.neighbor_pairs` with this descriptor's settings and
        ``amptorch_binning``): the first step of :meth:`featurize_packed` on the CPU."""

    @abstractmethod
    def _compute(self, packed: PackedFrames, pairs: NeighborPairs, derivatives: bool) -> tuple[np.ndarray, dict]:
        """Return fingerprints (n_atoms, n_features) and, with derivatives, the dict
        ``fprime_ptr``, ``fprime_j``, ``fprimes`` (else an empty dict), of ``packed``
        from its :meth:`neighbor_pairs` ``pairs``."""
