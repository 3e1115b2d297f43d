"""Frames, descriptors and comparisons for the GPU tests in this folder.

The tests here run ``device="cuda"`` on a CUDA GPU, or in numba's CUDA simulator when
``NUMBA_ENABLE_CUDASIM=1`` is set before numba is imported (``tests/test_gpu.py`` runs
this folder that way in a subprocess, so the rest of the suite never sees the simulator).
Elsewhere they skip. The frames are small: the simulator runs every GPU thread in Python.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from conftest import write_pseudodensities
from fastfp.descriptors.gaussian import Gaussian
from fastfp.descriptors.gmp import GMP, GMPOrderNorm
from fastfp.gpu.device import DeviceError, array_module

ELEMENTS = ["H", "C", "O", "Cu"]


def _device_missing() -> str | None:
    try:
        array_module()
    except DeviceError as err:
        return f"{err} (tests/test_gpu.py runs these tests in numba's CUDA simulator)"
    return None


_MISSING = _device_missing()
requires_device = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))


def frames() -> dict[str, Atoms]:
    """Small frames covering the neighbour-list cases, by name."""
    rng = np.random.default_rng(7)
    triclinic = Atoms("CuOH2", cell=[[4.1, 0.0, 0.0], [1.3, 3.9, 0.0], [0.7, -0.9, 4.3]], pbc=True,
                      scaled_positions=[[0.1, 0.2, 0.3], [0.55, 0.45, 0.6], [0.8, 0.15, 0.9], [0.3, 0.75, 0.05]])
    triclinic.positions[1] += triclinic.cell[0] * 2 - triclinic.cell[2]  # unwrapped: two cells away
    small_cell = Atoms("CuO", cell=[[2.3, 0.0, 0.0], [0.4, 2.2, 0.0], [0.3, 0.2, 2.4]], pbc=True,
                       scaled_positions=[[0.0, 0.0, 0.0], [0.5, 0.45, 0.55]])
    slab = Atoms("Cu3O", cell=[[3.0, 0.0, 0.0], [-1.2, 3.1, 0.0], [0.0, 0.0, 0.0]], pbc=[True, True, False],
                 positions=[[0.0, 0.0, 0.0], [1.4, 1.0, 0.3], [0.2, 1.9, -1.6], [0.8, 0.9, 1.7]])
    methanol = molecule("CH3OH")
    methanol.positions += rng.normal(scale=0.05, size=methanol.positions.shape)
    return {
        "periodic triclinic": triclinic,
        "cell smaller than the cutoff": small_cell,
        "one atom in a cell smaller than the cutoff": Atoms("Cu", cell=[2.6, 2.6, 2.6], pbc=True),
        "mixed pbc slab, zero cell vector": slab,
        "molecule": methanol,
        "single atom": Atoms("O", positions=[[0.3, -0.2, 0.1]]),
    }


_G2 = {"etas": [0.5, 4.0], "rs_s": [0.0, 1.2]}
# small descriptors of every kind and feature mode, from their pseudodensity files
DESCRIPTORS = {
    "GMPOrderNorm": lambda gaussians: GMPOrderNorm(
        {"MCSHs": {"orders": [0, 1, 2, 3], "sigmas": [0.5, 1.0]}, "cutoff": 3.5, "atom_gaussians": gaussians},
        ELEMENTS,
    ),
    "GMPOrderNorm surface harmonics, sqrt": lambda gaussians: GMPOrderNorm(
        {"MCSHs": {"orders": [0, 1, 2], "sigmas": [0.6]}, "cutoff": 3.0, "solid_harmonics": False,
         "square": False, "rs_setup": {"setup": "scale", "scale_factor": 1.5}, "atom_gaussians": gaussians},
        ELEMENTS,
    ),
    "GMP linear and sqrt": lambda gaussians: GMP(
        {"MCSHs": {"0": {"groups": [1], "sigmas": [0.5]}, "2": {"groups": [1, 2], "sigmas": [0.5, 0.9]},
                   "3": {"groups": [1, 2, 3], "sigmas": [0.7]}},
         "cutoff": 3.5, "atom_gaussians": gaussians},
        ELEMENTS,
    ),
    "GMP square": lambda gaussians: GMP(
        {"MCSHs": {"1": {"groups": [1], "sigmas": [0.5, 1.0]}, "2": {"groups": [1, 2], "sigmas": [0.8]}},
         "cutoff": 3.5, "square": True, "atom_gaussians": gaussians},
        ELEMENTS,
    ),
    "Gaussian cosine G2 G4": lambda gaussians: Gaussian(
        {"default": {"G2": _G2, "G4": {"etas": [0.3], "zetas": [1.0, 4.0], "gammas": [1.0, -1.0]}, "cutoff": 3.5},
         "H": {"G2": {"etas": [1.0], "rs_s": [0.0]}, "G4": {"etas": [0.1], "zetas": [2.0], "gammas": [1.0]},
               "cutoff": 3.0}},
        ELEMENTS, {"cutoff_func": "Cosine"},
    ),
    "Gaussian polynomial G5": lambda gaussians: Gaussian(
        {"default": {"G2": _G2, "G5": {"etas": [0.05, 0.3], "zetas": [1.0, 2.5], "gammas": [1.0, -1.0]},
                     "cutoff": 3.5}},
        ELEMENTS, {"cutoff_func": "Polynomial", "gamma": 2.5},
    ),
}


#: float32 results against the CPU's float64: within this fraction of each value or of
#: the frame's largest one (every descriptor of :data:`DESCRIPTORS` keeps to 5e-6)
FLOAT32_RTOL = 2e-5


def descriptor(name: str, directory):
    """Descriptor ``name`` of :data:`DESCRIPTORS`, its pseudodensities (two Gaussians per
    element) written to ``directory``."""
    gaussians = write_pseudodensities(
        directory, {el: [(1.5 + k, 0.8 + 0.3 * k), (-0.4, 3.0 + k)] for k, el in enumerate(ELEMENTS)}
    )
    return DESCRIPTORS[name](gaussians)


def assert_agree(gpu, cpu, rtol: float = 1e-10, where: str = "") -> None:
    """Assert that GPU fingerprints (any device) equal the CPU's: same layout (offsets,
    numbers, one block per (centre, j)), fingerprints and derivative blocks within
    ``rtol`` of each value or of the largest magnitude of that array in the frame
    (rounding in sums that cancel is relative to their terms, not to the result)."""
    gpu = gpu.to_numpy()
    np.testing.assert_array_equal(gpu.offsets, cpu.offsets)
    np.testing.assert_array_equal(gpu.numbers, cpu.numbers)
    assert gpu.has_derivatives == cpu.has_derivatives
    for k in range(cpu.n_frames):
        g, c = gpu.frame(k), cpu.frame(k)
        here = f"{where} frame {k}"
        scale = np.abs(c.fingerprints).max()
        np.testing.assert_allclose(g.fingerprints, c.fingerprints, rtol=rtol, atol=rtol * scale,
                                   err_msg=f"{here}: fingerprints")
        if not cpu.has_derivatives:
            continue
        gi, gj, gb = g.blocks_by_atom()
        ci, cj, cb = c.blocks_by_atom()
        np.testing.assert_array_equal(gi, ci, err_msg=f"{here}: block centres")
        np.testing.assert_array_equal(gj, cj, err_msg=f"{here}: block atoms")
        scale = np.abs(cb).max() if len(cb) else 0.0
        np.testing.assert_allclose(gb, cb, rtol=rtol, atol=rtol * scale, err_msg=f"{here}: derivatives")
