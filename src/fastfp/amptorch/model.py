"""Forward passes for AMPTorch's ``BPNN`` and ``SingleNN`` with fastfp's force contraction.

Energies are summed per image from per-atom network outputs, as in
``amptorch/model.py``; forces are -dE/dr through the fingerprint derivatives, contracted
by :func:`~fastfp.amptorch.forces.contract_forces` instead of ``torch.sparse.mm``.
The two models differ only in how atomic energies come from the fingerprints.
"""

from __future__ import annotations

import torch
from torch.autograd import grad

from .forces import contract_forces


def _forward(model, batch, atomic_energies):
    """``(energy per image, forces)`` of ``batch``, the atomic energies from
    ``atomic_energies(model, fingerprints, atomic_numbers)``."""
    if isinstance(batch, list):
        batch = batch[0]
    with torch.enable_grad():
        fingerprints = batch.fingerprint
        fingerprints.requires_grad = True
        per_atom = atomic_energies(model, fingerprints, batch.atomic_numbers)
        energy = torch.zeros(batch.num_graphs, dtype=per_atom.dtype, device=per_atom.device)
        energy = energy.index_add(0, batch.batch, per_atom)
        if not model.get_forces:
            return energy, torch.tensor([], device=energy.device)
        gradients = grad(energy, fingerprints, grad_outputs=torch.ones_like(energy), create_graph=True)[0]
        return energy, contract_forces(batch.fprimes, gradients)


def _bpnn_atomic_energies(model, fingerprints, atomic_numbers):
    outputs = torch.cat([net(fingerprints) for net in model.elementwise_models], dim=1)
    return torch.sum(model.element_mask(atomic_numbers) * outputs, dim=1)


def _singlenn_atomic_energies(model, fingerprints, atomic_numbers):
    return torch.sum(model.model(fingerprints), dim=1)


def bpnn_forward(self, batch):
    """``BPNN.forward``: one network per element, selected by the element mask."""
    return _forward(self, batch, _bpnn_atomic_energies)


def singlenn_forward(self, batch):
    """``SingleNN.forward``: one network shared by all elements."""
    return _forward(self, batch, _singlenn_atomic_energies)
