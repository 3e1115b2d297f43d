"""Frames to AMPTorch's torch_geometric ``Data`` objects, a chunk of frames at a time.

Same fields as AMPTorch's ``AtomsToData.convert`` (``amptorch/preprocessing/
atoms_to_data.py``): ``fingerprint`` (n_atoms, n_features), ``atomic_numbers``,
``num_nodes``, optionally ``energy`` (eV), ``forces`` (n_atoms, 3, eV/Å) and
``fprimes``, the sparse COO derivative matrix (n_atoms * n_features, 3 n_atoms).
"""

from __future__ import annotations

import torch
from torch_geometric.data import Data
from tqdm.auto import tqdm

from ..threads import single_threaded_libraries


def image_to_data(atoms, descriptors, primes, r_energy: bool, r_forces: bool) -> Data:
    """One ``Data`` from an ASE ``Atoms``, its fingerprints (N, width) and derivatives
    ``(indices, val, size)`` or None (see ``AMPTorchInterface.frame_outputs``). The
    derivative arrays are taken over without copying when of the default dtype."""
    dtype = torch.get_default_dtype()
    data = Data(
        fingerprint=torch.tensor(descriptors, dtype=dtype),
        atomic_numbers=torch.as_tensor(atoms.numbers, dtype=torch.long),
        num_nodes=len(atoms),
    )
    if r_energy:
        data.energy = atoms.get_potential_energy(apply_constraint=False)
    if r_forces:
        data.forces = torch.tensor(_forces(atoms, checked=r_energy), dtype=dtype)
    if primes is not None:
        indices, val, size = primes
        values = torch.from_numpy(val).to(dtype)
        data.fprimes = torch.sparse_coo_tensor(torch.from_numpy(indices), values, size, check_invariants=False)
    return data


def _forces(atoms, checked: bool):
    """``atoms.get_forces(apply_constraint=False)`` (n_atoms, 3), eV/Å. With ``checked``
    (``get_potential_energy`` has just compared the frame with its calculator's copy, as
    ASE's ``Calculator.get_property`` does for each property), the forces are read from
    the calculator's ``results`` without comparing again: the comparison is most of the
    cost of reading a label from a ``SinglePointCalculator``."""
    results = getattr(atoms.calc, "results", None)
    if checked and isinstance(results, dict) and "forces" in results:
        return results["forces"]
    return atoms.get_forces(apply_constraint=False)


def images_to_data(descriptor, images, r_energy=True, r_forces=True, derivatives=True, disable_tqdm=False) -> list:
    """``Data`` objects for ``images`` (a sequence of ASE ``Atoms``) with a
    :mod:`fastfp.amptorch` descriptor, featurized about ``CHUNK_ATOMS`` atoms per call
    (``featurized_chunks``), torch held to one thread meanwhile
    (:func:`~fastfp.threads.single_threaded_libraries`)."""
    images = [a if hasattr(a, "positions") else a.toatoms() for a in images]  # ase.db rows
    out = []
    with tqdm(total=len(images), desc="converting frames to Data (fastfp)", disable=disable_tqdm) as bar, \
            single_threaded_libraries():
        for _, chunk, fps in descriptor.featurized_chunks(images, derivatives=derivatives):
            out.extend(fingerprints_to_data(descriptor, chunk, fps, r_energy, r_forces, derivatives))
            bar.update(len(chunk))
    return out


def fingerprints_to_data(descriptor, chunk, fps, r_energy, r_forces, derivatives) -> list:
    """``Data`` objects for the frames ``chunk`` (ASE ``Atoms``) from their fingerprints ``fps``."""
    return [image_to_data(atoms, descriptors, primes, r_energy, r_forces)
            for atoms, (_, descriptors, _, primes) in zip(chunk, descriptor.frame_outputs(fps, derivatives))]
