"""GMP (AMPTorch ``fp_scheme: "gmp"``, per-group features) against AMPTorch's recorded
output and against finite differences."""

import numpy as np
import pytest
from ase import Atoms

from conftest import SHARED, assert_matches_reference, load_reference, requires_shared, write_pseudodensities
from fd import finite_difference_check
from fastfp import harmonics
from fastfp.descriptors.gmp import GMP, gmp_group_kind
from fastfp.neighbors import neighbor_pairs
from fastfp.frames import pack_frames

GAUSSIANS = SHARED / "gmp" / "valence_gaussians"
requires_gaussians = pytest.mark.skipif(
    not GAUSSIANS.is_dir(), reason=f"pseudodensities not found at {GAUSSIANS} (../shared beside the repository)"
)


def pseudodensities(*elements):
    """{element: path} of the shared valence pseudodensity of each element."""
    return {el: str(next(GAUSSIANS.glob(f"{el}_pseudodensity_*.g"))) for el in elements}


def all_groups(orders, sigmas):
    return [
        {"order": n, "group": g, "sigmas": list(sigmas)}
        for n in orders
        for g in range(1, harmonics.n_groups(n) + 1)
    ]


# --------------------------------------------------------------------------- AMPTorch


@requires_shared
def test_matches_amptorch_reference():
    config, frames, data = load_reference("gmp_groups")
    assert config["fp_scheme"] == "gmp"
    desc = GMP(config["fp_params"], config["elements"])
    fps = desc.featurize(frames, amptorch_binning=True)
    plain = desc.featurize(frames, derivatives=False, amptorch_binning=True)
    np.testing.assert_array_equal(plain.fingerprints, fps.fingerprints)
    # fp_atol: in symmetric crystals some p/d-type groups are sums of O(1) contributions
    # cancelling to ~1e-6 (with pseudodensity Gaussians of B ~ +-1e3 cancelling too);
    # AMPTorch and fastfp then differ by summation-order round-off, ~3e-11 absolute
    assert_matches_reference(
        "gmp_groups", data, [(fps.frame(k).fingerprints, fps.coo(k)) for k in range(len(frames))], fp_atol=1e-10
    )


# --------------------------------------------------------------------------- semantics


def small_gaussians(tmp_path, elements):
    """Pseudodensity files with a negative Gaussian, so that order-0 overlaps can be < 0."""
    return write_pseudodensities(
        tmp_path, {el: [(1.5 + k, 0.8 + 0.3 * k), (-2.5, 0.5 + 0.1 * k)] for k, el in enumerate(elements)}
    )


def test_group_kinds_follow_amptorch_get_mcsh_type():
    # GMP/gmp.cpp get_mcsh_type for orders 0-5 (types: 1 linear, 2 three, 3 six components)
    expected = {0: [1], 1: [2], 2: [2, 2], 3: [2, 3, 1], 4: [2, 3, 2, 2], 5: [2, 3, 3, 2, 2]}
    for order, kinds in expected.items():
        assert [gmp_group_kind(order, g) for g in range(1, len(kinds) + 1)] == kinds


def test_square_linear_and_threshold(tmp_path):
    rng = np.random.default_rng(5)
    atoms = Atoms("HOH", positions=rng.uniform(0, 2.5, (3, 3)))
    lone = Atoms("O", positions=[[0.0, 0.0, 0.0]])
    params = {"MCSHs_detailed_list": all_groups(range(6), [0.4, 1.5]), "cutoff": 6.0,
              "atom_gaussians": small_gaussians(tmp_path, ["H", "O"])}
    plain = GMP(params, ["H", "O"])
    squared = GMP(dict(params, square=True), ["H", "O"])
    assert plain.n_features == squared.n_features == 2 * sum(harmonics.n_groups(n) for n in range(6))
    a = plain.featurize([atoms, lone], derivatives=False).fingerprints
    b = squared.featurize([atoms, lone], derivatives=False).fingerprints
    linear = np.array([gmp_group_kind(n, g) == 1 for n, g, sig in plain.setups for _ in sig])
    np.testing.assert_allclose(b, a * a, rtol=1e-12, atol=1e-300)
    assert (a[:3, ~linear] > 0).all()
    assert (a[:, linear] < 0).any()  # mu itself, sign kept (negative Gaussian)
    # a lone atom: groups with an odd exponent vanish (sqrt features: exactly 0, no derivative)
    odd = np.array([any(e % 2 for e in harmonics.group_partition(n, g)) for n, g, sig in plain.setups for _ in sig])
    assert (a[3, odd] == 0).all() and (a[3, ~odd] != 0).all()
    fps = plain.featurize([lone])
    assert not fps.fprimes.any()


def test_feature_order_and_formats(tmp_path):
    gauss = small_gaussians(tmp_path, ["H", "O"])
    nested = GMP({"MCSHs": {"3": {"groups": [3, 1], "sigmas": [0.5, 1.0]}, "0": {"groups": [1], "sigmas": [0.7]}},
                  "cutoff": 5.0, "atom_gaussians": gauss}, ["H", "O"])
    assert nested.setups == [(0, 1, [0.7]), (3, 3, [0.5, 1.0]), (3, 1, [0.5, 1.0])]
    detailed = GMP({"MCSHs_detailed_list": [{"order": 0, "group": 1, "sigmas": [0.7]},
                                            {"order": 3, "group": 3, "sigmas": [0.5, 1.0]},
                                            {"order": 3, "group": 1, "sigmas": [0.5, 1.0]}],
                    "cutoff": 5.0, "atom_gaussians": gauss}, ["H", "O"])
    atoms = Atoms("OH", positions=[[0, 0, 0], [0.7, 0.5, 0.3]])
    np.testing.assert_array_equal(nested.featurize([atoms]).fingerprints, detailed.featurize([atoms]).fingerprints)
    assert nested.descriptor_type == "GMP" and nested.n_features == 5


def test_bad_input(tmp_path):
    gauss = small_gaussians(tmp_path, ["H"])
    ok = {"MCSHs": {"0": {"groups": [1], "sigmas": [0.5]}}, "cutoff": 5.0, "atom_gaussians": gauss}
    GMP(ok, ["H"])
    GMP(dict(ok, prime_threshold=1e-5, log=False, square=True), ["H"])  # accepted keys
    bad = [
        (dict(ok, orders=[0]), "unknown parameter key"),
        ({k: v for k, v in ok.items() if k != "cutoff"}, "GMP cutoff: required, missing"),
        ({k: v for k, v in ok.items() if k != "atom_gaussians"}, "atom_gaussians"),
        ({"cutoff": 5.0, "atom_gaussians": gauss}, "MCSHs"),
        (dict(ok, MCSHs={"x": {"groups": [1], "sigmas": [0.5]}}), r'MCSHs\.x: expected an MCSH order "0"\.\."9" as key, got \'x\''),
        (dict(ok, MCSHs={"10": {"groups": [1], "sigmas": [0.5]}}), r"MCSHs\['10'\]: expected an MCSH order"),
        (dict(ok, MCSHs={"2": {"groups": [3], "sigmas": [0.5]}}), "groups 1..2"),
        (dict(ok, MCSHs={"2": {"groups": [], "sigmas": [0.5]}}), r"MCSHs\['2'\]\.groups: expected a non-empty list, got \[\]"),
        (dict(ok, MCSHs={"2": {"groups": [1]}}), "missing"),
        (dict(ok, MCSHs={"2": {"groups": [1], "sigmas": [0.5], "weight": 1}}), "unknown parameter key"),
        (dict(ok, MCSHs={"2": {"groups": [1], "sigmas": [-0.5]}}), "sigmas"),
        (dict(ok, MCSHs={"1": {"groups": [1], "sigmas": [0.5]}, 1: {"groups": [1], "sigmas": [0.5]}}), "twice"),
        (dict(ok, MCSHs={"1": {"groups": [1.5], "sigmas": [0.5]}}), "integer"),
        ({"MCSHs_detailed_list": [{"order": 1, "sigmas": [0.5]}], "cutoff": 5.0, "atom_gaussians": gauss}, "group"),
        ({"MCSHs_detailed_list": [{"order": 4, "group": 5, "sigmas": [0.5]}], "cutoff": 5.0,
          "atom_gaussians": gauss}, "groups 1..4"),
        (dict(ok, rs_setup={"setup": "other"}), "rs_setup"),
        (dict(ok, cutoff=-1.0), "cutoff"),
    ]
    for params, match in bad:
        with pytest.raises(ValueError, match=match):
            GMP(params, ["H"])


# --------------------------------------------------------------------------- derivatives


def far_from_cutoff(atoms, cutoff, margin=1e-2):
    """GMP truncates at the cutoff: keep every distance away from it for the stencil."""
    pairs = neighbor_pairs(pack_frames([atoms], np.unique(atoms.numbers)), cutoff + margin)
    r = np.linalg.norm(pairs.vectors, axis=1)
    return not ((r > cutoff - margin) & (r < cutoff + margin)).any()


def geometries():
    rng = np.random.default_rng(16)
    cell = np.array([[4.6, 0.0, 0.0], [1.3, 4.9, 0.0], [-0.8, 1.1, 5.2]])
    triclinic = Atoms(rng.choice(["H", "C", "O", "Cu"], 7), scaled_positions=rng.uniform(0, 1, (7, 3)),
                      cell=cell, pbc=True)
    small = Atoms(["Cu", "O"], positions=[[0.3, 0.2, 0.1], [1.2, 1.4, 0.9]],
                  cell=[[2.4, 0.0, 0.0], [0.5, 2.6, 0.0], [0.3, -0.4, 2.5]], pbc=True)
    molecule = Atoms(["C", "O", "H", "H", "H"], positions=rng.uniform(0, 2.2, (5, 3)))
    single = Atoms(["O"], positions=[[0.1, -0.2, 0.3]])
    single_periodic = Atoms(["C"], positions=[[0.4, 0.1, 0.2]], cell=np.diag([2.9, 3.1, 3.3]), pbc=True)
    return {"triclinic": triclinic, "cell_smaller_than_cutoff": small, "molecule": molecule,
            "single_atom": single, "single_atom_periodic": single_periodic}


@requires_gaussians
@pytest.mark.parametrize("square", [False, True])
@pytest.mark.parametrize("name", list(geometries()))
def test_finite_differences(name, square):
    atoms = geometries()[name]
    cutoff = 5.0
    assert far_from_cutoff(atoms, cutoff)
    desc = GMP({"MCSHs_detailed_list": all_groups(range(6), [0.4, 1.1]), "cutoff": cutoff, "square": square,
                "atom_gaussians": pseudodensities("H", "C", "O", "Cu"),
                "rs_setup": {"setup": "scale", "scale_factor": 1.5}}, ["H", "C", "O", "Cu"])
    h = 1e-3
    err, largest = finite_difference_check(desc, atoms, h)
    # floor: the stencil's round-off, ~1e-16 |fingerprint| / h (matters only when all derivatives vanish)
    noise = 1e-13 * np.abs(desc.featurize([atoms], derivatives=False).fingerprints).max() / h
    assert err <= 1e-7 * largest + noise, (err, largest, noise)
    if len(atoms) == 1:
        assert largest == 0  # moving a lone atom (and its images) changes nothing


@requires_gaussians
def test_finite_differences_orders_6_to_9():
    """Orders above AMPTorch's 0-5 use the same tables (group numbering as get_mcsh_type)."""
    atoms = geometries()["triclinic"]
    desc = GMP({"MCSHs_detailed_list": all_groups(range(6, 10), [0.9]), "cutoff": 5.0,
                "atom_gaussians": pseudodensities("H", "C", "O", "Cu"),
                "rs_setup": {"setup": "constant", "rs": 1.5}}, ["H", "C", "O", "Cu"])
    assert far_from_cutoff(atoms, 5.0)
    err, largest = finite_difference_check(desc, atoms, h=1e-3)
    assert err <= 1e-7 * largest, (err, largest)
