"""Reading GMP pseudodensities: AMPTorch's ``atom_gaussians`` ``.g`` files.

Each line holds ``B beta``: one Gaussian ``B * exp(-beta * r^2)`` (r in Å, beta in
1/Å^2) of an element's pseudodensity (AMPTorch ``descriptor/GMPOrderNorm/__init__.py``,
``prepare_descriptor_parameters``). Blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import PseudodensityError


def read_gaussians(path, element: str = "?") -> np.ndarray:
    """Gaussians of one ``.g`` file as a (n_gaussians, 2) float64 array of (B, beta).

    Raises :class:`PseudodensityError` if the file is missing, empty, or has a line that
    is not two finite numbers with beta > 0.
    """
    path = Path(path)
    if not path.is_file():
        raise PseudodensityError(f"element {element}: pseudodensity file {str(path)!r} not found")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        try:
            if len(fields) != 2:
                raise ValueError
            b, beta = float(fields[0]), float(fields[1])
        except ValueError:
            raise PseudodensityError(
                f"element {element}: {path}:{lineno}: expected two numbers 'B beta', got {text!r}"
            ) from None
        if not (np.isfinite(b) and np.isfinite(beta) and beta > 0):
            raise PseudodensityError(
                f"element {element}: {path}:{lineno}: need finite B and beta > 0, got {text!r}"
            )
        rows.append((b, beta))
    if not rows:
        raise PseudodensityError(f"element {element}: pseudodensity file {path} has no Gaussians")
    return np.array(rows, dtype=np.float64)


def read_atom_gaussians(atom_gaussians: dict, elements) -> list[np.ndarray]:
    """Gaussians of each element of ``elements``, in that order, from the
    ``{element: path}`` mapping of AMPTorch's ``atom_gaussians`` parameter."""
    missing = [el for el in elements if el not in atom_gaussians]
    if missing:
        raise PseudodensityError(f"no pseudodensity file given for element(s) {missing} in 'atom_gaussians'")
    return [read_gaussians(atom_gaussians[el], el) for el in elements]
