"""Gaussian symmetry functions against AMPTorch's recorded output, finite differences
and bad input."""

import numpy as np
import pytest
from ase.neighborlist import neighbor_list
from ase import Atoms

from conftest import assert_matches_reference, load_reference, requires_shared
from fd import finite_difference_check
from fastfp.descriptors.gaussian import Gaussian
from fastfp import FrameError

G2 = {"etas": [0.5, 4.0], "rs_s": [0.0, 1.2]}
COSINE_G4 = (
    {
        "default": {"G2": G2, "G4": {"etas": [0.3], "zetas": [1.0, 4.0], "gammas": [1.0, -1.0]}, "cutoff": 4.0},
        # fewer features and a shorter cutoff for H: rows padded, cutoff per element
        "H": {"G2": {"etas": [1.0], "rs_s": [0.0]}, "G4": {"etas": [0.1], "zetas": [2.0], "gammas": [1.0]}, "cutoff": 3.5},
    },
    {"cutoff_func": "Cosine"},
)
POLYNOMIAL_G5 = (
    {"default": {"G2": G2, "G5": {"etas": [0.05, 0.3], "zetas": [1.0, 2.5], "gammas": [1.0, -1.0]}, "cutoff": 4.0}},
    {"cutoff_func": "Polynomial", "gamma": 2.5},
)
ELEMENTS = ["O", "H", "Cu"]
H = 1e-3  # Å; the fourth-order stencil's error is then far below 1e-7
MARGIN = 0.01  # Å between any distance and any cutoff (> 2 H)


@requires_shared
@pytest.mark.parametrize("name", ["gaussian_cosine", "gaussian_polynomial_g5"])
def test_matches_amptorch_reference(name):
    config, frames, data = load_reference(name)
    desc = Gaussian(config["fp_params"], config["elements"], config["cutoff_params"])
    fps = desc.featurize(frames, amptorch_binning=True)
    assert_matches_reference(name, data, [(fps.frame(k).fingerprints, fps.coo(k)) for k in range(len(frames))])


def _random_atoms(rng, n, cell, pbc, cutoffs, min_distance=0.9):
    """``n`` random atoms of ``ELEMENTS`` in ``cell``, redrawn until no two are closer
    than ``min_distance`` and no distance (images included) is within MARGIN of a cutoff."""
    top = max(cutoffs) + MARGIN
    for _ in range(1000):
        atoms = Atoms(
            numbers=rng.choice([8, 1, 29], size=n),
            positions=rng.random((n, 3)) @ cell,
            cell=cell,
            pbc=pbc,
        )
        d = neighbor_list("d", atoms, top)
        if n == 1 or (
            d.min() > min_distance and all(np.abs(d - rc).min() > MARGIN for rc in cutoffs)
        ):
            return atoms
    raise RuntimeError("no acceptable geometry drawn")


GEOMETRIES = {
    "triclinic": (12, np.array([[6.0, 0.0, 0.0], [1.5, 5.5, 0.0], [-1.0, 0.8, 6.2]]), True),
    "slab": (10, np.array([[5.5, 0.0, 0.0], [2.0, 5.0, 0.0], [0.0, 0.0, 9.0]]), [True, True, False]),
    "cell_below_cutoff": (2, np.array([[2.6, 0.0, 0.0], [0.7, 2.4, 0.0], [0.3, -0.5, 2.8]]), True),
    "molecule": (8, 3.0 * np.eye(3), False),
}


@pytest.mark.parametrize("params", [COSINE_G4, POLYNOMIAL_G5], ids=["G2_G4_cosine", "G2_G5_polynomial"])
@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_derivatives_match_finite_differences(params, geometry):
    desc = Gaussian(params[0], ELEMENTS, params[1])
    n, cell, pbc = GEOMETRIES[geometry]
    atoms = _random_atoms(np.random.default_rng(sorted(GEOMETRIES).index(geometry)), n, cell, pbc, [3.5, 4.0])
    err, scale = finite_difference_check(desc, atoms, H)
    assert scale > 0.01
    assert err <= 1e-7 * scale, (err, scale)


@pytest.mark.parametrize("params", [COSINE_G4, POLYNOMIAL_G5], ids=["G2_G4_cosine", "G2_G5_polynomial"])
def test_single_atom(params):
    desc = Gaussian(params[0], ELEMENTS, params[1])
    fps = desc.featurize([Atoms("Cu", positions=[[0.3, 0.1, 0.2]])])
    assert not fps.fingerprints.any() and not fps.fprimes.any()
    assert finite_difference_check(desc, Atoms("Cu"), H) == (0.0, 0.0)


def test_feature_counts_and_padding():
    desc = Gaussian(COSINE_G4[0], ELEMENTS, COSINE_G4[1])
    # O, Cu: G2 2 etas x 2 rs x 3 elements; G4 1 eta x 2 zetas x 2 lambdas x 6 element pairs
    # H: G2 1 x 1 x 3; G4 1 x 1 x 1 x 6
    assert desc.features_per_element() == {"O": 36, "H": 9, "Cu": 36}
    assert desc.n_features == 36 and desc.cutoff == 4.0
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    fps = desc.featurize([water])
    assert fps.fingerprints[0, 9:].any()
    assert not fps.fingerprints[1:, 9:].any() and fps.fingerprints[1:, :9].any()


@pytest.mark.parametrize(
    "Gs, cutoff_params, match",
    [
        ({"default": {"G2": G2, "cutoff": 4.0, "G3": {}}}, None, "'G3'"),
        ({"default": {"G2": {"etas": [1.0], "rs": [0.0]}, "cutoff": 4.0}}, None, "'rs'"),
        ({"defualt": {"G2": G2, "cutoff": 4.0}}, None, "'defualt'"),
        ({"default": {"G2": G2, "cutoff": 4.0}}, {"cutoff_func": "Gaussian"}, "cutoff_func"),
        ({"default": {"G2": G2, "cutoff": 4.0}}, {"cutoff_func": "polynomial"}, "gamma"),
        ({"default": {"G2": {"etas": [1.0, -0.5], "rs_s": [0.0]}, "cutoff": 4.0}}, None, "etas"),
        ({"default": {"G4": {"etas": [1.0], "zetas": [0.5], "gammas": [1.0]}, "cutoff": 4.0}}, None, "zetas"),
        ({"default": {"G2": G2}}, None, "cutoff"),
        ({"O": {"G2": G2, "cutoff": 4.0}}, None, "'H'"),
    ],
)
def test_bad_parameters(Gs, cutoff_params, match):
    with pytest.raises(ValueError, match=match):
        Gaussian(Gs, ["O", "H"], cutoff_params)


def test_parameters_of_other_elements_are_ignored():
    desc = Gaussian({"default": {"G2": G2, "cutoff": 4.0}, "Pt": {"G2": G2, "cutoff": 9.0}}, ["O", "H"])
    assert desc.cutoff == 4.0


def test_element_not_in_descriptor():
    desc = Gaussian({"default": {"G2": G2, "cutoff": 4.0}}, ["O", "H"])
    with pytest.raises(FrameError, match="Cu"):
        desc.featurize([Atoms("OCu", positions=[[0, 0, 0], [2, 0, 0]])])
