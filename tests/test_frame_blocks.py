"""The in-memory data set's derivatives as pair blocks (fastfp.amptorch.frame_blocks),
without AMPTorch: the same matrices as AMPTorch's COO conversion and scaling, their
collation and force contraction, pickling to AMPTorch's format. AtomsTrainer on them:
tests/test_amptorch_dropin.py."""

import copy
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the 'torch' extra (pip install -e '.[torch]')")
pytest.importorskip("torch_geometric", reason="needs the 'torch' extra (pip install -e '.[torch]')")

import ase.io  # noqa: E402

from conftest import SHARED, requires_shared  # noqa: E402
from fastfp.amptorch import Gaussian, GMPOrderNorm, backend  # noqa: E402
from fastfp.amptorch.data import blocks_in_data, images_to_data  # noqa: E402
from fastfp.amptorch.forces import DerivativeMatrix, contract_forces  # noqa: E402
from fastfp.amptorch.frame_blocks import BlockDiagonal, FrameBlocks  # noqa: E402
from fastfp.amptorch.scaling import FeatureScaler  # noqa: E402
from fastfp.threads import calling_thread_only  # noqa: E402

pytestmark = pytest.mark.usefixtures("float64")


def descriptor(frames, scheme):
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    if scheme == "gaussian":  # H with fewer features: rows as wide as the widest element in the frame
        return Gaussian({"default": {"G2": {"etas": [0.05, 1.0], "rs_s": [0]},
                                     "G4": {"etas": [0.005], "zetas": [1.0, 4.0], "gammas": [1.0, -1.0]},
                                     "cutoff": 5.0},
                         "H": {"G2": {"etas": [0.05], "rs_s": [0]}, "cutoff": 4.0}}, elements)
    params = {"MCSHs": {"orders": [0, 1, 2], "sigmas": [0.4, 1.0, 2.0]}, "cutoff": 6.0,  # AMPTorch's threshold 1e-5
              "atom_gaussians": {el: str(SHARED / "gmp" / "psp_v3" / f"{el}_pseudodensity.g") for el in elements}}
    return GMPOrderNorm(params, elements)


@pytest.fixture(scope="module")
def frames():
    water = ase.io.read(SHARED / "data" / "water_842.traj", ":4")
    return {"gmpordernorm": ase.io.read(SHARED / "data" / "oc20_300_test.traj", ":6"),
            "gaussian": water + [water[0][water[0].numbers == 1]]}  # the last frame: H only, narrower rows


def both(desc, frames):
    """``(COO Data, block Data)`` of ``frames``: AMPTorch's conversion and the data set's."""
    coo = images_to_data(desc, frames, r_energy=False, r_forces=False, disable_tqdm=True)
    with blocks_in_data():
        blocks = images_to_data(desc, frames, r_energy=False, r_forces=False, disable_tqdm=True)
    return coo, blocks


@requires_shared
@pytest.mark.parametrize("scheme", ["gmpordernorm", "gaussian"])
@pytest.mark.parametrize("transform", ["normalize", "standardize"])
def test_blocks_hold_amptorchs_matrices_scaled_alike(frames, scheme, transform):
    desc = descriptor(frames[scheme], scheme)
    coo, blocks = both(desc, frames[scheme])
    assert all(isinstance(d.fprimes, FrameBlocks) for d in blocks)
    assert all(d.fprimes.is_sparse for d in coo)
    nnz = sum(d.fprimes._nnz() for d in coo)
    assert nnz == sum(np.count_nonzero(d.fprimes.fprimes_t) for d in blocks)
    if scheme == "gmpordernorm":  # the threshold dropped entries, which the blocks hold as zeros
        assert desc.prime_threshold == 1e-5 and nnz < 0.9 * sum(d.fprimes.fprimes_t.size for d in blocks)
    else:
        assert blocks[-1].fprimes.width < blocks[0].fprimes.width
    for a, b in zip(coo, blocks):
        assert b.fprimes.shape == a.fprimes.shape
        assert torch.equal(b.fprimes.to_dense(), a.fprimes.to_dense())
    # AMPTorch scales frames of one width (a data set's)
    coo, blocks = ([d for d in data if d.fingerprint.shape[1] == coo[0].fingerprint.shape[1]] for data in (coo, blocks))
    scaler = FeatureScaler(coo, True, {"type": transform, "range": (0, 1), "elementwise": True})
    scaler.norm(coo)
    scaler.norm(blocks)
    for a, b in zip(coo, blocks):  # the same arithmetic, value by value
        assert torch.equal(b.fingerprint, a.fingerprint)
        assert torch.equal(b.fprimes.to_dense(), a.fprimes.to_dense())


def random_frame(rng, n_atoms, width=4):
    """A FrameBlocks with random blocks (each centre: itself and some other atoms)."""
    ptr, js = [0], []
    for i in range(n_atoms):
        others = rng.choice([j for j in range(n_atoms) if j != i], size=rng.integers(0, n_atoms), replace=False)
        js += [i, *others.tolist()]
        ptr.append(len(js))
    return FrameBlocks(np.array(ptr), np.array(js), rng.normal(size=(len(js), 3, width)))


def random_batch(seed):
    rng = np.random.default_rng(seed)
    return BlockDiagonal(tuple(random_frame(rng, n) for n in (5, 1, 7, 3)))


def test_block_diagonal_contracts_as_the_coo_matrix():
    batch = random_batch(0)
    coo = DerivativeMatrix(torch.block_diag(*[f.to_coo().to_dense() for f in batch.frames]).to_sparse())
    assert batch.shape == coo.shape
    gradients = torch.randn(1, batch.shape[0], requires_grad=True)
    g = torch.randn(batch.n_atoms, 3)
    results = []
    for matrix in (batch, coo, batch.torch_blocks("cpu")):
        gradients.grad = None
        forces = contract_forces(matrix, gradients)
        forces.backward(g)
        results.append((forces.detach(), gradients.grad.clone()))
    for forces, grad in results[1:]:
        torch.testing.assert_close(results[0][0], forces, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(results[0][1], grad, rtol=1e-13, atol=1e-13)
    # frames on the threads or all on one: the same numbers
    with calling_thread_only():
        assert torch.equal(contract_forces(batch, gradients.detach()), results[0][0])
    assert contract_forces(batch, gradients.detach().to(torch.float32)).dtype == torch.float32
    assert batch.to("cpu") is batch


def test_block_diagonal_first_and_second_derivatives():
    batch = random_batch(1)
    weights = torch.randn(batch.shape[0], requires_grad=True)
    fingerprints = torch.randn(batch.shape[0])

    def forces_of(w):
        energy = torch.sum(torch.tanh(w * fingerprints) ** 2)
        return contract_forces(batch, torch.autograd.grad(energy, w, create_graph=True)[0])

    assert torch.autograd.gradcheck(forces_of, (weights,))
    assert torch.autograd.gradgradcheck(forces_of, (weights,))


def test_pickled_blocks_are_amptorchs_coo_and_batches_stay_blocks():
    batch = random_batch(2)
    frame = batch.frames[0]
    saved = pickle.loads(pickle.dumps(frame))
    assert isinstance(saved, torch.Tensor) and saved.is_sparse  # an AMPTorch LMDB entry, readable without fastfp
    assert torch.equal(saved.to_dense(), frame.to_dense())
    assert isinstance(copy.deepcopy(frame), FrameBlocks) and copy.deepcopy(frame).fprimes_t is not frame.fprimes_t
    again = pickle.loads(pickle.dumps(batch))  # e.g. from a DataLoader worker
    assert isinstance(again, BlockDiagonal)
    gradients = torch.randn(batch.shape[0])
    assert torch.equal(contract_forces(again, gradients), contract_forces(batch, gradients))


def test_collation_hook_and_bad_input():
    batch = random_batch(3)
    assert isinstance(backend.sparse_block_diag(list(batch.frames)), BlockDiagonal)
    coo = [f.to_coo() for f in batch.frames]
    assert isinstance(backend.sparse_block_diag(coo), DerivativeMatrix)
    with pytest.raises(TypeError, match=r"FrameBlocks .* only, got \['FrameBlocks', 'Tensor'\]"):
        backend.sparse_block_diag([batch.frames[0], coo[1]])
    wide = FrameBlocks(np.array([0, 1]), np.array([0]), np.ones((1, 3, 5)))
    with pytest.raises(ValueError, match=r"widths differ: \[4, 5\]"):
        BlockDiagonal((batch.frames[0], wide))
    with pytest.raises(ValueError, match="gradients has 3 elements"):
        batch.contract(torch.ones(3))
    with pytest.raises(ValueError, match="on the CPU in float64 or float32"):
        batch.contract(torch.ones(batch.shape[0], dtype=torch.int64))
    with pytest.raises(ValueError, match="fprime_ptr must rise"):
        FrameBlocks(np.array([0, 2]), np.array([0]), np.ones((1, 3, 4)))
    with pytest.raises(ValueError, match="expected"):
        FrameBlocks(np.array([0, 1]), np.array([0]), np.ones((1, 4, 3)))
    with pytest.raises(ValueError, match="outside the frame"):
        FrameBlocks(np.array([0, 1]), np.array([1]), np.ones((1, 3, 4)))
