"""Products with the derivative matrix recomputed by the kernels (Descriptor.jacobian): equal to
the products with the stored derivative blocks, the same on any number of threads and
in any number of parts; and the torch Function built on them (gradcheck,
gradgradcheck, forces and weight gradients of a force loss against stored blocks)."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from conftest import write_pseudodensities
from fastfp import jacobian as jacobian_module
from fastfp.descriptors.gaussian import Gaussian
from fastfp.descriptors.gmp import GMP, GMPOrderNorm
from fastfp.frames import pack_frames

ELEMENTS = ["H", "O", "Cu"]


@pytest.fixture(scope="module")
def gaussians(tmp_path_factory):
    return write_pseudodensities(
        tmp_path_factory.mktemp("g"),
        {el: [(2.0 + k, 0.9 + 0.4 * k), (-0.5, 2.5 + k), (0.3, 6.0 + 2 * k)][: 3 - k] for k, el in enumerate(ELEMENTS)},
    )


def descriptors(gaussians):
    """The three descriptors, with what exercises each kernel's paths: solid and surface
    harmonics, every feature mode, G2, G4 and G5."""
    return {
        "gmpordernorm": GMPOrderNorm({"MCSHs": {"orders": [0, 1, 2, 3, 4], "sigmas": [0.5, 1.1]}, "cutoff": 4.5,
                                      "atom_gaussians": gaussians}, ELEMENTS),
        "gmpordernorm-surface-sqrt": GMPOrderNorm({"MCSHs": {"orders": [0, 2, 3], "sigmas": [0.6]}, "cutoff": 4.5,
                                                   "atom_gaussians": gaussians, "solid_harmonics": False,
                                                   "square": False}, ELEMENTS),
        "gmp": GMP({"MCSHs": {"0": {"groups": [1], "sigmas": [0.5, 0.9]}, "2": {"groups": [1, 2], "sigmas": [0.7]},
                              "3": {"groups": [1, 3], "sigmas": [0.9]}}, "cutoff": 4.5, "atom_gaussians": gaussians},
                   ELEMENTS),
        "gaussian": Gaussian({"default": {"G2": {"etas": [0.5, 2.0], "rs_s": [0.0, 0.7]}, "cutoff": 4.0,
                                          "G4": {"etas": [0.3], "zetas": [1.0, 2.5], "gammas": [1.0, -1.0]}},
                              "H": {"G2": {"etas": [1.0], "rs_s": [0.0]}, "cutoff": 3.5,
                                    "G5": {"etas": [0.1], "zetas": [2.0], "gammas": [1.0]}}}, ELEMENTS),
    }


def frames():
    """A periodic cell smaller than the cutoff (atoms see their own images), a molecule
    and a lone atom in a small periodic cell."""
    rng = np.random.default_rng(3)
    cell = np.array([[3.1, 0.0, 0.0], [0.4, 3.3, 0.0], [0.3, 0.5, 3.2]])
    crystal = Atoms(numbers=[1, 8, 29, 8], positions=rng.random((4, 3)) @ cell, cell=cell, pbc=True)
    water = molecule("H2O")
    water.center(vacuum=3.0)
    alone = Atoms("Cu", positions=[[0.2, 0.3, 0.1]], cell=2.9 * np.eye(3), pbc=True)
    return [crystal, water, alone]


def dense_jacobian(desc, packed):
    """J from the stored derivative blocks, (n_atoms * n_features, 3 n_atoms)."""
    fps = desc.featurize_packed(packed)
    n, width = fps.fingerprints.shape
    out = np.zeros((n, width, n, 3))
    for i in range(n):
        for b in range(fps.fprime_ptr[i], fps.fprime_ptr[i + 1]):
            out[i, :, fps.fprime_j[b]] += fps.fprimes[b]
    return out.reshape(n * width, 3 * n)


@pytest.mark.parametrize("name", ["gmpordernorm", "gmpordernorm-surface-sqrt", "gmp", "gaussian"])
def test_products_equal_the_stored_blocks(gaussians, name):
    desc = descriptors(gaussians)[name]
    packed = pack_frames(frames(), desc.numbers)
    jac = desc.jacobian(packed)
    dense = dense_jacobian(desc, packed)
    rng = np.random.default_rng(1)
    v = rng.standard_normal((packed.n_atoms, 3))
    g = rng.standard_normal((packed.n_atoms, desc.n_features))
    scale = np.abs(dense).max()
    np.testing.assert_allclose(jac.product(v).ravel(), dense @ v.ravel(), rtol=0, atol=1e-12 * scale * np.abs(v).sum())
    np.testing.assert_allclose(jac.transposed_product(g).ravel(), dense.T @ g.ravel(), rtol=0,
                               atol=1e-12 * scale * np.abs(g).sum())
    np.testing.assert_array_equal(jac.fingerprints().fingerprints, desc.featurize_packed(packed).fingerprints)
    # a lone atom and its own images: no derivative at all
    alone = slice(packed.offsets[2], packed.offsets[3])
    assert not jac.transposed_product(g)[alone].any()


@pytest.mark.parametrize("name", ["gmpordernorm", "gaussian"])
def test_the_same_bits_on_any_threads_and_parts(gaussians, name, monkeypatch):
    desc = descriptors(gaussians)[name]
    packed = pack_frames(frames() * 3, desc.numbers)
    rng = np.random.default_rng(2)
    v = rng.standard_normal((packed.n_atoms, 3))
    g = rng.standard_normal((packed.n_atoms, desc.n_features))

    def products():
        jac = desc.jacobian(packed)
        return jac.product(v), jac.transposed_product(g), jac.transposed_product(g)  # pairs kept, or found again

    monkeypatch.setenv("FASTFP_NUM_THREADS", "1")
    one = products()
    monkeypatch.setenv("FASTFP_NUM_THREADS", "3")
    assert all(np.array_equal(a, b) for a, b in zip(one, products()))
    # one frame per part, and pairs kept for the first part only: the same numbers
    monkeypatch.setattr(jacobian_module, "PART_ATOMS", 1)
    monkeypatch.setattr(jacobian_module, "KEEP_PAIRS", 10)
    parts = products()
    for a, b in zip(one[:2], parts[:2]):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13 * np.abs(a).max())
    assert np.array_equal(parts[1], parts[2])


def test_pairs_found_already(gaussians, monkeypatch):
    """Pairs handed to the Jacobian give its products as its own search does; frames of
    more than one part refuse them."""
    desc = descriptors(gaussians)["gmp"]
    packed = pack_frames(frames(), desc.numbers)
    x = np.random.default_rng(3).standard_normal((packed.n_atoms, 3))
    pairs = desc.neighbor_pairs(packed)
    assert np.array_equal(desc.jacobian(packed, pairs=pairs).product(x), desc.jacobian(packed).product(x))
    monkeypatch.setattr(jacobian_module, "PART_ATOMS", 1)
    with pytest.raises(ValueError, match="at most 1 atoms, not 8"):
        desc.jacobian(packed, pairs=pairs)


def test_bad_shapes_are_refused(gaussians):
    desc = descriptors(gaussians)["gmp"]
    jac = desc.jacobian(pack_frames(frames(), desc.numbers))
    with pytest.raises(ValueError, match=r"x has shape \(3, 3\), expected \(8, 3\)"):
        jac.product(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"expected \(8, 6\)"):
        jac.transposed_product(np.zeros((8, 3)))


# -- the torch Function --------------------------------------------------------------


torch = pytest.importorskip("torch", reason="needs the 'torch' extra (pip install -e '.[torch]')")
from fastfp.amptorch.forces import DerivativeBlocks, RecomputedDerivatives, contract_forces  # noqa: E402


def both(desc, packed, width, seed=0):
    """The same scaled derivative matrix as stored blocks and recomputed, ``width``
    columns kept, and its scaling factor."""
    fps = desc.featurize_packed(packed)
    factor = torch.as_tensor(np.random.default_rng(seed).random((packed.n_atoms, width)) + 0.5)
    blocks = DerivativeBlocks(fps.fprime_ptr, fps.fprime_j, fps.fprimes[:, :width], factor)
    return blocks, RecomputedDerivatives(desc.jacobian(packed), factor), torch.as_tensor(fps.fingerprints[:, :width])


@pytest.mark.parametrize("name", ["gmpordernorm", "gmp", "gaussian"])
def test_gradcheck_and_gradgradcheck(gaussians, name):
    desc = descriptors(gaussians)[name]
    packed = pack_frames(frames()[:2], desc.numbers)
    _, recomputed, _ = both(desc, packed, desc.n_features - 1)
    gradients = torch.randn(packed.n_atoms, desc.n_features - 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g: contract_forces(recomputed, g), (gradients,))
    assert torch.autograd.gradgradcheck(lambda g: contract_forces(recomputed, g), (gradients,))


@pytest.mark.parametrize("name", ["gmpordernorm", "gmp", "gaussian"])
def test_forces_and_weight_gradients_equal_stored_blocks(gaussians, name):
    """A small network's energy, forces and force-loss gradients with respect to its
    weights, from stored blocks and recomputed derivatives: equal to 1e-10 relative."""
    desc = descriptors(gaussians)[name]
    packed = pack_frames(frames(), desc.numbers)
    blocks, recomputed, fingerprints = both(desc, packed, desc.n_features)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(desc.n_features, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    target = torch.randn(packed.n_atoms, 3, dtype=torch.float64)
    results = []
    for derivatives in (blocks, recomputed):
        model.zero_grad()
        x = fingerprints.clone().requires_grad_()
        energy = model(x).sum()
        dE_dG, = torch.autograd.grad(energy, x, create_graph=True)
        forces = contract_forces(derivatives, dE_dG)
        ((forces - target) ** 2).sum().backward()
        # (the last bias does not move the forces: no gradient)
        results.append([forces.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(results[0]) == len(results[1]) == 4
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-10 * float(a.abs().max()))
