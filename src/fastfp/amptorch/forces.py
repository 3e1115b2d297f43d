"""Force contraction without ``torch.sparse.mm``.

AMPTorch's ``BPNN`` and ``SingleNN`` (``amptorch/model.py``) compute

    forces = -(dG/dr)^T dE/dG = -torch.sparse.mm(fprimes.t(), gradients.t())

with ``fprimes`` the COO derivative matrix (rows ``atom * n_features + feature``,
columns ``atom * 3 + xyz``). Here the same product is a gather, a multiply and an
``index_add``: linear in ``gradients``, so autograd differentiates it to any order
(training backpropagates through the forces).
"""

from __future__ import annotations

import torch


def contract_forces(fprimes: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Forces (n_atoms, 3) from the COO matrix ``fprimes`` (n_atoms * n_features, 3 n_atoms)
    and ``gradients`` dE/dG with n_atoms * n_features elements (any shape).

    Units: those of E per unit of position (eV/Å for AMPTorch). The result equals
    ``-torch.sparse.mm(fprimes.t(), gradients.reshape(-1, 1)).view(-1, 3)``.
    """
    rows, cols = fprimes._indices()
    weighted = fprimes._values() * gradients.reshape(-1)[rows]
    forces = torch.zeros(fprimes.shape[1], dtype=weighted.dtype, device=weighted.device)
    return -forces.index_add(0, cols, weighted).view(-1, 3)
