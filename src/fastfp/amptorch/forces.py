"""Force contraction without ``torch.sparse.mm``.

AMPTorch's ``BPNN`` and ``SingleNN`` (``amptorch/model.py``) compute

    forces = -(dG/dr)^T dE/dG = -torch.sparse.mm(fprimes.t(), gradients.t())

with ``fprimes`` the COO derivative matrix (rows ``atom * n_features + feature``,
columns ``atom * 3 + xyz``). Here the same product is one pass over the COO entries,
``out[col] -= val * x[row]``: a compiled (numba) loop on CPU, a gather, multiply and
``index_add`` elsewhere. It is wrapped in an ``autograd.Function`` whose backward is
the transposed pass (``out[row] -= val * x[col]``), itself the same ``Function``: the
map is linear in ``gradients``, so autograd differentiates it to any order (training
backpropagates through the forces; ``tests/test_amptorch_torch.py`` runs gradcheck
and gradgradcheck). No intermediate of the size of ``fprimes`` is allocated on CPU.

When ``fprimes`` itself requires grad (AMPTorch's never does), the plain autograd
expression (gather, multiply, ``index_add``) on its coalesced form is used instead, so
gradients reach its values too.
"""

from __future__ import annotations

import numba
import numpy as np
import torch


@numba.njit(cache=True, nogil=True)
def _minus_scatter(values, index_in, index_out, x, out):
    """``out[index_out[k]] -= values[k] * x[index_in[k]]`` for every k (indices checked)."""
    n_in = x.shape[0]
    n_out = out.shape[0]
    for k in range(values.shape[0]):
        i = index_in[k]
        o = index_out[k]
        if i < 0 or i >= n_in or o < 0 or o >= n_out:
            raise IndexError("fprimes has an index outside its shape")
        out[o] -= values[k] * x[i]


_NUMPY = {torch.float64: np.float64, torch.float32: np.float32}


def _contract(values: torch.Tensor, index_in: torch.Tensor, index_out: torch.Tensor, x: torch.Tensor,
              n_out: int) -> torch.Tensor:
    """``y`` (n_out,) with ``y[index_out[k]] -= values[k] * x[index_in[k]]``, no autograd."""
    if x.device.type == "cpu" and values.device.type == "cpu" and x.dtype in _NUMPY:
        out = np.zeros(n_out, dtype=_NUMPY[x.dtype])
        _minus_scatter(values.detach().numpy(), index_in.numpy(), index_out.numpy(),
                       x.detach().contiguous().numpy(), out)
        return torch.from_numpy(out)
    weighted = x.index_select(0, index_in).mul_(values)
    return torch.zeros(n_out, dtype=x.dtype, device=x.device).index_add_(0, index_out, weighted).neg_()


class _MinusTransposedProduct(torch.autograd.Function):
    """``y = -A^T x`` for the COO matrix A (``values`` at ``(index_in, index_out)``,
    shape (n_in, n_out)); its backward is ``-A g``, the same Function transposed."""

    @staticmethod
    def forward(ctx, values, index_in, index_out, x, n_in, n_out):
        ctx.save_for_backward(values, index_in, index_out)
        ctx.n_in = n_in
        return _contract(values, index_in, index_out, x, n_out)

    @staticmethod
    def backward(ctx, grad):
        values, index_in, index_out = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[3]:
            grad_x = _MinusTransposedProduct.apply(values, index_out, index_in, grad, grad.shape[0], ctx.n_in)
        return None, None, None, grad_x, None, None


def contract_forces(fprimes: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Forces (n_atoms, 3) from the COO matrix ``fprimes`` (n_atoms * n_features, 3 n_atoms)
    and ``gradients`` dE/dG with n_atoms * n_features elements (any shape).

    Units: those of E per unit of position (eV/Å for AMPTorch). The result equals
    ``-torch.sparse.mm(fprimes.t(), gradients.reshape(-1, 1)).view(-1, 3)`` (duplicate
    entries of an uncoalesced ``fprimes`` are summed, as there), up to rounding.
    """
    x = gradients.reshape(-1)
    if x.shape[0] != fprimes.shape[0]:
        raise ValueError(f"gradients has {x.shape[0]} elements, fprimes {fprimes.shape[0]} rows")
    if fprimes.requires_grad:  # gradients to the derivative values as well: plain autograd
        fprimes = fprimes.coalesce()  # (values() tracks gradients, _values() does not)
        rows, cols = fprimes.indices()
        dtype = torch.promote_types(fprimes.dtype, x.dtype)
        weighted = fprimes.values().to(dtype) * x.to(dtype).index_select(0, rows)
        forces = torch.zeros(fprimes.shape[1], dtype=dtype, device=weighted.device)
        return -forces.index_add(0, cols, weighted).view(-1, 3)
    rows, cols = fprimes._indices()
    values = fprimes._values()
    dtype = torch.promote_types(values.dtype, x.dtype)
    values, x = values.to(dtype), x.to(dtype)
    forces = _MinusTransposedProduct.apply(values, rows, cols, x, fprimes.shape[0], fprimes.shape[1])
    return forces.view(-1, 3)


def warm_up() -> None:
    """Load (compile on first use, then from numba's cache) the CPU kernel for float64
    and float32, so that the first real call is not slower than the rest."""
    for dtype in (torch.float64, torch.float32):
        fprimes = torch.sparse_coo_tensor(torch.tensor([[0, 1], [0, 2]]), torch.ones(2, dtype=dtype), (2, 3),
                                          check_invariants=True)
        gradients = torch.ones(1, 2, dtype=dtype, requires_grad=True)
        contract_forces(fprimes, gradients).sum().backward()
