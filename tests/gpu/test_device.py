"""``device="cuda"`` against the CPU path: neighbour lists, fingerprints and derivative
blocks to 1e-10 in float64, on a GPU or in numba's CUDA simulator (see gpu_cases.py)."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from conftest import load_reference, requires_shared, write_pseudodensities
from fastfp import neighbors
from fastfp.descriptors.gaussian import Gaussian
from fastfp.descriptors.gmp import GMP, GMPOrderNorm
from fastfp.frames import pack_frames
from fastfp.gpu import device
from fastfp.gpu import gaussian as gpu_gaussian
from fastfp.gpu import gmp as gpu_gmp
from fastfp.gpu import neighbors as gpu_neighbors
from fastfp.gpu.frames import to_device
from fastfp.kernels.blocks import BLOCKS, FINGERPRINTS
from fastfp.kernels.tables import GaussianTables, GMPTables
from gpu_cases import DESCRIPTORS, ELEMENTS, FLOAT32_RTOL, assert_agree, descriptor, frames, requires_device

pytestmark = requires_device

# the smallest frame of each AMPTorch reference file in ../shared/reference
REFERENCE_FRAMES = {
    "gmpordernorm_solid": 11,
    "gmpordernorm_mcsh": 11,
    "gmp_groups": 11,
    "gaussian_cosine": 3,
    "gaussian_polynomial_g5": 3,
    "dataset_scaled_gmpordernorm": 13,
}
SCHEMES = {"gmpordernorm": GMPOrderNorm, "gmp": GMP, "gaussian": Gaussian}


def _random_periodic(rng, n, cutoff):
    """``n`` atoms scattered over several triclinic cells, positions not wrapped."""
    cell = np.diag(rng.uniform(0.6, 1.2, 3) * cutoff) + np.triu(rng.uniform(-0.4, 0.4, (3, 3)) * cutoff, 1)
    return Atoms(numbers=rng.choice([1, 8, 29], n), cell=cell, pbc=rng.random(3) < 0.7,
                 positions=rng.uniform(-1.0, 2.0, (n, 3)) @ cell)


def _sorted_pairs(pairs):
    """``ptr`` and the pairs' j and vectors sorted by (centre, j, vector), on the host."""
    ptr, j, vectors = (_host(a) for a in (pairs.ptr, pairs.j, pairs.vectors))
    centre = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    order = np.lexsort((vectors[:, 2].round(6), vectors[:, 1].round(6), vectors[:, 0].round(6), j, centre))
    return ptr, j[order], vectors[order]


def _host(array):
    return array if isinstance(array, (np.ndarray, int, float)) else array.get()


@pytest.mark.parametrize("self_pairs", [False, True])
def test_neighbour_pairs_match_cpu(self_pairs):
    rng = np.random.default_rng(3)
    cutoff = 3.5
    batch = list(frames().values()) + [_random_periodic(rng, n, cutoff) for n in (2, 7, 12)]
    packed = pack_frames(batch, np.array([1, 6, 8, 29]))
    cpu = neighbors.neighbor_pairs(packed, cutoff, self_pairs=self_pairs)
    xp = device.array_module()
    gpu = gpu_neighbors.neighbor_pairs(xp, to_device(xp, packed), cutoff, self_pairs=self_pairs)
    ptr_c, j_c, v_c = _sorted_pairs(cpu)
    ptr_g, j_g, v_g = _sorted_pairs(gpu)
    np.testing.assert_array_equal(ptr_g, ptr_c)
    np.testing.assert_array_equal(j_g, j_c)
    np.testing.assert_allclose(v_g, v_c, rtol=0, atol=1e-12)
    # images of cells smaller than the cutoff: more pairs for a centre than atoms in any frame
    assert np.diff(ptr_c).max() > np.diff(packed.offsets).max()
    if self_pairs:  # the self pair comes first
        np.testing.assert_array_equal(_host(gpu.j)[_host(gpu.ptr)[:-1]], np.arange(packed.n_atoms))


@pytest.mark.parametrize("name", list(DESCRIPTORS))
def test_featurize_matches_cpu(tmp_path, name):
    desc = descriptor(name, tmp_path)
    batch = list(frames().values())
    assert_agree(desc.featurize(batch, device="cuda"), desc.featurize(batch), where=name)


@pytest.mark.parametrize("scheme", ["gmpordernorm", "gaussian"])
def test_blocks_spanning_chunks_and_chunks_narrower_than_a_warp(tmp_path, scheme):
    """A block's pairs over several chunks (hundreds of images of one atom in a cell much
    smaller than the cutoff), and a descriptor too wide for a 32-pair stage in shared
    memory (chunks of fewer pairs)."""
    tiny = Atoms("CuO", cell=[[1.9, 0.0, 0.0], [0.3, 2.0, 0.0], [0.2, 0.1, 2.1]], pbc=True,
                 scaled_positions=[[0.0, 0.0, 0.0], [0.45, 0.5, 0.55]])
    batch = [tiny, molecule("CH3OH")]
    gaussians = write_pseudodensities(tmp_path, {el: [(1.5 + k, 0.8 + 0.3 * k)] for k, el in enumerate(ELEMENTS)})
    if scheme == "gmpordernorm":
        narrow = GMPOrderNorm({"MCSHs": {"orders": [0, 1, 2, 3], "sigmas": list(np.linspace(0.3, 2.0, 20))},
                               "cutoff": 5.0, "atom_gaussians": gaussians}, ELEMENTS)
        wide = GMPOrderNorm({"MCSHs": {"orders": [0, 1, 2], "sigmas": [0.5, 1.0]}, "cutoff": 5.0,
                             "atom_gaussians": gaussians}, ELEMENTS)
        sizes = [gpu_gmp.Sizes.of(d.tables, np.float64) for d in (narrow, wide)]
    else:
        g2 = {"etas": list(np.linspace(0.05, 4.0, 12)), "rs_s": [0.0, 1.0]}
        narrow = Gaussian({"default": {"G2": g2, "G4": {"etas": [0.3, 0.9], "zetas": [1.0, 4.0], "gammas": [1.0, -1.0]},
                                       "cutoff": 4.5}}, ELEMENTS)
        wide = Gaussian({"default": {"G2": {"etas": [0.5], "rs_s": [0.0]}, "G4": {"etas": [0.3], "zetas": [2.0],
                                                                               "gammas": [1.0]}, "cutoff": 4.5}},
                        ELEMENTS)
        sizes = [gpu_gaussian.Sizes.of(d.tables, d.n_features, np.float64) for d in (narrow, wide)]
    assert sizes[0].chunk < 32 and sizes[1].chunk == 32
    n_pairs = np.diff(neighbors.neighbor_pairs(pack_frames([tiny], wide.numbers), wide.cutoff).ptr)
    assert n_pairs.min() > 2 * 32  # three chunks or more, the images of the other atom over two
    for desc in (narrow, wide):
        assert_agree(desc.featurize(batch, device="cuda"), desc.featurize(batch), where=scheme)


@requires_shared
@pytest.mark.parametrize("name", list(REFERENCE_FRAMES))
def test_reference_frame_matches_cpu(name):
    config, reference_frames, _ = load_reference(name)
    cls = SCHEMES[config["fp_scheme"]]
    extra = (config["cutoff_params"],) if cls is Gaussian else ()
    desc = cls(config["fp_params"], config["elements"], *extra)
    one = [reference_frames[REFERENCE_FRAMES[name]]]
    assert_agree(desc.featurize(one, device="cuda"), desc.featurize(one), where=name)


def test_without_derivatives(tmp_path):
    batch = list(frames().values())
    for name in ("GMPOrderNorm", "Gaussian cosine G2 G4"):
        desc = descriptor(name, tmp_path)
        plain = desc.featurize(batch, derivatives=False, device="cuda")
        assert not plain.has_derivatives
        assert_agree(plain, desc.featurize(batch, derivatives=False), where=name)


@pytest.mark.parametrize("name", list(DESCRIPTORS))
def test_float32_computes_in_float32(tmp_path, name):
    desc = descriptor(name, tmp_path)
    batch = list(frames().values())
    double = desc.featurize(batch, device="cuda").to_numpy()
    single = desc.featurize(batch, device="cuda", result_dtype="float32")
    assert single.fingerprints.dtype == np.float32 and single.fprimes.dtype == np.float32
    assert single.fprime_j.dtype == np.int64
    assert_agree(single, desc.featurize(batch), rtol=FLOAT32_RTOL, where=f"{name} float32")
    # computed in float32, not float64 rounded
    single = single.to_numpy()
    assert not np.array_equal(single.fprimes, double.fprimes.astype(np.float32))


def test_coo_of_device_results_is_the_cpu_coo(tmp_path):
    desc = descriptor("GMP linear and sqrt", tmp_path)
    batch = list(frames().values())
    gpu, cpu = desc.featurize(batch, device="cuda").to_numpy(), desc.featurize(batch)
    for k in range(len(batch)):
        (gi, gv, gs), = gpu.frame(k).coo_frames()
        (ci, cv, cs), = cpu.frame(k).coo_frames()
        assert gs == cs
        np.testing.assert_array_equal(gi, ci)
        np.testing.assert_allclose(gv, cv, rtol=1e-10, atol=1e-10 * np.abs(cv).max(initial=0.0))


def test_results_reach_torch_without_a_copy(tmp_path):
    torch = pytest.importorskip("torch")
    fps = descriptor("GMPOrderNorm", tmp_path).featurize(list(frames().values()), device="cuda")
    for array in (fps.fingerprints, fps.fprimes, fps.fprime_j, fps.fprime_ptr):
        tensor = torch.from_dlpack(array)
        address = array.ctypes.data if isinstance(array, np.ndarray) else array.data.ptr
        assert tensor.data_ptr() == address
        assert tuple(tensor.shape) == array.shape
        assert tensor.is_cuda == (not device.simulated())


def test_a_batch_too_large_for_the_gpu_names_the_size(tmp_path, monkeypatch):
    desc = descriptor("GMPOrderNorm", tmp_path)
    batch = list(frames().values())
    monkeypatch.setattr(device, "free_bytes", lambda xp: 1000)
    with pytest.raises(device.DeviceMemoryError, match=r"the neighbour list \([\d,]+ pairs\) need [\d.]+ GiB, only"):
        desc.featurize(batch, device="cuda")
    # room for the pairs but not for the derivative blocks
    n_pairs = len(neighbors.neighbor_pairs(pack_frames(batch, desc.numbers), desc.cutoff, self_pairs=True).j)
    monkeypatch.setattr(device, "free_bytes", lambda xp: n_pairs * gpu_neighbors.pair_bytes(np.float64))
    with pytest.raises(device.DeviceMemoryError, match=r"the derivatives \([\d,]+ blocks of 192 bytes\)"):
        desc.featurize(batch, device="cuda")


@pytest.mark.parametrize("derivatives", [True, False])
def test_kernels_take_the_descriptor_tables(tmp_path, monkeypatch, derivatives):
    """The GPU kernels get the descriptor's tables (the CPU kernels' object, on the device)
    and what to compute as a mode of fastfp.kernels.blocks, as the CPU kernels do
    (tests/test_tables.py)."""
    seen = []
    for module in (gpu_gmp, gpu_gaussian):
        def recording(kernel, n, *args, launch=module.launch, **options):
            seen.append([a for a in args if isinstance(a, (GMPTables, GaussianTables, int))])
            launch(kernel, n, *args, **options)

        monkeypatch.setattr(module, "launch", recording)
    for name in ("GMP square", "Gaussian polynomial G5"):
        desc = descriptor(name, tmp_path)
        seen.clear()
        desc.featurize(list(frames().values()), derivatives=derivatives, device="cuda")
        (tables, mode), = seen
        assert type(tables) is type(desc.tables) and mode == (BLOCKS if derivatives else FINGERPRINTS)
        assert type(mode) is int
        for field, mine in zip(desc.tables._fields, desc.tables):
            np.testing.assert_array_equal(_host(getattr(tables, field)), mine, err_msg=field)


def test_amptorch_neighbour_emulation_is_cpu_only(tmp_path):
    desc = descriptor("GMPOrderNorm", tmp_path)
    with pytest.raises(ValueError, match="amptorch_binning .* CPU only; use device='cpu'"):
        desc.featurize(list(frames().values()), device="cuda", amptorch_binning=True)


def test_elements_cover_the_frames():
    """The frames use only the descriptors' elements (a guard for the cases above)."""
    assert {s for a in frames().values() for s in a.get_chemical_symbols()} <= set(ELEMENTS)


def test_harness_featurize_stage_on_the_device():
    """The "cupy" column of the benchmarks: the featurize stage's GPU builder gives the
    CPU results (called directly: the harness itself refuses the simulator's times)."""
    from fastfp.config import build_descriptor
    from fastfp.harness import stages

    water = list(frames().values())[:2] + [molecule("H2O")]
    request = stages.Request("featurize", "cupy", water, "gaussian", ["H", "O", "Cu"], collect=True)
    (fps,) = stages._featurize_gpu(request)()
    cpu = build_descriptor(request.config).featurize(water)
    assert_agree(fps, cpu, where="harness featurize stage")
