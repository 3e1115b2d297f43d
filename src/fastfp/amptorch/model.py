"""The network's pass with forces of AMPTorch's ``BPNN`` and ``SingleNN``, with fastfp's
force contraction.

Energies are summed per image from per-atom network outputs, as in
``amptorch/model.py``; forces are -dE/dr through the fingerprint derivatives, contracted
by the batch's collated derivatives (``batch.fprimes.contract``, fastfp's objects of
:mod:`fastfp.amptorch.forces` and :mod:`fastfp.amptorch.frame_blocks`) instead of
``torch.sparse.mm``.
The two models differ only in how atomic energies come from the fingerprints (their
``atomic_energies``). AMPTorch with fastfp's patch series calls :func:`energy_and_forces`
through the hook of the batch's collated derivatives (``fprimes.energy_and_forces``);
:func:`fastfp.amptorch.install` makes it the models' ``forward`` and gives unpatched
models the series' ``atomic_energies`` (:func:`bpnn_atomic_energies`,
:func:`singlenn_atomic_energies`).

With forces, autograd keeps the network's activations and the graph of dE/dG for the
force loss's gradient: about 250 numbers an atom for SingleNN 3x20, 3.2 GB for the
1.5 million atoms of all 16,000 default frames in one batch. A batch of more than
:data:`PIECE_ATOMS` atoms through a network that treats each atom on its own (no
batch normalisation or dropout in training mode) goes through it in pieces of that
many atoms: the forward pass keeps only each piece's energies and dE/dG, and the
backward pass recomputes one piece's graph at a time (activation checkpointing). The
results are the same up to the order of the sums over pieces.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd import grad
from torch.autograd.function import once_differentiable


#: atoms per piece of a larger batch's network pass with forces (a piece's graph: some
#: 130 MB for SingleNN 3x20 in float64)
PIECE_ATOMS = 2**16


class CollatedDerivatives:
    """A collated batch's derivatives as AMPTorch's model takes them from a fingerprint
    backend: ``contract(gradients)``, the forces (n_atoms, 3) from dE/dG (the
    subclass's), and the model's whole pass with forces, ``energy_and_forces(model,
    batch)`` (the hook of fastfp's patch series: :func:`energy_and_forces`)."""

    def energy_and_forces(self, model, batch):
        """``(energy per image, forces)`` of ``batch`` (whose ``fprimes`` this is) through ``model``."""
        return energy_and_forces(model, batch)


def energy_and_forces(model, batch):
    """``(energy per image (n_images,), forces (n_atoms, 3))`` of ``batch`` (a
    torch_geometric ``Batch``, or a list holding one) through ``model``, whose
    ``atomic_energies(fingerprints, atomic_numbers)`` gives the energy of every atom
    (n_atoms,); the forces are empty without ``model.get_forces``, else contracted by
    ``batch.fprimes.contract`` (a :class:`CollatedDerivatives`). Units those of the
    model's energies, per Å for the forces. A batch of more than :data:`PIECE_ATOMS`
    atoms with forces goes through the network in pieces (the module's docstring).

    The pass AMPTorch's ``amptorch.model.energy_and_forces`` (fastfp's patch series)
    hands to the batch's collated derivatives; as a method, ``forward`` of a model."""
    if isinstance(batch, list):
        batch = batch[0]
    with torch.enable_grad():
        fingerprints = batch.fingerprint
        fingerprints.requires_grad = True
        numbers = batch.atomic_numbers
        in_pieces = model.get_forces and len(numbers) > PIECE_ATOMS and _atoms_apart(model)
        if in_pieces:
            parameters = [p for p in model.parameters() if p.requires_grad]
            per_atom, gradients = _InPieces.apply(model.atomic_energies, fingerprints, numbers, *parameters)
        else:
            per_atom = model.atomic_energies(fingerprints, numbers)
        energy = torch.zeros(batch.num_graphs, dtype=per_atom.dtype, device=per_atom.device)
        energy = energy.index_add(0, batch.batch, per_atom)
        if not model.get_forces:
            return energy, torch.tensor([], device=energy.device)
        if not in_pieces:
            gradients = grad(energy, fingerprints, grad_outputs=torch.ones_like(energy), create_graph=True)[0]
        return energy, batch.fprimes.contract(gradients)


#: modules that mix a batch's atoms in training mode (batch statistics) or draw random
#: numbers there (a recomputation would draw others)
MIXING_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.Dropout, nn.Dropout1d,
                  nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _atoms_apart(model) -> bool:
    """Whether ``model`` computes each atom's energy from its fingerprints alone, as far
    as its modules say: none of :data:`MIXING_MODULES` in training mode."""
    return not any(module.training and isinstance(module, MIXING_MODULES) for module in model.modules())


class _InPieces(torch.autograd.Function):
    """``(atomic energies (n_atoms,), their gradients by the fingerprints (n_atoms,
    n_features))`` of ``network(fingerprints, atomic_numbers)``, :data:`PIECE_ATOMS`
    atoms at a time. The forward pass keeps no graph; the backward pass recomputes
    each piece's (energies and gradients with ``create_graph``) and takes its products
    with the incoming gradients, summed over the pieces in order. ``parameters``: the
    network's, so that they get their gradients."""

    @staticmethod
    def forward(ctx, network, fingerprints, numbers, *parameters):
        ctx.network = network
        ctx.parameters = parameters
        ctx.save_for_backward(fingerprints, numbers)
        energies, gradients = [], []
        for piece in _pieces(len(numbers)):
            _, per_atom, piece_gradients = _piece(network, fingerprints, numbers, piece, create_graph=False)
            energies.append(per_atom.detach())
            gradients.append(piece_gradients)
        return torch.cat(energies), torch.cat(gradients)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_energies, grad_gradients):
        fingerprints, numbers = ctx.saved_tensors
        grad_fingerprints = torch.empty_like(fingerprints) if ctx.needs_input_grad[1] else None
        grad_parameters = [None] * len(ctx.parameters)
        for piece in _pieces(len(numbers)):
            x, per_atom, gradients = _piece(ctx.network, fingerprints, numbers, piece, create_graph=True)
            products = grad((per_atom, gradients), (x, *ctx.parameters), (grad_energies[piece], grad_gradients[piece]),
                            allow_unused=True)
            if grad_fingerprints is not None:
                grad_fingerprints[piece] = products[0]
            for k, product in enumerate(products[1:]):
                if product is not None:
                    grad_parameters[k] = product if grad_parameters[k] is None else grad_parameters[k] + product
        return None, grad_fingerprints, None, *grad_parameters


def _piece(network, fingerprints, numbers, piece: slice, create_graph: bool):
    """``(x, atomic energies, their gradients by x)`` of the atoms ``piece``, ``x`` their
    fingerprints detached from the batch's graph; with ``create_graph`` the gradients'
    graph is kept for a second differentiation."""
    with torch.enable_grad():
        x = fingerprints[piece].detach().requires_grad_()
        per_atom = network(x, numbers[piece])
        gradients = grad(per_atom, x, grad_outputs=torch.ones_like(per_atom), create_graph=create_graph)[0]
    return x, per_atom, gradients


def _pieces(n_atoms: int):
    """Slices of :data:`PIECE_ATOMS` atoms (the last shorter) over ``n_atoms``."""
    return [slice(start, min(start + PIECE_ATOMS, n_atoms)) for start in range(0, n_atoms, PIECE_ATOMS)]


def bpnn_atomic_energies(self, fingerprints, atomic_numbers):
    """``BPNN.atomic_energies`` (fastfp's patch series): the energy of every atom (n_atoms,)
    from the network of its element, selected by the element mask."""
    outputs = torch.cat([net(fingerprints) for net in self.elementwise_models], dim=1)
    return torch.sum(self.element_mask(atomic_numbers) * outputs, dim=1)


def singlenn_atomic_energies(self, fingerprints, atomic_numbers):
    """``SingleNN.atomic_energies`` (fastfp's patch series): the energy of every atom
    (n_atoms,) from the network all elements share."""
    return torch.sum(self.model(fingerprints), dim=1)
