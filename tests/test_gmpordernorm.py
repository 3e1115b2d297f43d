"""GMPOrderNorm against AMPTorch's recorded output, and against finite differences."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from conftest import assert_matches_reference, load_reference, requires_shared, write_pseudodensities
from fastfp.amptorch import GMPOrderNorm as AMPTorchGMPOrderNorm
from fastfp.descriptors.gmp import GMPOrderNorm
from fastfp import ConfigError, FrameError, PseudodensityError


@requires_shared
@pytest.mark.parametrize("name", ["gmpordernorm_solid", "gmpordernorm_mcsh"])
def test_matches_amptorch_reference(name):
    config, frames, data = load_reference(name)
    desc = AMPTorchGMPOrderNorm(config["fp_params"], config["elements"])
    images = desc.prepare_fingerprints(frames, calc_derivatives=True)
    primes = [image["descriptor_primes"] for image in images]
    assert_matches_reference(
        name,
        data,
        [(image["descriptors"], (p["row"], p["col"], p["val"], p["size"])) for image, p in zip(images, primes)],
        fp_atol=0.0,
        fp_atol_of_largest=1e-12,
    )
    for k, p in enumerate(primes):
        assert np.abs(p["val"]).min() >= 1e-5, f"frame {k}"  # AMPTorch's threshold is reproduced


@requires_shared
def test_amptorch_binning_only_changes_frames_with_atoms_on_a_face():
    """Without the emulation fastfp keeps the pairs AMPTorch drops; frames without
    atoms just below a periodic face are unchanged."""
    config, frames, data = load_reference("gmpordernorm_solid")
    desc = GMPOrderNorm(config["fp_params"], config["elements"])
    a = desc.featurize(frames, derivatives=False)
    b = desc.featurize(frames, derivatives=False, amptorch_binning=True)
    for k, atoms in enumerate(frames):
        frac = atoms.cell.scaled_positions(atoms.positions)[:, atoms.pbc]
        on_face = ((frac < 0) & (frac > -1e-7)).any()
        same = np.allclose(a.frame(k).fingerprints, b.frame(k).fingerprints, rtol=1e-12, atol=0)
        assert same != on_face, f"frame {k}"


@requires_shared
def test_prepare_fingerprints_layout_and_hash():
    config, frames, data = load_reference("gmpordernorm_solid")
    desc = AMPTorchGMPOrderNorm(config["fp_params"], config["elements"])
    image = desc.prepare_fingerprints(frames[:1], calc_derivatives=True)[0]
    n = len(frames[0])
    assert image["num_atoms"] == n
    assert image["descriptors"].shape == (n, 20)
    np.testing.assert_array_equal(image["atomic_numbers"], frames[0].numbers)
    assert set(image["num_descriptors"]) == set(frames[0].get_chemical_symbols())
    # the hash is AMPTorch's md5 of its descriptor_setup table: equal settings, equal hash
    again = AMPTorchGMPOrderNorm(dict(config["fp_params"]), list(config["elements"]))
    assert desc == again and desc.descriptor_setup_hash == again.descriptor_setup_hash
    other = dict(config["fp_params"], cutoff=7.0)
    assert desc != AMPTorchGMPOrderNorm(other, config["elements"])
    assert desc.descriptor_setup.shape == (20, 9)


def gaussians(tmp_path, elements):
    """Pseudodensity files of two Gaussians each, written to ``tmp_path``."""
    return write_pseudodensities(
        tmp_path, {el: [(1.5 + k, 0.8 + 0.3 * k), (-0.4, 3.0 + k)] for k, el in enumerate(elements)}
    )


def test_bad_input(tmp_path):
    params = {"MCSHs": {"orders": [0, 1], "sigmas": [0.5]}, "cutoff": 5.0,
              "atom_gaussians": gaussians(tmp_path, ["H", "O"])}
    desc = GMPOrderNorm(params, ["H", "O"])
    water = molecule("H2O")
    with pytest.raises(FrameError, match=r"frame 1: element\(s\) \['C'\]"):
        desc.featurize([water, molecule("CH4")])
    nan = water.copy()
    nan.positions[1, 0] = np.nan
    with pytest.raises(FrameError, match="frame 0: non-finite"):
        desc.featurize([nan])
    with pytest.raises(FrameError, match="frame 0: empty frame"):
        desc.featurize([Atoms()])
    flat = water.copy()
    flat.cell = [[3, 0, 0], [6, 0, 0], [0, 0, 3]]
    flat.pbc = True
    with pytest.raises(FrameError, match="zero volume"):
        desc.featurize([flat])
    with pytest.raises(ValueError, match=r"unknown parameter key\(s\) \['sigma'\]"):
        GMPOrderNorm(dict(params, sigma=1.0), ["H", "O"])
    with pytest.raises(ValueError, match="unknown chemical element"):
        GMPOrderNorm(params, ["H", "Xx"])
    with pytest.raises(PseudodensityError, match=r"no pseudodensity file given for element\(s\) \['C'\]"):
        GMPOrderNorm(params, ["H", "O", "C"])
    missing = dict(params, atom_gaussians=dict(params["atom_gaussians"], O=str(tmp_path / "nope.g")))
    with pytest.raises(PseudodensityError, match="element O: pseudodensity file .*nope.g.* not found"):
        GMPOrderNorm(missing, ["H", "O"])
    (tmp_path / "bad.g").write_text("1.0 2.0\n3.0 oops\n")
    malformed = dict(params, atom_gaussians=dict(params["atom_gaussians"], O=str(tmp_path / "bad.g")))
    with pytest.raises(PseudodensityError, match="bad.g:2: expected two numbers"):
        GMPOrderNorm(malformed, ["H", "O"])
    with pytest.raises(ConfigError, match=r"GMPOrderNorm MCSHs\.orders\[0\]: expected a value <= 9, got 10"):
        GMPOrderNorm(dict(params, MCSHs={"orders": [10], "sigmas": [0.5]}), ["H", "O"])


def test_default_cutoff_follows_amptorch_rule(tmp_path):
    params = {"MCSHs": {"orders": [0], "sigmas": [0.4, 1.0]}, "atom_gaussians": gaussians(tmp_path, ["H"])}
    desc = AMPTorchGMPOrderNorm(params, ["H"])
    sigma = 1.0
    a = 1.0 / (sigma * np.sqrt(2 * np.pi))
    assert desc.cutoff == round(np.sqrt(np.log(1e-8 / a) / (-1 / (2 * sigma**2))), 2)
    assert params["cutoff"] == desc.cutoff


def test_cell_free_molecule_and_slab_without_vacuum_vector(tmp_path):
    """A molecule with no cell, or a slab whose non-periodic cell vector is zero, gives
    the same fingerprints as in a box that holds it."""
    from ase.build import fcc111

    params = {"MCSHs": {"orders": [0, 2], "sigmas": [0.5, 1.0]}, "cutoff": 5.0,
              "atom_gaussians": gaussians(tmp_path, ["H", "C", "O", "Cu"])}
    desc = GMPOrderNorm(params, ["H", "C", "O", "Cu"])
    free = molecule("CH3CH2OH")
    boxed = free.copy()
    boxed.cell = [30, 30, 30]
    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    slab.pbc = [True, True, False]
    flat = slab.copy()
    flat.cell[2] = 0.0
    a = desc.featurize([free, slab], derivatives=False).fingerprints
    b = desc.featurize([boxed, flat], derivatives=False).fingerprints
    np.testing.assert_allclose(a, b, rtol=1e-13)


@pytest.mark.parametrize("threshold", [0.0, 1e-5])
def test_coo_holds_the_blocks_entries_in_amptorchs_order(tmp_path, threshold):
    """``Fingerprints.coo`` is the blocks' entries above the threshold, rows ascending and
    columns ascending within a row, whether a centre's neighbours span few atom indices
    (a small periodic cell: ordered by marks) or many (a chain with its atoms shuffled:
    sorted)."""
    from ase.build import bulk

    params = {"MCSHs": {"orders": [0, 1, 2], "sigmas": [0.5, 1.0]}, "cutoff": 5.0,
              "atom_gaussians": gaussians(tmp_path, ["H", "Cu"])}
    desc = GMPOrderNorm(params, ["H", "Cu"])
    rng = np.random.default_rng(7)
    cell = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    cell.rattle(0.05, seed=1)
    chain = Atoms("H60", positions=[[1.7 * k, 0.1 * np.sin(k), 0.0] for k in rng.permutation(60)])
    for atoms in (cell, chain):
        fps = desc.featurize([atoms])
        row, col, val, size = fps.coo(0, threshold)
        nf = desc.n_features
        entries = []
        for i in range(len(atoms)):
            for b in range(fps.fprime_ptr[i], fps.fprime_ptr[i + 1]):
                for f in range(nf):
                    for xyz in range(3):
                        v = fps.fprimes[b, f, xyz]
                        if v != 0.0 and abs(v) >= threshold:
                            entries.append((i * nf + f, fps.fprime_j[b] * 3 + xyz, v))
        want = np.array(sorted(entries))
        assert len(val) == len(want) > 0
        np.testing.assert_array_equal(row, want[:, 0])
        np.testing.assert_array_equal(col, want[:, 1])
        np.testing.assert_array_equal(val, want[:, 2])
        np.testing.assert_array_equal(size, [len(atoms) * nf, 3 * len(atoms)])
