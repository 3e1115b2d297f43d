"""Shared test helpers: the ../shared data beside the repository, reference loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

SHARED = Path(__file__).resolve().parents[2] / "shared"

requires_shared = pytest.mark.skipif(
    not (SHARED / "reference").is_dir(),
    reason=f"shared data not found at {SHARED} (real frames and AMPTorch reference data); "
    ".ci/run fails instead of skipping when it is missing",
)


def resolve_shared_paths(fp_params: dict) -> dict:
    """Copy of ``fp_params`` with ``atom_gaussians`` paths ("shared/gmp/...") made absolute."""
    params = dict(fp_params)
    if "atom_gaussians" in params:
        params["atom_gaussians"] = {
            el: str(SHARED.parent / path) for el, path in params["atom_gaussians"].items()
        }
    return params


def load_reference(name: str):
    """AMPTorch reference ``name`` (file stem): (config, frames, npz data)."""
    data = np.load(SHARED / "reference" / f"{name}.npz")
    config = json.loads(str(data["config"]))
    config["fp_params"] = resolve_shared_paths(config["fp_params"])
    frames = [
        Atoms(
            numbers=data[f"numbers_{k}"],
            positions=data[f"positions_{k}"],
            cell=data[f"cell_{k}"],
            pbc=data[f"pbc_{k}"],
        )
        for k in range(int(data["nframes"]))
    ]
    return config, frames, data


def dense(row, col, val, size) -> np.ndarray:
    """Dense matrix of a COO triple (duplicates summed)."""
    out = np.zeros(tuple(int(s) for s in size))
    np.add.at(out, (np.asarray(row), np.asarray(col)), np.asarray(val))
    return out


def reference_fprimes(data, k: int) -> np.ndarray:
    """Dense derivative matrix of frame ``k`` of a reference file."""
    return dense(data[f"row_{k}"], data[f"col_{k}"], data[f"val_{k}"], data[f"size_{k}"])
