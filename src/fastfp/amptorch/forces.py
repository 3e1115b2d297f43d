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

A collated batch's derivatives reach AMPTorch's model as an object that contracts
itself (``batch.fprimes.contract(gradients)``, AMPTorch's fingerprint-backend hook;
:func:`fastfp.amptorch.install` routes the unpatched model to the same method): the COO
matrix of the stored path (:class:`DerivativeMatrix`) or, on the fly
(:mod:`fastfp.amptorch.onthefly`), fastfp's pair blocks (:class:`DerivativeBlocks`): the same product over the
(n_features, 3) blocks, with the feature scaler's per-row factor applied to the
gradients rather than to the blocks. Blocks featurized on the CPU (NumPy arrays) are
contracted by one compiled pass; blocks featurized with ``device="cuda"`` and handed to
torch by DLPack (torch tensors, on the GPU) by torch ops where they lie: a gather, a
batched (1 x n_features) @ (n_features x 3) product and an ``index_add``. Or no blocks
at all (:class:`RecomputedDerivatives`): each product recomputed from the frames by the
descriptor's kernels (:meth:`Descriptor.jacobian
<fastfp.descriptors.base.Descriptor.jacobian>` on the CPU;
:class:`fastfp.gpu.jacobian.DeviceJacobian` on the GPU), so a batch's
memory grows with its atoms, not its pairs. Both go through one ``autograd.Function``
(``-A^T x``, its backward ``-A g``, itself the same Function), so they are
interchangeable wherever AMPTorch's model contracts ``batch.fprimes``.

All of them also run the model's whole pass with forces when AMPTorch asks
(:class:`~fastfp.amptorch.model.CollatedDerivatives`: ``batch.fprimes.energy_and_forces(model,
batch)``, the hook of fastfp's patch series), so a large batch goes through the network
in pieces through the patched AMPTorch as through ``install()``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np
import torch

from ..jacobian import Jacobian
from .model import CollatedDerivatives


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


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _blocks_minus_t(fprime_ptr, fprime_j, fprimes, x, out):
    """``out[j, c] -= sum_f fprimes[b, f, c] * x[i, f]`` for every block b of centre i
    and atom j: ``out -= A^T x`` with A the block matrix (the sums over f in an order the
    compiler may choose, vectorised; fixed for given shapes)."""
    n_features = fprimes.shape[1]
    for i in range(len(fprime_ptr) - 1):
        for b in range(fprime_ptr[i], fprime_ptr[i + 1]):
            s0 = s1 = s2 = 0.0
            for f in range(n_features):
                xf = x[i, f]
                s0 += fprimes[b, f, 0] * xf
                s1 += fprimes[b, f, 1] * xf
                s2 += fprimes[b, f, 2] * xf
            j = fprime_j[b]
            out[j, 0] -= s0
            out[j, 1] -= s1
            out[j, 2] -= s2


@numba.njit(cache=True, nogil=True)
def _blocks_minus(fprime_ptr, fprime_j, fprimes, g, out):
    """``out[i, f] -= sum_c fprimes[b, f, c] * g[j, c]`` for every block b of centre i
    and atom j: ``out -= A g``, the transposed pass of :func:`_blocks_minus_t`."""
    n_features = fprimes.shape[1]
    for i in range(len(fprime_ptr) - 1):
        for b in range(fprime_ptr[i], fprime_ptr[i + 1]):
            j = fprime_j[b]
            g0, g1, g2 = g[j, 0], g[j, 1], g[j, 2]
            for f in range(n_features):
                out[i, f] -= fprimes[b, f, 0] * g0 + fprimes[b, f, 1] * g1 + fprimes[b, f, 2] * g2


@dataclass(frozen=True, eq=False)
class DerivativeBlocks(CollatedDerivatives):
    """The derivative matrix of a batch's (scaled) fingerprints, as fastfp's pair blocks.

    Entry ((i, f), (j, c)) is ``factor[i, f] * fprimes[b, f, c]`` for the block b of
    centre i and atom j (``fprime_ptr[i] <= b < fprime_ptr[i + 1]``, ``fprime_j[b] == j``),
    zero where i and j have no block: the matrix AMPTorch stores as COO
    (n_atoms * n_features, 3 n_atoms), fprimes scaled by the feature scaler's
    ``factor`` (its scale, or 1 / scale for ``standardize``). See
    :class:`~fastfp.fingerprints.Fingerprints` for the block arrays.

    The block arrays are NumPy arrays (CPU featurization; contracted by compiled passes)
    or torch tensors on ``factor``'s device (``featurize(..., device="cuda")`` results
    taken by ``torch.from_dlpack``; contracted by torch ops on that device); indices
    int64, ``fprimes`` float64 or float32.

    Raises ``ValueError`` if the arrays do not fit together.
    """

    fprime_ptr: np.ndarray | torch.Tensor
    fprime_j: np.ndarray | torch.Tensor
    fprimes: np.ndarray | torch.Tensor
    factor: torch.Tensor

    def __post_init__(self):
        n_atoms, n_features = self.factor.shape
        n_blocks = len(self.fprime_j)
        ptr = self.fprime_ptr
        where = {a.device for a in (ptr, self.fprime_j, self.fprimes)} if self.on_torch else {torch.device("cpu")}
        if where != {self.factor.device}:
            raise ValueError(f"the blocks (on {', '.join(map(str, where))}) and factor (on {self.factor.device}) "
                             "must lie on one device")
        if len(ptr) != n_atoms + 1 or ptr[0] != 0 or ptr[-1] != n_blocks or (ptr[1:] < ptr[:-1]).any():
            raise ValueError(f"fprime_ptr must rise from 0 to {n_blocks} over {n_atoms} atoms")
        if tuple(self.fprimes.shape) != (n_blocks, n_features, 3):
            raise ValueError(f"fprimes has shape {tuple(self.fprimes.shape)}, expected {(n_blocks, n_features, 3)}")
        if n_blocks and (self.fprime_j.min() < 0 or self.fprime_j.max() >= n_atoms):
            raise ValueError("fprime_j has an atom index outside the batch")

    @property
    def n_atoms(self) -> int:
        return self.factor.shape[0]

    def contract(self, gradients: torch.Tensor) -> torch.Tensor:
        """Forces (n_atoms, 3) from dE/dG: :func:`contract_blocks`."""
        return contract_blocks(self, gradients)

    @property
    def on_torch(self) -> bool:
        """Whether the blocks are torch tensors (contracted by torch ops), not NumPy arrays."""
        return isinstance(self.fprimes, torch.Tensor)

    @functools.cached_property
    def _centres(self) -> torch.Tensor:
        """The centre atom i of every block (torch blocks)."""
        counts = self.fprime_ptr[1:] - self.fprime_ptr[:-1]
        return torch.repeat_interleave(torch.arange(self.n_atoms, device=counts.device), counts,
                                       output_size=len(self.fprime_j))

    def minus_product(self, x: torch.Tensor, transpose: bool) -> torch.Tensor:
        """``-A^T x`` (x (n_atoms, n_features) -> (n_atoms, 3)) or, with ``transpose``,
        ``-A x`` ((n_atoms, 3) -> (n_atoms, n_features)), A the unscaled blocks, in the
        dtype of ``x``; no autograd."""
        x = x.detach()
        if self.on_torch:
            return self._minus_product_torch(x, transpose)
        x = x.contiguous()
        kernel, width = (_blocks_minus, self.factor.shape[1]) if transpose else (_blocks_minus_t, 3)
        out = np.zeros((self.n_atoms, width), dtype=_NUMPY[x.dtype])
        kernel(self.fprime_ptr, self.fprime_j, self.fprimes, x.numpy(), out)
        return torch.from_numpy(out)

    def _minus_product_torch(self, x: torch.Tensor, transpose: bool) -> torch.Tensor:
        """:meth:`minus_product` for torch blocks: one (1 x F) @ (F x 3) product per block
        (``transpose``: (F x 3) @ (3 x 1)), summed into its atom j (centre i) by
        ``index_add``, in the wider dtype of the blocks and ``x``."""
        dtype = torch.promote_types(self.fprimes.dtype, x.dtype)
        fprimes, wide = self.fprimes.to(dtype), x.to(dtype)
        if transpose:
            rows = torch.bmm(fprimes, wide.index_select(0, self.fprime_j).unsqueeze(2)).squeeze(2)
            into, width = self._centres, fprimes.shape[1]
        else:
            rows = torch.bmm(wide.index_select(0, self._centres).unsqueeze(1), fprimes).squeeze(1)
            into, width = self.fprime_j, 3
        out = torch.zeros((self.n_atoms, width), dtype=dtype, device=fprimes.device)
        return out.index_add_(0, into, rows).neg_().to(x.dtype)


@dataclass(frozen=True, eq=False)
class RecomputedDerivatives(CollatedDerivatives):
    """The derivative matrix of a batch's (scaled) fingerprints, never stored: the same
    matrix as :class:`DerivativeBlocks` (entry ((i, f), (j, c)) = ``factor[i, f]`` d G_if /
    d r_jc), its products recomputed from the frames by the descriptor's kernels each
    time: on the CPU (``jacobian`` a :class:`fastfp.jacobian.Jacobian`) or on the GPU (a
    :class:`fastfp.gpu.jacobian.DeviceJacobian`, its arrays handed to and from torch by
    DLPack where they lie).

    ``factor`` (n_atoms, width) is the feature scaler's factor of the batch's rows,
    ``width`` <= the descriptor's ``n_features`` (AMPTorch's ``input_dim``: the columns
    beyond are dropped). Raises ``ValueError`` if it does not fit the frames or does not
    lie on the jacobian's device (``jacobian.device``).
    """

    jacobian: Jacobian
    factor: torch.Tensor

    def __post_init__(self):
        n_atoms, width = self.factor.shape
        if self.factor.device.type != self.jacobian.device:
            raise ValueError(f"recomputed derivatives are computed on {self.jacobian.device}, got factor on "
                             f"{self.factor.device}")
        if n_atoms != self.jacobian.n_atoms or width > self.jacobian.n_features:
            raise ValueError(f"factor has shape {(n_atoms, width)}, expected ({self.jacobian.n_atoms}, at most "
                             f"{self.jacobian.n_features})")

    @property
    def n_atoms(self) -> int:
        return self.factor.shape[0]

    def contract(self, gradients: torch.Tensor) -> torch.Tensor:
        """Forces (n_atoms, 3) from dE/dG: :func:`contract_blocks`."""
        return contract_blocks(self, gradients)

    def minus_product(self, x: torch.Tensor, transpose: bool) -> torch.Tensor:
        """As :meth:`DerivativeBlocks.minus_product`: ``-A^T x`` ((n_atoms, width) ->
        (n_atoms, 3)) or, with ``transpose``, ``-A x`` ((n_atoms, 3) -> (n_atoms,
        width)), A unscaled, computed in float64 and returned in the dtype of ``x``; no
        autograd."""
        values = x.detach().to(torch.float64).contiguous()
        width = self.factor.shape[1]
        if transpose:
            out = torch.from_dlpack(self.jacobian.product(values))[:, :width]
        else:  # the columns beyond width are zero
            values = torch.nn.functional.pad(values, (0, self.jacobian.n_features - width))
            out = torch.from_dlpack(self.jacobian.transposed_product(values))
        return out.neg().to(x.dtype)


class MinusProduct(torch.autograd.Function):
    """``y = -A^T x`` for the derivative matrix A of a :class:`DerivativeBlocks`,
    :class:`RecomputedDerivatives` or :class:`~fastfp.amptorch.frame_blocks.BlockDiagonal`
    (``transpose``: ``-A x``), by their ``minus_product(x, transpose)``; its backward is the
    other one, the same Function."""

    @staticmethod
    def forward(ctx, derivatives, x, transpose):
        ctx.derivatives = derivatives
        ctx.transpose = transpose
        return derivatives.minus_product(x, transpose)

    @staticmethod
    def backward(ctx, grad):
        grad_x = None
        if ctx.needs_input_grad[1]:
            grad_x = MinusProduct.apply(ctx.derivatives, grad, not ctx.transpose)
        return None, grad_x, None


def contract_blocks(derivatives: DerivativeBlocks | RecomputedDerivatives, gradients: torch.Tensor) -> torch.Tensor:
    """Forces (n_atoms, 3) ``-A^T x`` from the derivative matrix of ``derivatives`` (stored
    blocks or recomputed) and ``gradients`` dE/dG with n_atoms * width elements (any
    shape), in float64 or float32 (the dtype of ``gradients``), on the blocks' device
    (that of ``derivatives.factor``: the CPU for NumPy blocks, the jacobian's device
    for recomputed ones).
    Differentiable to any order in ``gradients``."""
    where = derivatives.factor.device
    if gradients.device != where or gradients.dtype not in _NUMPY:
        raise ValueError(f"derivatives contract on {where} in float64 or float32, got gradients "
                         f"{gradients.dtype} on {gradients.device}")
    n_atoms, n_features = derivatives.factor.shape
    if gradients.numel() != n_atoms * n_features:
        raise ValueError(f"gradients has {gradients.numel()} elements, the derivatives' rows {n_atoms * n_features}")
    x = gradients.reshape(n_atoms, n_features) * derivatives.factor.to(gradients.dtype)
    return MinusProduct.apply(derivatives, x, False)


@dataclass(frozen=True, eq=False)
class DerivativeMatrix(CollatedDerivatives):
    """A collated batch's derivative matrix (AMPTorch's sparse COO ``fprimes``,
    (n_atoms * n_features, 3 n_atoms)) that contracts itself into forces
    (:meth:`contract`), as AMPTorch's model asks of a fingerprint backend's ``fprimes``.

    ``to(device)`` moves it (torch_geometric's ``Batch.to`` calls it); ``matrix`` is the
    COO tensor."""

    matrix: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.matrix.shape

    def to(self, *args, **kwargs) -> "DerivativeMatrix":
        return DerivativeMatrix(self.matrix.to(*args, **kwargs))

    def contract(self, gradients: torch.Tensor) -> torch.Tensor:
        """Forces (n_atoms, 3) from dE/dG: :func:`contract_forces`."""
        return contract_forces(self.matrix, gradients)


def contract_forces(fprimes, gradients: torch.Tensor) -> torch.Tensor:
    """Forces (n_atoms, 3) from the COO matrix ``fprimes`` (n_atoms * n_features, 3 n_atoms)
    and ``gradients`` dE/dG with n_atoms * n_features elements (any shape).

    Units: those of E per unit of position (eV/Å for AMPTorch). The result equals
    ``-torch.sparse.mm(fprimes.t(), gradients.reshape(-1, 1)).view(-1, 3)`` (duplicate
    entries of an uncoalesced ``fprimes`` are summed, as there), up to rounding.
    ``fprimes`` may also be an object that contracts itself (``fprimes.contract``):
    a :class:`DerivativeMatrix`, :class:`DerivativeBlocks`, :class:`RecomputedDerivatives` (:func:`contract_blocks`)
    or :class:`~fastfp.amptorch.frame_blocks.BlockDiagonal`.
    """
    if hasattr(fprimes, "contract"):
        return fprimes.contract(gradients)
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
    """Load (compile on first use, then from numba's cache) the CPU kernels, COO and
    blocks, for float64 and float32, so that the first real call is not slower than the rest."""
    blocks = DerivativeBlocks(np.array([0, 1]), np.array([0]), np.ones((1, 2, 3)), torch.ones(1, 2))
    for dtype in (torch.float64, torch.float32):
        fprimes = torch.sparse_coo_tensor(torch.tensor([[0, 1], [0, 2]]), torch.ones(2, dtype=dtype), (2, 3),
                                          check_invariants=True)
        for matrix in (fprimes, blocks):
            gradients = torch.ones(1, 2, dtype=dtype, requires_grad=True)
            contract_forces(matrix, gradients).sum().backward()
