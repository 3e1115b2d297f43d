"""``Descriptor.featurize(..., device="cuda")``: frames to fingerprints and derivative
blocks on the GPU, in :class:`~fastfp.fingerprints.Fingerprints` layout."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from ..fingerprints import Fingerprints
from ..frames import PackedFrames
from ..kernels.tables import GaussianTables, GMPTables
from . import gaussian, gmp
from .device import array_module, check_room
from .frames import DeviceFrames, to_device
from .neighbors import neighbor_pairs

#: the kernels of each kind of tables
KERNELS = {GMPTables: gmp, GaussianTables: gaussian}


def _no_stages(name: str):
    return nullcontext()


def featurize_packed(desc, packed: PackedFrames, *, derivatives: bool, result_dtype: np.dtype,
                     stage=_no_stages) -> Fingerprints:
    """Fingerprints of ``packed`` (host arrays) by ``desc`` on the current CUDA device (or
    in numba's CUDA simulator): :func:`featurize_frames` of the frames copied there."""
    with stage("copy to the device"):
        frames = to_device(array_module(), packed)
    return featurize_frames(desc, frames, derivatives=derivatives, result_dtype=result_dtype, stage=stage)


def featurize_frames(desc, frames: DeviceFrames, *, derivatives: bool, result_dtype: np.dtype,
                     stage=_no_stages) -> Fingerprints:
    """Fingerprints of ``frames`` (on the device) by ``desc``, every array of the result on
    the device: CuPy arrays (NumPy under the simulator) that torch takes without a copy
    (``torch.from_dlpack``). The work is queued on CuPy's current stream.

    The kernels compute in ``result_dtype`` (float64 or float32), the type of the
    fingerprints and derivative blocks; indices are int64. The blocks of centre i are i
    itself, then its other neighbours j in ascending order (the CPU path orders them as
    its neighbour list does). Raises :class:`~fastfp.gpu.device.DeviceError` if no GPU
    can run, :class:`~fastfp.gpu.device.DeviceMemoryError` naming the sizes if the batch
    does not fit in the GPU's free memory. The neighbour list is complete (AMPTorch's
    neighbour binning is CPU only: :func:`~fastfp.descriptors.base.check_device`).

    ``stage(name)`` is entered around each stage (for timing them: ``scripts/gpu_check.py``).
    """
    module = KERNELS[type(desc.tables)]
    xp = array_module()
    n_atoms, n_feat = frames.n_atoms, desc.n_features
    derivatives = bool(derivatives)
    with stage("neighbour list"):
        pairs = neighbor_pairs(xp, frames, desc.cutoff, self_pairs=module.SELF_PAIRS, blocks=derivatives,
                               real=result_dtype, block_bytes=n_feat * 3 * result_dtype.itemsize)
    with stage("descriptor kernel"):
        check_room(xp, n_atoms * n_feat * result_dtype.itemsize, f"the fingerprints ({n_atoms:,} atoms)")
        fp = xp.empty((n_atoms, n_feat), dtype=result_dtype)  # the kernels write every entry
        fprimes = xp.empty((len(pairs.block_j), n_feat, 3), dtype=result_dtype)
        species = xp.asarray(desc.species_of)[frames.numbers]
        module.run(xp, desc.tables, species, pairs, derivatives, fp, fprimes)
    deriv = dict(fprime_ptr=pairs.block_ptr, fprime_j=pairs.block_j, fprimes=fprimes) if derivatives else {}
    return Fingerprints(fingerprints=fp, offsets=frames.offsets, numbers=frames.numbers, **deriv)
