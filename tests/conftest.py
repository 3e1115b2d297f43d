"""Shared test helpers: the ../shared data beside the repository, reference loading."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

# ../shared beside the repository, or $FASTFP_SHARED (a copy carried to a GPU machine)
SHARED = Path(os.environ.get("FASTFP_SHARED") or Path(__file__).resolve().parents[2] / "shared")

requires_shared = pytest.mark.skipif(
    not (SHARED / "reference").is_dir(),
    reason=f"shared data not found at {SHARED} (real frames and AMPTorch reference data); "
    ".ci/run fails instead of skipping when it is missing",
)


@pytest.fixture(autouse=True)
def _same_working_directory():
    """Each test ends in the directory it started in: AMPTorch's ``AtomsTrainer`` changes
    into its ``run_dir`` (``os.chdir``), often a test's temporary folder, removed later;
    tests after it would look for the checkout, or run asv, from there."""
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


@pytest.fixture
def float64():
    """torch's default dtype float64 (as AtomsTrainer sets it) for the test, restored after."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def resolve_shared_paths(fp_params: dict) -> dict:
    """Copy of ``fp_params`` with ``atom_gaussians`` paths ("shared/gmp/...") made absolute."""
    params = dict(fp_params)
    if "atom_gaussians" in params:
        params["atom_gaussians"] = {
            el: str(SHARED / Path(path).relative_to("shared")) for el, path in params["atom_gaussians"].items()
        }
    return params


def write_pseudodensities(directory: Path, gaussians: dict) -> dict:
    """Write ``{element: [(B, beta), ...]}`` as one ``<element>.g`` pseudodensity file per
    element in ``directory``; returns ``{element: path}`` for ``atom_gaussians``."""
    paths = {}
    for el, pairs in gaussians.items():
        path = directory / f"{el}.g"
        path.write_text("".join(f"{b} {beta}\n" for b, beta in pairs))
        paths[el] = str(path)
    return paths


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


def assert_fingerprints_equal(a, b) -> None:
    """Assert that two :class:`~fastfp.batch.Fingerprints` hold the same arrays
    (derivatives absent from both, or equal)."""
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if x is None or y is None:
            assert x is None and y is None, field.name
        else:
            np.testing.assert_array_equal(x, y, err_msg=field.name)


def dense(row, col, val, size) -> np.ndarray:
    """Dense matrix of a COO triple (duplicates summed)."""
    out = np.zeros(tuple(int(s) for s in size))
    np.add.at(out, (np.asarray(row), np.asarray(col)), np.asarray(val))
    return out


def reference_fprimes(data, k: int) -> np.ndarray:
    """Dense derivative matrix of frame ``k`` of a reference file."""
    return dense(data[f"row_{k}"], data[f"col_{k}"], data[f"val_{k}"], data[f"size_{k}"])


def assert_matches_reference(name: str, data, results, *, fp_atol=1e-12, fp_atol_of_largest=0.0) -> None:
    """Assert that fastfp's ``results`` match the AMPTorch reference ``name`` (its npz
    ``data`` from :func:`load_reference`).

    ``results`` has one ``(fingerprints, (row, col, val, size))`` per reference frame,
    the derivatives in AMPTorch's COO layout. Fingerprints must agree to rtol 1e-8 and
    atol ``fp_atol + fp_atol_of_largest * max |reference fingerprint|`` (per frame);
    derivative matrices must have the reference's size and agree to 2e-5 absolute.
    """
    results = list(results)
    nframes = int(data["nframes"])
    assert len(results) == nframes, f"{name}: {len(results)} frames, the reference has {nframes}"
    for k, (fingerprints, (row, col, val, size)) in enumerate(results):
        where = f"{name}.npz, frame {k}"
        ref = data[f"fp_{k}"]
        atol = fp_atol + fp_atol_of_largest * np.abs(ref).max()
        np.testing.assert_allclose(fingerprints, ref, rtol=1e-8, atol=atol, err_msg=f"{where}: fingerprints")
        np.testing.assert_array_equal(size, data[f"size_{k}"], err_msg=f"{where}: derivative matrix size")
        np.testing.assert_allclose(
            dense(row, col, val, size), reference_fprimes(data, k), rtol=0, atol=2e-5, err_msg=f"{where}: derivatives"
        )
