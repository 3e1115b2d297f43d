"""Frames to AMPTorch's torch_geometric ``Data`` objects, a chunk of frames at a time.

Same fields as AMPTorch's ``AtomsToData.convert`` (``amptorch/preprocessing/
atoms_to_data.py``): ``fingerprint`` (n_atoms, n_features), ``atomic_numbers``,
``num_nodes``, optionally ``energy`` (eV), ``forces`` (n_atoms, 3, eV/Å) and
``fprimes``, the derivative matrix (n_atoms * n_features, 3 n_atoms): AMPTorch's sparse
COO tensor or, inside :func:`blocks_in_data` (the in-memory data set of AMPTorch with
fastfp as its backend), fastfp's pair blocks
(:class:`~fastfp.amptorch.frame_blocks.FrameBlocks`).
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
from torch_geometric.data import Data
from tqdm.auto import tqdm

from ..frames import ase_label, stored_labels
from ..threads import single_threaded_libraries
from .frame_blocks import FrameBlocks

#: whether :func:`images_to_data` gives ``Data.fprimes`` as pair blocks (:func:`blocks_in_data`)
_BLOCKS = contextvars.ContextVar("fastfp_blocks_in_data", default=False)


@contextlib.contextmanager
def blocks_in_data():
    """Context manager: inside it :func:`images_to_data` (``AtomsToData.convert_all`` with
    a fastfp descriptor) gives each ``Data`` its derivatives as a
    :class:`~fastfp.amptorch.frame_blocks.FrameBlocks` rather than a COO tensor. The
    backend's :func:`~fastfp.amptorch.backend.preprocessing` enters it: the data sets
    ``AtomsDataset.process`` fills are contracted by fastfp's model hooks."""
    token = _BLOCKS.set(True)
    try:
        yield
    finally:
        _BLOCKS.reset(token)


def image_to_data(atoms, descriptors, primes, energy=None, forces=None) -> Data:
    """One ``Data`` from an ASE ``Atoms``, its fingerprints (N, width), derivatives
    (``(indices, val, size)``, see ``AMPTorchInterface.frame_outputs``, a
    :class:`~fastfp.amptorch.frame_blocks.FrameBlocks` or None) and labels (``energy``,
    eV, and ``forces`` (N, 3), eV/Å, as :func:`labels` reads them; None: not set). The
    COO arrays are taken over without copying when of the default dtype."""
    dtype = torch.get_default_dtype()
    data = Data(
        fingerprint=torch.tensor(descriptors, dtype=dtype),
        atomic_numbers=torch.as_tensor(atoms.numbers, dtype=torch.long),
        num_nodes=len(atoms),
    )
    if energy is not None:
        data.energy = energy
    if forces is not None:
        data.forces = torch.tensor(forces, dtype=dtype)
    if isinstance(primes, FrameBlocks):
        data.fprimes = primes
    elif primes is not None:
        indices, val, size = primes
        values = torch.from_numpy(val).to(dtype)
        data.fprimes = torch.sparse_coo_tensor(torch.from_numpy(indices), values, size, check_invariants=False)
    return data


def labels(frames, names) -> dict[str, list]:
    """What AMPTorch's conversion reads of each frame (``AtomsToData.convert``:
    ``atoms.get_potential_energy(apply_constraint=False)`` for the name ``"energy"``,
    ``atoms.get_forces(apply_constraint=False)`` for ``"forces"``), ``{name: [value of
    each frame]}`` for each of ``names``; ASE's check that the frames are unchanged made
    once for all of them where it can be (:func:`fastfp.frames.stored_labels`), else
    frame by frame; raises as ASE does."""
    stored = stored_labels(frames, names)
    if stored is not None:
        return stored
    return {name: [ase_label(atoms, name) for atoms in frames] for name in names}


def images_to_data(descriptor, images, r_energy=True, r_forces=True, derivatives=True, disable_tqdm=False) -> list:
    """``Data`` objects for ``images`` (a sequence of ASE ``Atoms``) with a
    :mod:`fastfp.amptorch` descriptor, featurized about ``CHUNK_ATOMS`` atoms per call
    (``featurized_chunks``), torch held to one thread meanwhile
    (:func:`~fastfp.threads.single_threaded_libraries`); derivatives as pair blocks
    inside :func:`blocks_in_data`, else as COO tensors."""
    images = [a if hasattr(a, "positions") else a.toatoms() for a in images]  # ase.db rows
    blocks = _BLOCKS.get()
    out = []
    with tqdm(total=len(images), desc="converting frames to Data (fastfp)", disable=disable_tqdm) as bar, \
            single_threaded_libraries():
        for _, chunk, fps in descriptor.featurized_chunks(images, derivatives=derivatives):
            out.extend(fingerprints_to_data(descriptor, chunk, fps, r_energy, r_forces, derivatives, blocks))
            bar.update(len(chunk))
    return out


def fingerprints_to_data(descriptor, chunk, fps, r_energy, r_forces, derivatives, blocks=False) -> list:
    """``Data`` objects for the frames ``chunk`` (ASE ``Atoms``) from their fingerprints
    ``fps``; derivatives as COO tensors or, with ``blocks``, as
    :class:`~fastfp.amptorch.frame_blocks.FrameBlocks` (the blocks of ``fps`` as the
    descriptor's COO conversion thresholds them, in torch's default dtype)."""
    outputs = descriptor.frame_outputs(fps, derivatives and not blocks)
    primes = [p for _, _, _, p in outputs]
    if derivatives and blocks:
        default = torch.empty(0).numpy().dtype  # torch's default dtype, as NumPy's
        primes = FrameBlocks.of_frames(fps, [d.shape[1] for _, d, _, _ in outputs], descriptor.prime_threshold,
                                       default)
    read = labels(chunk, [name for name, asked in (("energy", r_energy), ("forces", r_forces)) if asked])
    none = [None] * len(chunk)
    return [image_to_data(atoms, descriptors, p, energy, f)
            for atoms, (_, descriptors, _, _), p, energy, f
            in zip(chunk, outputs, primes, read.get("energy", none), read.get("forces", none))]
