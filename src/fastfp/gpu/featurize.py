"""``Descriptor.featurize(..., device="cuda")``: frames in host memory to fingerprints
and derivative blocks on the GPU, in :class:`~fastfp.fingerprints.Fingerprints` layout."""

from __future__ import annotations

import numpy as np

from ..fingerprints import Fingerprints
from ..frames import PackedFrames
from ..kernels.tables import GaussianTables, GMPTables
from . import gaussian, gmp
from .blocks import pair_blocks
from .device import array_module, check_room
from .neighbors import neighbor_pairs

#: the kernels of each kind of tables
_KERNELS = {GMPTables: gmp, GaussianTables: gaussian}


def featurize_packed(desc, packed: PackedFrames, *, derivatives: bool, result_dtype: np.dtype) -> Fingerprints:
    """Fingerprints of ``packed`` by ``desc`` on the current CUDA device (or in numba's
    CUDA simulator), every array of the result on the device: CuPy arrays (NumPy under
    the simulator) that torch takes without a copy (``torch.from_dlpack``).

    Fingerprints and derivative blocks are ``result_dtype`` (float64 or float32; the kernels
    compute in float64 either way); indices are int64. The blocks of centre i are i
    itself, then its other neighbours j in ascending order (the CPU path orders them as
    its neighbour list does). Raises :class:`~fastfp.gpu.device.DeviceError` if no GPU
    can run, :class:`~fastfp.gpu.device.DeviceMemoryError` naming the sizes if the batch
    does not fit in the GPU's free memory. The neighbour list is complete (AMPTorch's
    neighbour binning is CPU only: :func:`~fastfp.descriptors.base.check_device`).
    """
    module = _KERNELS[type(desc.tables)]
    xp = array_module()
    pairs = neighbor_pairs(xp, packed, desc.cutoff, self_pairs=module.SELF_PAIRS)
    n_atoms, n_feat = packed.n_atoms, desc.n_features
    if derivatives:
        block_ptr, block_j, pair_block = pair_blocks(xp, pairs, n_feat * 3 * result_dtype.itemsize)
    else:
        block_ptr = block_j = pair_block = xp.empty(0, dtype=np.int64)
    check_room(xp, n_atoms * n_feat * result_dtype.itemsize, f"the fingerprints ({n_atoms:,} atoms)")
    fp = xp.zeros((n_atoms, n_feat), dtype=result_dtype)
    fprimes = xp.zeros((len(block_j), n_feat, 3), dtype=result_dtype)
    numbers = xp.asarray(packed.numbers)
    species = xp.asarray(desc.species_of)[numbers]
    module.run(xp, desc.tables, species, pairs, pair_block, block_ptr, bool(derivatives), fp, fprimes)
    deriv = dict(fprime_ptr=block_ptr, fprime_j=block_j, fprimes=fprimes) if derivatives else {}
    return Fingerprints(fingerprints=fp, offsets=xp.asarray(packed.offsets), numbers=numbers, **deriv)
