"""The drop-in's torch parts without AMPTorch: scaling against AMPTorch's recorded
dataset, force contraction (COO and derivative blocks), collation."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the 'torch' extra (pip install -e '.[torch]')")
pytest.importorskip("torch_geometric", reason="needs the 'torch' extra (pip install -e '.[torch]')")

from conftest import load_reference, reference_fprimes, requires_shared, write_pseudodensities  # noqa: E402
from fastfp.amptorch import GMPOrderNorm  # noqa: E402
from fastfp.amptorch.collate import sparse_block_diag  # noqa: E402
from fastfp.amptorch.data import images_to_data  # noqa: E402
from fastfp.amptorch import model as model_module  # noqa: E402
from fastfp.amptorch.forces import DerivativeBlocks, DerivativeMatrix, contract_forces  # noqa: E402
from fastfp.amptorch.model import energy_and_forces, singlenn_atomic_energies  # noqa: E402
from fastfp.amptorch.scaling import FeatureScaler, TargetScaler  # noqa: E402


pytestmark = pytest.mark.usefixtures("float64")


@requires_shared
def test_scaled_dataset_matches_amptorch():
    config, frames, data = load_reference("dataset_scaled_gmpordernorm")
    for k, atoms in enumerate(frames):
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms.calc = SinglePointCalculator(atoms, energy=float(data[f"energy_{k}"]), forces=data[f"forces_{k}"])
    desc = GMPOrderNorm(config["fp_params"], config["elements"])
    data_list = images_to_data(desc, frames, disable_tqdm=True)
    features = FeatureScaler(data_list, True, config["scaling"])
    targets = TargetScaler(data_list, True)
    features.norm(data_list)
    targets.norm(data_list)
    assert float(targets.target_mean) == pytest.approx(float(data["target_mean"]), rel=1e-12)
    assert float(targets.target_std) == pytest.approx(float(data["target_std"]), rel=1e-12)
    for k, d in enumerate(data_list):
        np.testing.assert_allclose(d.fingerprint.numpy(), data[f"fp_{k}"], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(d.fprimes.to_dense().numpy(), reference_fprimes(data, k), rtol=0, atol=1e-4)
        scaled_energy = (data[f"energy_{k}"] - data["target_mean"]) / data["target_std"]
        assert float(d.energy) == pytest.approx(float(scaled_energy), rel=1e-10, abs=1e-12)


def test_labels_read_as_ase_reads_them(tmp_path):
    """Energies and forces are ASE's (``apply_constraint=False``: fixed atoms keep their
    forces); a frame moved after its labels were computed is refused, as ASE refuses it,
    whichever labels are read; a calculator without forces gives ASE's error."""
    from ase.build import bulk
    from ase.calculators.calculator import PropertyNotImplementedError
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixAtoms

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.set_constraint(FixAtoms(indices=[0]))
    forces = np.random.default_rng(0).normal(size=(len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, energy=-1.5, forces=forces)
    gaussians = write_pseudodensities(tmp_path, {"Cu": [(1.0, 0.8)]})
    desc = GMPOrderNorm({"MCSHs": {"orders": [0, 1], "sigmas": [0.5]}, "atom_gaussians": gaussians, "cutoff": 4.0},
                        ["Cu"])
    for r_energy in (True, False):
        (data,) = images_to_data(desc, [atoms], r_energy=r_energy, disable_tqdm=True)
        np.testing.assert_array_equal(data.forces.numpy(), forces)
        assert data.energy == -1.5 if r_energy else "energy" not in data
    moved = atoms.copy()
    moved.calc = atoms.calc
    moved.positions[1] += 0.01
    for r_energy in (True, False):
        with pytest.raises(PropertyNotImplementedError):
            images_to_data(desc, [moved], r_energy=r_energy, disable_tqdm=True)
    atoms.calc = SinglePointCalculator(atoms, energy=-1.5)
    with pytest.raises(PropertyNotImplementedError):
        images_to_data(desc, [atoms], disable_tqdm=True)


@pytest.mark.parametrize("transform", ["normalize", "standardize"])
@pytest.mark.parametrize("elementwise", [True, False])
def test_feature_scaler_scales_fprimes_like_fingerprints(transform, elementwise):
    """Scaling is affine per (element, feature): derivatives scale by the same factor."""
    from torch_geometric.data import Data

    rng = np.random.default_rng(0)
    data_list = []
    for n in (3, 5):
        numbers = torch.as_tensor(rng.choice([1, 8], size=n))
        fprimes = torch.sparse_coo_tensor(
            torch.as_tensor(np.vstack([rng.integers(0, n * 4, 30), rng.integers(0, 3 * n, 30)])),
            torch.as_tensor(rng.normal(size=30)), (n * 4, 3 * n))
        data_list.append(Data(fingerprint=torch.as_tensor(rng.normal(size=(n, 4))), atomic_numbers=numbers,
                              fprimes=fprimes, num_nodes=n))
    raw = [(d.fingerprint.clone(), d.fprimes.coalesce()) for d in data_list]
    scaling = {"type": transform, "range": (0, 1), "elementwise": elementwise}
    scaler = FeatureScaler(data_list, True, scaling)
    scaler.norm(data_list)
    for (fp, fprimes), d in zip(raw, data_list):
        for z in d.atomic_numbers.unique().tolist():
            s = scaler.scales[z] if elementwise else scaler.scale
            expect = (fp - s["offset"]) / s["scale"] if transform == "standardize" else fp * s["scale"] + s["offset"]
            rows = d.atomic_numbers == z
            np.testing.assert_allclose(d.fingerprint[rows].numpy(), expect[rows].numpy(), rtol=1e-14)
        row = fprimes.indices()[0]
        atom, feature = row // 4, row % 4
        factor = torch.stack([
            (scaler.scales[int(d.atomic_numbers[a])] if elementwise else scaler.scale)["scale"][f]
            for a, f in zip(atom.tolist(), feature.tolist())])
        expect = fprimes.values() / factor if transform == "standardize" else fprimes.values() * factor
        np.testing.assert_allclose(d.fprimes.coalesce().values().numpy(), expect.numpy(), rtol=1e-14)
    if elementwise:
        with pytest.raises(ValueError, match=r"no scaling fitted for atomic number\(s\) \[29\]"):
            d = data_list[0]
            d.atomic_numbers = torch.full_like(d.atomic_numbers, 29)
            scaler.norm([d])


def random_fprimes(seed, n_atoms=7, n_features=5, nnz=60):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, n_atoms * n_features, (nnz,), generator=g)
    cols = torch.randint(0, 3 * n_atoms, (nnz,), generator=g)
    values = torch.randn(nnz, generator=g)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n_atoms * n_features, 3 * n_atoms))


def random_blocks(seed, n_atoms=6, n_features=4):
    """Random DerivativeBlocks (each centre: itself and a few other atoms) and the dense
    matrix (n_atoms * n_features, 3 n_atoms) they stand for, factor included."""
    rng = np.random.default_rng(seed)
    ptr, js = [0], []
    for i in range(n_atoms):
        others = rng.choice([j for j in range(n_atoms) if j != i], size=rng.integers(0, n_atoms), replace=False)
        js += [i, *others.tolist()]
        ptr.append(len(js))
    fprimes = rng.normal(size=(len(js), n_features, 3))
    factor = torch.as_tensor(rng.uniform(0.5, 2.0, size=(n_atoms, n_features)))
    dense = np.zeros((n_atoms * n_features, 3 * n_atoms))
    for i in range(n_atoms):
        for b in range(ptr[i], ptr[i + 1]):
            dense[i * n_features : (i + 1) * n_features, 3 * js[b] : 3 * js[b] + 3] += (
                factor[i].numpy()[:, None] * fprimes[b])
    return DerivativeBlocks(np.array(ptr), np.array(js), fprimes, factor), torch.as_tensor(dense)


def on_torch(blocks):
    """``blocks`` with torch tensors, as on-the-fly training on the device hands them over
    (contracted by torch ops; here on the CPU)."""
    arrays = (torch.from_numpy(a) for a in (blocks.fprime_ptr, blocks.fprime_j, blocks.fprimes))
    return DerivativeBlocks(*arrays, blocks.factor)


BLOCKS = ["blocks", "torch blocks"]


def random_matrix(kind, seed):
    """``(fprimes, dense)``: a random COO matrix or DerivativeBlocks (NumPy or torch
    arrays) and its dense form."""
    if kind == "coo":
        fprimes = random_fprimes(seed)
        return fprimes, fprimes.to_dense()
    blocks, dense = random_blocks(seed)
    return (on_torch(blocks) if kind == "torch blocks" else blocks), dense


@pytest.mark.parametrize("kind", ["coo", *BLOCKS])
def test_force_contraction_equals_dense_product(kind):
    fprimes, dense = random_matrix(kind, 1)
    gradients = torch.randn(1, dense.shape[0])
    expect = -(dense.T @ gradients.reshape(-1)).view(-1, 3)
    torch.testing.assert_close(contract_forces(fprimes, gradients), expect, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kind", ["coo", *BLOCKS])
def test_force_contraction_first_and_second_derivatives(kind):
    fprimes, dense = random_matrix(kind, 2)
    weights = torch.randn(dense.shape[0], requires_grad=True)
    fingerprints = torch.randn(dense.shape[0])

    def forces_of(w):
        # a smooth energy of the fingerprints, as a network gives: forces need dE/dG
        energy = torch.sum(torch.tanh(w * fingerprints) ** 2)
        gradients = torch.autograd.grad(energy, w, create_graph=True)[0]
        return contract_forces(fprimes, gradients)

    assert torch.autograd.gradcheck(forces_of, (weights,))
    assert torch.autograd.gradgradcheck(forces_of, (weights,))


@pytest.mark.parametrize("kind", BLOCKS)
def test_block_contraction_backward_dtypes_and_checks(kind):
    blocks, dense = random_matrix(kind, 3)
    # the backward pass is the transposed product, -A g
    g = torch.randn(blocks.n_atoms, 3)
    x = torch.randn(dense.shape[0], requires_grad=True)
    contract_forces(blocks, x).backward(g)
    torch.testing.assert_close(x.grad, -(dense @ g.reshape(-1)), rtol=1e-13, atol=1e-13)
    # float32 gradients: float32 forces
    got32 = contract_forces(blocks, x.detach().to(torch.float32))
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32, -(dense.T @ x.detach()).view(-1, 3).to(torch.float32))
    with pytest.raises(ValueError, match="gradients has"):
        contract_forces(blocks, torch.ones(dense.shape[0] + 1))
    with pytest.raises(ValueError, match="fprime_j has an atom index outside"):
        DerivativeBlocks(blocks.fprime_ptr, blocks.fprime_j + blocks.n_atoms, blocks.fprimes, blocks.factor)
    with pytest.raises(ValueError, match="fprimes has shape"):
        DerivativeBlocks(blocks.fprime_ptr, blocks.fprime_j, blocks.fprimes[:, :2], blocks.factor)
    with pytest.raises(ValueError, match="fprime_ptr must rise"):
        DerivativeBlocks(blocks.fprime_ptr[:-1], blocks.fprime_j, blocks.fprimes, blocks.factor)
    with pytest.raises(ValueError, match=r"contract on cpu in float64 or float32, got gradients torch.float64 on meta"):
        contract_forces(blocks, torch.ones(dense.shape[0], device="meta"))
    with pytest.raises(ValueError, match=r"the blocks \(on cpu\) and factor \(on meta\) must lie on one device"):
        DerivativeBlocks(blocks.fprime_ptr, blocks.fprime_j, blocks.fprimes, blocks.factor.to("meta"))


def test_force_contraction_paths_and_dtypes(monkeypatch):
    from fastfp.amptorch import forces

    fprimes = random_fprimes(3)
    gradients = torch.randn(1, fprimes.shape[0], requires_grad=True)
    dense = fprimes.to_dense()
    expect = -(dense.T @ gradients.detach().reshape(-1)).view(-1, 3)
    # float32 (compiled loop in float32)
    got32 = contract_forces(fprimes.to(torch.float32), gradients.detach().to(torch.float32))
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32, expect.to(torch.float32))
    # gradients to the derivative values as well (plain autograd)
    leaf = fprimes._values().clone().requires_grad_()
    with_values = torch.sparse_coo_tensor(fprimes._indices(), leaf, fprimes.shape)
    out = contract_forces(with_values, gradients)
    torch.testing.assert_close(out, expect, rtol=1e-13, atol=1e-13)
    out.sum().backward()
    rows, cols = fprimes._indices()
    torch.testing.assert_close(leaf.grad, -gradients.detach().reshape(-1)[rows], rtol=1e-13, atol=1e-13)
    # the torch path (GPU tensors, other dtypes) gives the same, to second order
    monkeypatch.setattr(forces, "_NUMPY", {})
    torch.testing.assert_close(contract_forces(fprimes, gradients), expect, rtol=1e-13, atol=1e-13)
    weights = torch.randn(fprimes.shape[0], requires_grad=True)

    def forces_of(w):
        return contract_forces(fprimes, torch.tanh(w) ** 2)

    assert torch.autograd.gradcheck(forces_of, (weights,))
    assert torch.autograd.gradgradcheck(forces_of, (weights,))


def test_force_contraction_checks_shapes_and_indices():
    fprimes = random_fprimes(4)
    with pytest.raises(ValueError, match="gradients has"):
        contract_forces(fprimes, torch.ones(fprimes.shape[0] + 1))
    rows, cols = fprimes._indices()
    bad = torch.sparse_coo_tensor(torch.stack([rows, cols + 3]), fprimes._values(), fprimes.shape,
                                  check_invariants=False)
    with pytest.raises(IndexError, match="outside its shape"):
        contract_forces(bad, torch.ones(fprimes.shape[0]))


def test_block_diagonal_collation():
    matrices = [random_fprimes(s, n_atoms=n) for s, n in enumerate((3, 5, 2))]
    # a frame whose derivative entries were all thresholded away
    empty = torch.sparse_coo_tensor(torch.empty(2, 0, dtype=torch.long), torch.empty(0), (4 * 5, 3 * 4))
    matrices.insert(1, empty)
    expect = torch.block_diag(*[m.to_dense() for m in matrices])
    torch.testing.assert_close(sparse_block_diag(matrices).to_dense(), expect)


class _Network(torch.nn.Module):
    """SingleNN's shape (``model``, ``get_forces``), with batch normalisation if asked."""

    def __init__(self, n_features, batchnorm=False):
        super().__init__()
        torch.manual_seed(0)
        layers = [torch.nn.Linear(n_features, 6)] + ([torch.nn.BatchNorm1d(6)] if batchnorm else [])
        self.model = torch.nn.Sequential(*layers, torch.nn.Tanh(), torch.nn.Linear(6, 6), torch.nn.Tanh(),
                                         torch.nn.Linear(6, 1))
        self.get_forces = True

    atomic_energies = singlenn_atomic_energies
    forward = energy_and_forces


@pytest.mark.parametrize("batchnorm", [False, True])
def test_network_in_pieces_trains_as_whole(monkeypatch, batchnorm):
    """A batch of more than PIECE_ATOMS atoms goes through the network in pieces, each
    piece's graph recomputed in the backward pass: the same energies, forces and weight
    gradients of an energy and force loss as in one piece (batch normalisation mixes a
    batch's atoms: such a network is never cut)."""
    from types import SimpleNamespace

    n_frames, n_atoms = 7, 61
    fprimes = DerivativeMatrix(random_fprimes(1, n_atoms=n_atoms))
    n_features = fprimes.shape[0] // n_atoms
    counts = torch.tensor([9, 8, 10, 7, 9, 8, 10])
    features = torch.randn(n_atoms, n_features, generator=torch.Generator().manual_seed(2))
    targets = torch.randn(n_atoms, 3, generator=torch.Generator().manual_seed(3))

    def train_step(piece_atoms):
        monkeypatch.setattr(model_module, "PIECE_ATOMS", piece_atoms)
        network = _Network(n_features, batchnorm)
        calls = []
        monkeypatch.setattr(model_module._InPieces, "apply", _counting(model_module._InPieces.apply, calls))
        batch = SimpleNamespace(fingerprint=features.clone(), atomic_numbers=torch.ones(n_atoms, dtype=torch.long),
                                batch=torch.repeat_interleave(torch.arange(n_frames), counts), num_graphs=n_frames,
                                fprimes=fprimes)
        energy, forces = network(batch)
        loss = (energy**2).sum() + 0.3 * ((forces - targets) ** 2).sum()
        loss.backward()
        return [energy, forces] + [p.grad for p in network.parameters()], calls

    whole, calls = train_step(10**9)
    assert not calls
    pieces, calls = train_step(16)
    assert len(calls) == (0 if batchnorm else 1)
    for ours, theirs in zip(pieces, whole):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    if not batchnorm:  # second derivatives are not recomputed: a clear error, not wrong numbers
        monkeypatch.setattr(model_module, "PIECE_ATOMS", 16)
        x = features.clone().requires_grad_()
        network = _Network(n_features)
        parameters = list(network.parameters())
        energies, gradients = model_module._InPieces.apply(
            network.atomic_energies, x,
            torch.ones(n_atoms, dtype=torch.long), *parameters)
        (first,) = torch.autograd.grad(gradients.sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
            torch.autograd.grad(first.sum(), x)


def _counting(function, calls):
    def counted(*args):
        calls.append(len(args))
        return function(*args)

    return counted
