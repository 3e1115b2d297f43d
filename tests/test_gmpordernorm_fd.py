"""GMPOrderNorm derivatives against finite differences on fresh random geometries."""

import numpy as np
import pytest
from ase import Atoms

from conftest import write_pseudodensities
from fd import finite_difference_check
from fastfp.descriptors.gmp import GMPOrderNorm

CUTOFF = 4.5

# (number of atoms, cell, pbc): triclinic periodic; a cell smaller than the cutoff, so
# atoms see their own images; a molecule; one atom alone in a small periodic cell
GEOMETRIES = {
    "triclinic": (6, [[5.1, 0.0, 0.0], [1.2, 5.6, 0.0], [0.7, -0.9, 6.0]], True),
    "small-cell": (2, [[2.6, 0.0, 0.0], [0.4, 2.8, 0.0], [0.3, 0.5, 2.7]], True),
    "molecule": (5, [[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]], False),
    "single-atom": (1, [[2.9, 0.0, 0.0], [0.3, 3.1, 0.0], [0.2, 0.4, 3.0]], True),
}


def random_atoms(seed, n, cell, pbc, h):
    """Random H/O/Cu atoms in ``cell``, redrawn until every pair distance (images
    included) is > 0.8 Å and more than 5 h from the cutoff (a GMP feature jumps there)."""
    rng = np.random.default_rng(seed)
    cell = np.array(cell)
    while True:
        atoms = Atoms(numbers=rng.choice([1, 8, 29], size=n), positions=rng.random((n, 3)) @ cell,
                      cell=cell, pbc=pbc)
        from ase.neighborlist import neighbor_list

        d = neighbor_list("d", atoms, CUTOFF + 1.0)
        if (d > 0.8).all() and (np.abs(d - CUTOFF) > 5 * h).all():
            return atoms


@pytest.fixture
def atom_gaussians(tmp_path):
    return write_pseudodensities(
        tmp_path,
        {el: [(2.0 + k, 0.9 + 0.4 * k), (-0.5, 2.5 + k), (0.3, 6.0 + 2 * k)] for k, el in enumerate(["H", "O", "Cu"])},
    )


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize(
    "options",
    [
        {"orders": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]},
        {"orders": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "solid_harmonics": False},
        {"orders": [0, 2, 3], "square": False},
        {"orders": [1, 3, 5], "solid_harmonics": False, "rs_setup": {"setup": "scale", "scale_factor": 1.3}},
    ],
    ids=["solid", "surface", "sqrt", "surface-rs-scale"],
)
def test_derivatives_are_exact(geometry, options, atom_gaussians):
    h = 1e-3
    n, cell, pbc = GEOMETRIES[geometry]
    atoms = random_atoms(sorted(GEOMETRIES).index(geometry), n, cell, pbc, h)
    extra = {k: v for k, v in options.items() if k != "orders"}
    params = {"MCSHs": {"orders": options["orders"], "sigmas": [0.5, 1.1]}, "cutoff": CUTOFF,
              "atom_gaussians": atom_gaussians, "prime_threshold": 0, **extra}
    desc = GMPOrderNorm(params, ["H", "O", "Cu"])
    error, largest = finite_difference_check(desc, atoms, h)
    if geometry == "single-atom":
        # only the atom's own images: translating it changes nothing; the numeric
        # derivative is zero up to rounding of the fingerprints
        scale = np.abs(desc.featurize([atoms], derivatives=False).fingerprints).max()
        assert largest == 0.0 and error <= 1e-13 * scale / h
    else:
        assert largest > 0
        assert error <= 1e-7 * largest, (error, largest)


@pytest.mark.parametrize("solid", [True, False], ids=["solid", "surface"])
def test_rotation_invariant(solid, atom_gaussians):
    """Each feature is the norm of an order-n MCSH tensor: rotating the frame leaves it unchanged."""
    from scipy.spatial.transform import Rotation

    atoms = random_atoms(7, 6, GEOMETRIES["molecule"][1], False, 1e-3)
    turned = atoms.copy()
    turned.positions = Rotation.from_euler("xyz", [0.3, 1.1, -0.7]).apply(atoms.positions)
    params = {"MCSHs": {"orders": list(range(10)), "sigmas": [0.5, 1.1]}, "cutoff": 20.0,
              "atom_gaussians": atom_gaussians, "solid_harmonics": solid}
    desc = GMPOrderNorm(params, ["H", "O", "Cu"])
    a, b = (desc.featurize([x], derivatives=False).fingerprints for x in (atoms, turned))
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * np.abs(a).max())
