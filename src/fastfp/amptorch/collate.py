"""Collation of derivative matrices: block diagonal of COO tensors, vectorised.

Replaces AMPTorch's ``sparse_block_diag`` (``amptorch/preprocessing/utils.py``), which
loops over the batch and builds index lists one matrix at a time.
"""

from __future__ import annotations

import torch


def sparse_block_diag(matrices) -> torch.Tensor:
    """Block-diagonal COO tensor of the 2-D sparse COO ``matrices`` (uncoalesced,
    entries in the order given)."""
    shapes = torch.tensor([m.shape for m in matrices])
    offsets = torch.cumsum(shapes, dim=0) - shapes
    counts = torch.tensor([m._nnz() for m in matrices])
    rows, cols = (
        torch.cat([m._indices()[axis] for m in matrices]) + torch.repeat_interleave(offsets[:, axis], counts)
        for axis in (0, 1)
    )
    indices = torch.stack([rows, cols])
    values = torch.cat([m._values() for m in matrices])
    return torch.sparse_coo_tensor(indices, values, tuple(shapes.sum(dim=0).tolist()), check_invariants=False)
