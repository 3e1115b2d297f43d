"""Forward passes for AMPTorch's ``BPNN`` and ``SingleNN`` with fastfp's force contraction.

Energies are summed per image from per-atom network outputs, as in
``amptorch/model.py``; forces are -dE/dr through the fingerprint derivatives, contracted
by :func:`~fastfp.amptorch.forces.contract_forces` instead of ``torch.sparse.mm``.
"""

from __future__ import annotations

import torch
from torch.autograd import grad

from .forces import contract_forces


def _energy_and_forces(model, batch, fingerprints, atomic_energies):
    energy = torch.zeros(batch.num_graphs, dtype=atomic_energies.dtype, device=atomic_energies.device)
    energy = energy.index_add(0, batch.batch, atomic_energies)
    if not model.get_forces:
        return energy, torch.tensor([], device=energy.device)
    gradients = grad(energy, fingerprints, grad_outputs=torch.ones_like(energy), create_graph=True)[0]
    return energy, contract_forces(batch.fprimes, gradients)


def bpnn_forward(self, batch):
    """``BPNN.forward``: one network per element, selected by the element mask."""
    if isinstance(batch, list):
        batch = batch[0]
    with torch.enable_grad():
        fingerprints = batch.fingerprint
        fingerprints.requires_grad = True
        outputs = torch.cat([net(fingerprints) for net in self.elementwise_models], dim=1)
        atomic_energies = torch.sum(self.element_mask(batch.atomic_numbers) * outputs, dim=1)
        return _energy_and_forces(self, batch, fingerprints, atomic_energies)


def singlenn_forward(self, batch):
    """``SingleNN.forward``: one network shared by all elements."""
    if isinstance(batch, list):
        batch = batch[0]
    with torch.enable_grad():
        fingerprints = batch.fingerprint
        fingerprints.requires_grad = True
        atomic_energies = torch.sum(self.model(fingerprints), dim=1)
        return _energy_and_forces(self, batch, fingerprints, atomic_energies)
