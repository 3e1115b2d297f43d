"""On-the-fly training's parts without AMPTorch: streamed scaler statistics, batches
against the stored path (Data list, scalers, COO collation), bad frames, the background
loader. The block force contraction: tests/test_amptorch_torch.py; AtomsTrainer itself:
tests/test_onthefly_amptorch.py."""

import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the 'torch' extra (pip install -e '.[torch]')")
pytest.importorskip("torch_geometric", reason="needs the 'torch' extra (pip install -e '.[torch]')")

import ase.io  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from conftest import SHARED, requires_shared  # noqa: E402
from fastfp.amptorch import Gaussian, GMPOrderNorm  # noqa: E402
from fastfp.amptorch.collate import sparse_block_diag  # noqa: E402
from fastfp.amptorch.data import images_to_data  # noqa: E402
from fastfp.amptorch import onthefly  # noqa: E402
from fastfp.amptorch.forces import DerivativeBlocks, RecomputedDerivatives, contract_forces  # noqa: E402
from fastfp.amptorch.onthefly import AheadLoader, OnTheFlyDataset, training_device  # noqa: E402
from fastfp.amptorch.scaling import FeatureScaler, FitStatistics, TargetScaler, feature_scaler  # noqa: E402
from fastfp.frames import FrameError  # noqa: E402
from fastfp.gpu import device  # noqa: E402

pytestmark = pytest.mark.usefixtures("float64")


@pytest.mark.parametrize("transform", ["normalize", "standardize"])
@pytest.mark.parametrize("elementwise", [True, False])
def test_streamed_statistics_fit_as_all_rows_at_once(transform, elementwise):
    rng = np.random.default_rng(4)
    fingerprints = torch.as_tensor(rng.normal(3.0, 2.0, size=(500, 6)))
    fingerprints[:, 5] = 1.0  # a constant feature: range and deviation below the threshold
    numbers = torch.as_tensor(rng.choice([1, 8, 29], size=500))
    scaling = {"type": transform, "range": (-1, 1), "elementwise": elementwise}
    whole = FeatureScaler([type("D", (), {"fingerprint": fingerprints, "atomic_numbers": numbers})], True, scaling)
    statistics = FitStatistics()
    for start in range(0, 500, 37):
        statistics.add(fingerprints[start : start + 37].numpy(), numbers[start : start + 37].numpy())
    streamed = feature_scaler(FeatureScaler, statistics, True, scaling)
    groups = {z: whole.scales[z] for z in whole.unique} if elementwise else {None: whole.scale}
    for z, expect in groups.items():
        got = streamed.scales[z] if elementwise else streamed.scale
        for key in ("offset", "scale"):
            if transform == "normalize":  # min and max: exact
                assert torch.equal(got[key], expect[key]), (z, key)
            else:
                torch.testing.assert_close(got[key], expect[key], rtol=1e-13, atol=1e-15)
        assert got["scale"][5] == (1.0 if transform == "standardize" else 2.0)
    assert (streamed.unique == whole.unique) if elementwise else not hasattr(streamed, "unique")
    with pytest.raises(ValueError, match="no atoms"):
        feature_scaler(FeatureScaler, FitStatistics(), True, scaling)


@pytest.fixture(scope="module")
def frames():
    return ase.io.read(SHARED / "data" / "oc20_300_test.traj", ":10")


def descriptor(frames, scheme="gmpordernorm"):
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    if scheme == "gaussian":
        return Gaussian({"default": {"G2": {"etas": [0.05, 1.0], "rs_s": [0]},
                                     "G4": {"etas": [0.005], "zetas": [1.0, 4.0], "gammas": [1.0, -1.0]},
                                     "cutoff": 5.0}}, elements)
    params = {"MCSHs": {"orders": [0, 1, 2], "sigmas": [0.4, 1.0, 2.0]}, "cutoff": 6.0, "prime_threshold": 0,
              "atom_gaussians": {el: str(SHARED / "gmp" / "psp_v3" / f"{el}_pseudodensity.g") for el in elements}}
    return GMPOrderNorm(params, elements)


@requires_shared
@pytest.mark.parametrize("fprimes", ["recomputed", "blocks"])
@pytest.mark.parametrize("scheme, transform", [("gmpordernorm", "normalize"), ("gmpordernorm", "standardize"),
                                               ("gaussian", "normalize")])
def test_batches_equal_the_stored_path(frames, scheme, transform, fprimes):
    """What AtomsDataset + DataCollater give (fastfp's Data, scalers and collation, as
    installed in AMPTorch): same scalers, fingerprints, targets, and forces from the
    same gradients, whether the batch's derivatives are recomputed or stored."""
    desc = descriptor(frames, scheme)
    scaling = {"type": transform, "range": (0, 1), "elementwise": True}
    data = images_to_data(desc, frames, disable_tqdm=True)
    features, targets = FeatureScaler(data, True, scaling), TargetScaler(data, True)
    features.norm(data)
    targets.norm(data)
    dataset = OnTheFlyDataset(frames, desc, forcetraining=True, scaling=scaling, progress=False, fprimes=fprimes)
    assert dataset.input_dim == data[0].fingerprint.shape[1] and len(dataset) == len(frames)
    assert float(dataset.target_scaler.target_mean) == float(targets.target_mean)
    assert float(dataset.target_scaler.target_std) == float(targets.target_std)
    for z in features.unique:
        for key in ("offset", "scale"):
            if transform == "normalize":
                assert torch.equal(dataset.feature_scaler.scales[z][key], features.scales[z][key])
            else:
                torch.testing.assert_close(dataset.feature_scaler.scales[z][key], features.scales[z][key],
                                           rtol=1e-12, atol=1e-15)
    indices = [7, 2, 9, 0]
    batch = dataset.batch(indices)
    chosen = [data[k] for k in indices]
    tol = {"rtol": 0, "atol": 0} if transform == "normalize" else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(batch.fingerprint, torch.cat([d.fingerprint for d in chosen]), **tol)
    assert torch.equal(batch.atomic_numbers, torch.cat([d.atomic_numbers for d in chosen]))
    assert torch.equal(batch.energy, torch.stack([torch.as_tensor(d.energy) for d in chosen]))
    assert torch.equal(batch.forces, torch.cat([d.forces for d in chosen]))
    assert batch.num_graphs == 4 and torch.equal(torch.bincount(batch.batch), torch.tensor([len(d.atomic_numbers)
                                                                                          for d in chosen]))
    gradients = torch.randn(batch.fingerprint.shape)
    coo = sparse_block_diag([d.fprimes for d in chosen])
    torch.testing.assert_close(contract_forces(batch.fprimes, gradients), contract_forces(coo, gradients),
                               rtol=1e-10, atol=1e-10)


@requires_shared
@pytest.mark.parametrize("scheme", ["gmpordernorm", "gaussian"])
def test_three_epochs_lose_the_same_with_recomputed_and_stored_derivatives(frames, scheme):
    """A small network trained on energies and forces for 3 epochs (Adam; batches as a
    trainer draws them): the same losses, to 1e-8 relative, from either way of handing
    over the derivatives."""
    desc = descriptor(frames, scheme)
    losses = {}
    for fprimes in ("blocks", "recomputed"):
        dataset = OnTheFlyDataset(frames, desc, progress=False, fprimes=fprimes)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(dataset.input_dim, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses[fprimes] = []
        for _ in range(3):
            total = 0.0
            for indices in ([7, 2, 9, 0, 4], [1, 3, 5, 6, 8]):
                batch = dataset.batch(indices)
                x = batch.fingerprint.requires_grad_()
                atomic = model(x).squeeze(1)
                energy = torch.zeros(batch.num_graphs).index_add(0, batch.batch, atomic)
                dE_dG, = torch.autograd.grad(atomic.sum(), x, create_graph=True)
                forces = contract_forces(batch.fprimes, dE_dG)
                loss = ((energy - batch.energy) ** 2).mean() + 0.05 * ((forces - batch.forces) ** 2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
            losses[fprimes].append(total)
    np.testing.assert_allclose(losses["recomputed"], losses["blocks"], rtol=1e-8)
    assert losses["blocks"][2] < losses["blocks"][0]


@requires_shared
def test_auto_stores_blocks_that_fit_and_recomputes_beyond(frames, monkeypatch):
    """The default "auto": a batch whose blocks fit BLOCKS_BYTES comes with its blocks,
    a larger one with its derivatives recomputed, and both contract to the same forces."""
    desc = descriptor(frames)
    dataset = OnTheFlyDataset(frames, desc, progress=False)
    assert dataset.fprimes == "auto"
    indices = [7, 2, 9, 0]
    small = dataset.batch(indices)
    monkeypatch.setattr(onthefly, "BLOCKS_BYTES", 1)
    large = dataset.batch(indices)
    assert isinstance(small.fprimes, DerivativeBlocks) and isinstance(large.fprimes, RecomputedDerivatives)
    gradients = torch.randn(small.fingerprint.shape, dtype=torch.float64)
    torch.testing.assert_close(contract_forces(small.fprimes, gradients), contract_forces(large.fprimes, gradients),
                               rtol=1e-10, atol=1e-10)


@requires_shared
def test_auto_searches_pairs_once(frames, monkeypatch):
    """"auto" hands the pairs it found to the Jacobian when the blocks do not fit, and a
    batch of more than a Jacobian part's atoms goes to the Jacobian unsearched (its pairs
    alone could take gigabytes): one neighbour search per batch either way, the same
    forces."""
    desc = descriptor(frames)
    dataset = OnTheFlyDataset(frames, desc, progress=False)
    searches = []
    search = dataset.descriptor.neighbor_pairs
    monkeypatch.setattr(dataset.descriptor, "neighbor_pairs", lambda *a, **k: searches.append(1) or search(*a, **k))
    indices = [7, 2, 9, 0]
    gradients = None
    forces = []
    for blocks_bytes, part_atoms in ((1, onthefly.PART_ATOMS), (onthefly.BLOCKS_BYTES, 1)):
        monkeypatch.setattr(onthefly, "BLOCKS_BYTES", blocks_bytes)
        monkeypatch.setattr(onthefly, "PART_ATOMS", part_atoms)
        searches.clear()
        batch = dataset.batch(indices)
        assert isinstance(batch.fprimes, RecomputedDerivatives)
        if gradients is None:
            gradients = torch.randn(batch.fingerprint.shape, dtype=torch.float64)
        forces.append(contract_forces(batch.fprimes, gradients))
        assert len(searches) == 1
    torch.testing.assert_close(forces[0], forces[1], rtol=1e-12, atol=1e-12)


@requires_shared
def test_bad_frames_are_named(frames):
    desc = descriptor(frames)
    foreign = frames[3].copy()
    foreign.numbers[0] = 79  # Au, not among the elements
    foreign.calc = frames[3].calc
    with pytest.raises(FrameError, match=r"frame 3: element\(s\) \['Au'\] not in"):
        OnTheFlyDataset(frames[:3] + [foreign], desc, progress=False)
    unlabelled = frames[1].copy()
    with pytest.raises(ValueError, match="frame 1: no energy"):
        OnTheFlyDataset([frames[0], unlabelled], desc, progress=False)
    # a frame that goes bad after the scalers were fitted: its index, mid-epoch
    dataset = OnTheFlyDataset(frames, desc, progress=False)
    start = dataset.frames.frames.offsets[6]
    dataset.frames.frames.positions[start + 1] = np.nan
    loader = AheadLoader(dataset, batch_size=3, shuffle=True, collate_fn=dataset.batch)
    seen = 0
    with pytest.raises(FrameError, match=r"frame 6: non-finite \(NaN or infinite\) position for atom\(s\) \[1\]"):
        for _ in loader:
            seen += 1
    assert seen < 4
    assert not [t for t in threading.enumerate() if t.name.startswith("fastfp-ahead")]


@requires_shared
def test_ahead_loader_gives_the_batches_of_a_dataloader(frames):
    dataset = OnTheFlyDataset(frames, descriptor(frames), progress=False)

    def batches(loader_class, seed):
        torch.manual_seed(seed)
        loader = loader_class(dataset, batch_size=3, shuffle=True, collate_fn=dataset.batch)
        return [(b.fingerprint, b.forces, torch.random.get_rng_state()) for b in loader]

    ahead, plain = batches(AheadLoader, 5), batches(DataLoader, 5)
    assert len(ahead) == len(plain) == 4
    for a, p in zip(ahead, plain):
        for x, y in zip(a, p):
            assert torch.equal(x, y)
    # leaving early stops the thread
    for _ in AheadLoader(dataset, batch_size=2, collate_fn=dataset.batch):
        break
    assert not [t for t in threading.enumerate() if t.name.startswith("fastfp-ahead")]


def test_ahead_loader_threads(monkeypatch):
    """Batches collated on the background thread; with FASTFP_NUM_THREADS=1 in the calling one."""
    def collated_on(items):
        return threading.current_thread().name

    for threads, expected in (("2", "fastfp-ahead"), ("1", threading.current_thread().name)):
        monkeypatch.setenv("FASTFP_NUM_THREADS", threads)
        names = list(AheadLoader(list(range(5)), batch_size=2, collate_fn=collated_on))
        assert len(names) == 3 and all(name.startswith(expected) for name in names)


def _binning_free(frames, cutoff):
    """The frames in which AMPTorch's neighbour search misses no pair: there the drop-in's
    descriptors (which reproduce AMPTorch's misses) and the store's (exact) agree."""
    from fastfp.frames import pack_frames
    from fastfp.neighbors import neighbor_pairs

    def pairs(atoms, binning):
        packed = pack_frames([atoms], np.unique(atoms.numbers))
        return len(neighbor_pairs(packed, cutoff, amptorch_binning=binning).j)

    return [a for a in frames if pairs(a, True) == pairs(a, False)]


def _store(tmp_path, frames, desc, name="train.store", derivatives=True):
    """``frames`` featurized by ``desc``'s settings into a store (labels included)."""
    from fastfp.config import resolve_config
    from fastfp.store import featurize_to_store, open_store

    config = resolve_config({"fp_scheme": desc.descriptor_type.lower(), "fp_params": desc.params,
                             "elements": desc.elements})
    featurize_to_store(frames, config, tmp_path / name, derivatives=derivatives, shard_frames=4)
    return open_store(tmp_path / name)


@requires_shared
@pytest.mark.parametrize("transform", ["normalize", "standardize"])
def test_store_batches_equal_the_on_the_fly_ones(frames, tmp_path, transform):
    """Training from a store: the same scalers and batches as featurizing the frames."""
    from fastfp.amptorch.onthefly import StoreDataset

    desc = descriptor(frames)
    frames = _binning_free(frames, desc.cutoff)
    scaling = {"type": transform, "range": (0, 1), "elementwise": True}
    store = _store(tmp_path, frames, desc)
    assert store.has_labels and len(store.shard_bounds) == 3 and len(frames) >= 9
    fly = OnTheFlyDataset(frames, desc, forcetraining=True, scaling=scaling, progress=False, fprimes="blocks")
    stored = StoreDataset(store, desc, forcetraining=True, scaling=scaling, progress=False)
    assert len(stored) == len(fly) and stored.input_dim == fly.input_dim
    assert stored.target_scaler == fly.target_scaler
    # the same statistics, merged from other parts: exact for min and max, to rounding for the deviation
    tol = {"rtol": 0, "atol": 0} if transform == "normalize" else {"rtol": 1e-12, "atol": 1e-15}
    for z in fly.feature_scaler.unique:
        for key in ("offset", "scale"):
            torch.testing.assert_close(stored.feature_scaler.scales[z][key], fly.feature_scaler.scales[z][key], **tol)
    indices = [7, 2, 8, 0, 5]  # across the shards
    a, b = stored.batch(indices), fly.batch(indices)
    for key in ("atomic_numbers", "energy", "forces", "batch", "ptr"):
        torch.testing.assert_close(getattr(a, key), getattr(b, key), rtol=0, atol=0, msg=key)
    torch.testing.assert_close(a.fingerprint, b.fingerprint, **tol)
    gradients = torch.randn_like(b.fingerprint, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(contract_forces(a.fprimes, gradients), contract_forces(b.fprimes, gradients), **tol)


@requires_shared
def test_a_store_without_what_training_needs_is_refused(frames, tmp_path):
    from ase import Atoms

    from fastfp.amptorch.onthefly import StoreDataset
    from fastfp.store import StoreError

    desc = descriptor(frames)
    with pytest.raises(StoreError, match="no derivatives in the store"):
        StoreDataset(_store(tmp_path, frames, desc, derivatives=False), desc, forcetraining=True, progress=False)
    bare = [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in frames]
    store = _store(tmp_path, bare, desc, "bare.store")
    assert not store.has_labels
    with pytest.raises(StoreError, match="no energies and forces in the store"):
        StoreDataset(store, desc, forcetraining=True, progress=False)


def test_training_device_follows_amptorch_gpus():
    assert training_device({}) == training_device({"optim": {"gpus": 0}}) == "cpu"
    for gpus in (2, -1, True, "1"):
        with pytest.raises(ValueError, match=r"config\['optim'\]\['gpus'\] = .* set 'gpus' to 1 \(the GPU\) or 0"):
            training_device({"optim": {"gpus": gpus}})


@requires_shared
@pytest.mark.skipif(device.simulated(), reason="NUMBA_ENABLE_CUDASIM is set in this process")
def test_the_device_without_cupy_or_cuda_torch_is_a_clear_error_not_a_cpu_fallback(frames, monkeypatch):
    desc = descriptor(frames[:2])
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'gpu'"):
        OnTheFlyDataset(frames[:2], desc, progress=False, device="gpu")
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    with pytest.raises(device.DeviceError, match=r"'gpus'\] = 1 with 'on_the_fly' featurizes on the GPU: "
                                                 r"device='cuda' needs CuPy, which is not installed"):
        training_device({"optim": {"gpus": 1}})
    with pytest.raises(device.DeviceError, match="needs CuPy, which is not installed"):
        OnTheFlyDataset(frames[:2], desc, progress=False, device="cuda")
    # CuPy and a GPU, but a torch without CUDA
    monkeypatch.setattr(device, "array_module", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(device.DeviceError, match=r"this torch has no CUDA \(torch.cuda.is_available\(\) is False\)"):
        training_device({"optim": {"gpus": 1}})
