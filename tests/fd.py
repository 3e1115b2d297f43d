"""Finite-difference check of any descriptor's derivatives (descriptor-agnostic)."""

from __future__ import annotations

import numpy as np

from conftest import dense


def analytic_derivatives(descriptor, atoms) -> np.ndarray:
    """Dense d fingerprints / d positions, (n_atoms * n_features, 3 * n_atoms), from
    :meth:`~fastfp.fingerprints.Fingerprints.coo` (AMPTorch's layout)."""
    return dense(*descriptor.featurize([atoms]).coo(0))


def numeric_derivatives(descriptor, atoms, h: float) -> np.ndarray:
    """The same matrix by the fourth-order central stencil
    (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / (12 h), moving one coordinate at a time."""
    n = len(atoms)
    out = None
    for a in range(n):
        for xyz in range(3):
            values = []
            for step in (-2, -1, 1, 2):
                moved = atoms.copy()
                moved.positions[a, xyz] += step * h
                values.append(descriptor.featurize([moved], derivatives=False).fingerprints.ravel())
            column = (values[0] - 8 * values[1] + 8 * values[2] - values[3]) / (12 * h)
            if out is None:
                out = np.zeros((len(column), 3 * n))
            out[:, 3 * a + xyz] = column
    return out


def finite_difference_check(descriptor, atoms, h: float) -> tuple[float, float]:
    """(max |analytic - numeric|, max |analytic|) of the derivatives of ``atoms`` (ASE
    ``Atoms``) by their positions, with step ``h`` (Å). Keep every interatomic distance
    (periodic images included) more than 2 h away from any cutoff, where the second
    derivative of a cutoff function jumps."""
    exact = analytic_derivatives(descriptor, atoms)
    numeric = numeric_derivatives(descriptor, atoms, h)
    return float(np.abs(exact - numeric).max()), float(np.abs(exact).max())
