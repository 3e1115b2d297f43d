"""AMPTorch-format LMDB writer (fastfp.amptorch.lmdb) and ``fastfp lmdb``.

Without AMPTorch: round trip against ``images_to_data`` + scaling in memory, bounded
memory, atomic (interrupted) writes, setup checks, error handling. With AMPTorch
installed: AMPTorch's own ``AtomsLMDBDataset`` reads the file, its ``AtomsTrainer``
trains from it, and the stored data equal AMPTorch's ``AtomsToData`` + scalers.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="fastfp.amptorch.lmdb needs the 'torch' extra")
pytest.importorskip("torch_geometric", reason="fastfp.amptorch.lmdb needs the 'torch' extra (torch_geometric)")
lmdb = pytest.importorskip("lmdb", reason="fastfp.amptorch.lmdb needs the 'torch' extra (lmdb)")

import ase.io  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

from conftest import SHARED, requires_shared  # noqa: E402
from fastfp.amptorch.data import images_to_data  # noqa: E402
from fastfp.amptorch.descriptors import Gaussian, GMPOrderNorm  # noqa: E402
from fastfp.amptorch.lmdb import (  # noqa: E402
    META_KEYS,
    lmdb_paths,
    read_lmdb_setup,
    require_same_setup,
    write_lmdb,
    write_lmdb_shards,
)
from fastfp.amptorch.scaling import FeatureScaler, TargetScaler  # noqa: E402
from fastfp.cli import main  # noqa: E402
from fastfp.config import resolve_config  # noqa: E402

HAS_AMPTORCH = importlib.util.find_spec("amptorch") is not None
OC20 = SHARED / "data" / "oc20_300_test.traj"
GMP_PARAMS = {"MCSHs": {"orders": [0, 1, 2, 3], "sigmas": [0.4, 0.8, 1.2, 1.6, 2.0]}, "cutoff": 8.0,
              "atom_gaussians": {"<El>": str(SHARED / "gmp" / "psp_v3" / "<El>_pseudodensity.g")}}
GAUSS_PARAMS = {"default": {"G2": {"etas": [0.05, 0.23, 1.08, 5.0], "rs_s": [0]},
                            "G4": {"etas": [0.005], "zetas": [1.0, 4.0], "gammas": [1.0, -1.0]},
                            "cutoff": 5.0}}


def gauss_config(elements=("Cu", "O")):
    return {"fp_scheme": "gaussian", "fp_params": copy.deepcopy(GAUSS_PARAMS), "elements": list(elements),
            "cutoff_params": {"cutoff_func": "Cosine"}}


def synthetic_frames(n, repeat=(2, 2, 2), oxygen=True, seed=0):
    """Rattled fcc Cu (some atoms O) with made-up energies and forces (no physics
    needed: the writer only stores them)."""
    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
    frames = []
    for k in range(n):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        if oxygen and k % 2:
            atoms.numbers[rng.integers(len(atoms))] = 8
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal(-100, 3)),
                                           forces=rng.normal(size=(len(atoms), 3)))
        frames.append(atoms)
    return frames


def read_all(path) -> dict:
    """Every key of the LMDB at ``path``, unpickled."""
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return {key.decode(): pickle.loads(value) for key, value in txn.cursor()}
    finally:
        env.close()


def in_memory(descriptor, frames, scaling):
    """What the LMDB should hold: images_to_data + AMPTorch-semantics scaling, all in memory."""
    data = images_to_data(descriptor, frames, disable_tqdm=True)
    fs = FeatureScaler(data, True, scaling)
    ts = TargetScaler(data, True)
    fs.norm(data)
    ts.norm(data)
    return data, fs, ts


def assert_same_data(got, expected, fp_tol=0.0, fprime_tol=0.0):
    assert set(got.keys()) == set(expected.keys())
    torch.testing.assert_close(got.fingerprint, expected.fingerprint, rtol=fp_tol, atol=fp_tol)
    assert torch.equal(got.atomic_numbers, expected.atomic_numbers)
    assert got.num_nodes == expected.num_nodes
    assert float(got.energy) == pytest.approx(float(expected.energy), rel=1e-12, abs=1e-12)
    torch.testing.assert_close(got.forces, expected.forces, rtol=1e-12, atol=1e-12)
    if fprime_tol == 0.0:
        assert torch.equal(got.fprimes._indices(), expected.fprimes._indices())
        assert torch.equal(got.fprimes._values(), expected.fprimes._values())
        assert got.fprimes.shape == expected.fprimes.shape
    else:
        torch.testing.assert_close(got.fprimes.to_dense(), expected.fprimes.to_dense(), rtol=0, atol=fprime_tol)


# -- round trip ------------------------------------------------------------------------

ROUND_TRIPS = [
    pytest.param("gaussian", {"type": "normalize", "range": (0, 1), "elementwise": True}, id="gaussian-normalize"),
    pytest.param("gaussian", {"type": "standardize", "elementwise": False}, id="gaussian-standardize-global"),
    pytest.param("gmpordernorm", {"type": "normalize", "range": (-1, 1)}, id="gmpordernorm-oc20",
                 marks=requires_shared),
]


@pytest.mark.parametrize("scheme, scaling", ROUND_TRIPS)
def test_round_trip_equals_in_memory(tmp_path, float64, scheme, scaling):
    if scheme == "gaussian":
        frames = synthetic_frames(7)
        config = gauss_config()
        descriptor = Gaussian(copy.deepcopy(GAUSS_PARAMS), ["Cu", "O"], cutoff_func="Cosine")
    else:
        frames = ase.io.read(OC20, ":5")
        config = {"fp_scheme": "GMPOrderNorm", "fp_params": copy.deepcopy(GMP_PARAMS)}  # elements from the frames
        elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
        params = copy.deepcopy(GMP_PARAMS)
        params["atom_gaussians"] = {el: GMP_PARAMS["atom_gaussians"]["<El>"].replace("<El>", el) for el in elements}
        descriptor = GMPOrderNorm(params, elements)
    path = tmp_path / "data.lmdb"
    threads = torch.get_num_threads()
    summary = write_lmdb(frames, config, path, scaling=scaling, progress=False, chunk_frames=3,
                         amptorch_scalers=False)
    assert torch.get_num_threads() == threads and torch.get_default_dtype() == torch.float64  # restored
    assert summary["n_frames"] == len(frames) and summary["scalers"] == "fastfp"
    assert summary["n_atoms"] == sum(len(a) for a in frames)
    assert sorted(os.listdir(tmp_path)) == ["data.lmdb"]  # no temporary or -lock file left

    stored = read_all(path)
    assert set(stored) == {str(k) for k in range(len(frames))} | set(META_KEYS)
    assert stored["length"] == len(frames)
    assert stored["elements"] == descriptor.elements
    scheme_name, fp_params, cutoff_params, setup_elements = stored["descriptor_setup"]
    assert scheme_name == scheme and setup_elements == descriptor.elements
    assert fp_params == resolve_config(config, elements=descriptor.elements)["fp_params"]  # absolute .g paths
    assert cutoff_params == config.get("cutoff_params", {})

    expected, fs, ts = in_memory(descriptor, frames, scaling)
    assert type(stored["feature_scaler"]) is FeatureScaler and type(stored["target_scaler"]) is TargetScaler
    assert float(stored["target_scaler"].target_mean) == pytest.approx(float(ts.target_mean), rel=1e-14)
    assert float(stored["target_scaler"].target_std) == pytest.approx(float(ts.target_std), rel=1e-14)
    # the scalers are fitted on the whole set (pass 1), so the data match: exactly for
    # "normalize" (minima and maxima), to rounding for "standardize" (means and deviations
    # merged chunk by chunk here, frame by frame in the reference)
    tol = 1e-12 if scaling["type"] == "standardize" else 0.0
    for k, data in enumerate(expected):
        assert_same_data(stored[str(k)], data, fp_tol=tol, fprime_tol=tol)


def test_read_setup_and_float32(tmp_path):
    frames = synthetic_frames(4)
    path = tmp_path / "f32.lmdb"
    write_lmdb(frames, gauss_config(), path, progress=False, tensor_dtype=torch.float32)
    setup = read_lmdb_setup(path)
    assert setup["length"] == 4 and setup["elements"] == ["Cu", "O"]
    assert setup["descriptor_setup"][0] == "gaussian"
    assert read_all(path)["0"].fingerprint.dtype == torch.float32


# -- bounded memory ----------------------------------------------------------------------

MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, sys.argv[3])
    from test_lmdb import gauss_config, synthetic_frames
    from fastfp.amptorch.lmdb import write_lmdb

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux

    frames = synthetic_frames(300, oxygen=False)
    config = gauss_config(["Cu"])
    write_lmdb(frames[:8], config, sys.argv[1] + ".warm", progress=False, chunk_frames=4)  # JIT, imports
    before = peak()
    summary = write_lmdb(frames, config, sys.argv[1], progress=False, chunk_frames=int(sys.argv[2]))
    print(json.dumps({"growth": peak() - before, "bytes": summary["bytes"]}))
""")


@pytest.mark.skipif(sys.platform != "linux", reason="peak RSS (ru_maxrss in kB) is read the Linux way")
def test_memory_bounded_by_chunk(tmp_path):
    """300 frames, 4 per chunk: the peak RSS grows by a small part of what holding every
    frame's derivatives (about the LMDB's size) would take."""
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "m.lmdb"), "4", str(Path(__file__).parent)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bytes"] > 100 * 2**20  # big enough for the bound to mean something
    assert result["growth"] < 0.3 * result["bytes"], result


# -- atomic writes -----------------------------------------------------------------------


class Failing:
    """A sequence of frames whose ``on_pass``-th read by position (pass 1 or 2) raises
    ``exc`` at frame ``at``, lazily (after the frames before it were used)."""

    def __init__(self, frames, at, exc, on_pass):
        self.frames, self.at, self.exc, self.on_pass, self.passes = frames, at, exc, on_pass, 0

    def __len__(self):
        return len(self.frames)

    def __iter__(self):  # the scan for elements
        return iter(self.frames)

    def __getitem__(self, index):
        self.passes += 1
        return self._failing(index) if self.passes == self.on_pass else self.frames[index]

    def _failing(self, index):
        for k, atoms in enumerate(self.frames[index]):
            if k == self.at:
                raise self.exc
            yield atoms


@pytest.mark.parametrize("exc, on_pass", [(KeyboardInterrupt(), 2), (RuntimeError("disk on fire"), 2),
                                          (RuntimeError("bad file"), 1)], ids=["interrupt", "error", "pass1"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "replace"])
def test_interrupted_write_leaves_nothing(tmp_path, exc, on_pass, existing):
    frames = synthetic_frames(10)
    path = tmp_path / "data.lmdb"
    if existing:
        write_lmdb(frames[:3], gauss_config(), path, progress=False)
        old = path.read_bytes()
    with pytest.raises(type(exc)):
        write_lmdb(Failing(frames, 7, exc, on_pass), gauss_config(), path, progress=False, chunk_frames=2)
    assert sorted(os.listdir(tmp_path)) == (["data.lmdb"] if existing else [])
    if existing:
        assert path.read_bytes() == old
        assert read_lmdb_setup(path)["length"] == 3


def test_one_shot_iterator_refused(tmp_path):
    with pytest.raises(TypeError, match="a sequence"):
        write_lmdb(iter(synthetic_frames(2)), gauss_config(), tmp_path / "x.lmdb", progress=False)


# -- checks ------------------------------------------------------------------------------


def test_config_mismatch_names_keys(tmp_path):
    path = tmp_path / "data.lmdb"
    config = gauss_config()
    write_lmdb(synthetic_frames(3), config, path, progress=False)
    require_same_setup(path, config)  # same settings: no error
    require_same_setup(path, {k: v for k, v in config.items() if k != "elements"})  # elements from the LMDB

    other = gauss_config()
    other["fp_params"]["default"]["cutoff"] = 6.0
    other["fp_params"]["default"]["G2"]["etas"] = [0.05, 0.23]
    with pytest.raises(ValueError, match=r"different descriptor settings.*fp_params\.default\.G2\.etas.*"
                                         r"fp_params\.default\.cutoff"):
        require_same_setup(path, other)
    with pytest.raises(ValueError, match=r"differing: elements"):
        require_same_setup(path, gauss_config(["Cu", "O", "H"]))
    with pytest.raises(ValueError, match="no such LMDB"):
        require_same_setup(tmp_path / "missing.lmdb", config)


@requires_shared
def test_config_mismatch_gmp(tmp_path):
    frames = ase.io.read(OC20, ":2")
    config = {"fp_scheme": "gmpordernorm", "fp_params": copy.deepcopy(GMP_PARAMS)}
    path = tmp_path / "gmp.lmdb"
    write_lmdb(frames, config, path, progress=False)
    require_same_setup(path, config)
    other = copy.deepcopy(config)
    other["fp_params"]["MCSHs"]["sigmas"] = [0.4, 0.8]
    with pytest.raises(ValueError, match=r"fp_params\.MCSHs\.sigmas"):
        require_same_setup(path, other)


def test_frames_without_energy_named(tmp_path):
    frames = synthetic_frames(6)
    frames[4].calc = None
    with pytest.raises(ValueError, match=r"frame 4: no energy"):
        write_lmdb(frames, gauss_config(), tmp_path / "x.lmdb", progress=False)
    frames[4].calc = SinglePointCalculator(frames[4], energy=1.0)  # energy, no forces
    with pytest.raises(ValueError, match=r"frame 4: no forces"):
        write_lmdb(frames, gauss_config(), tmp_path / "x.lmdb", progress=False)
    write_lmdb(frames, gauss_config(), tmp_path / "x.lmdb", progress=False, derivatives=False)
    data = read_all(tmp_path / "x.lmdb")["4"]
    assert not hasattr(data, "fprimes") and not hasattr(data, "forces")
    assert sorted(os.listdir(tmp_path)) == ["x.lmdb"]


def test_bad_scaling(tmp_path):
    for scaling, match in [({"type": "norm"}, "'type'"), ({"type": "normalize"}, "'range'"),
                           ({"type": "standardize", "ranges": 1}, r"unknown key\(s\) \['ranges'\]")]:
        with pytest.raises(ValueError, match=match):
            write_lmdb(synthetic_frames(2), gauss_config(), tmp_path / "x.lmdb", scaling=scaling, progress=False)
    assert not os.listdir(tmp_path)


# -- command line ------------------------------------------------------------------------


@pytest.fixture
def cli_files(tmp_path):
    frames = synthetic_frames(5)
    ase.io.write(tmp_path / "frames.traj", frames)
    (tmp_path / "config.json").write_text(json.dumps(gauss_config()))
    return tmp_path, frames


def test_cli_writes_lmdb(cli_files, float64):
    d, frames = cli_files
    scaling = {"type": "standardize"}
    assert main(["lmdb", str(d / "frames.traj"), "--config", str(d / "config.json"), "--out", str(d / "out.lmdb"),
                 "--scaling", json.dumps(scaling), "--chunk-frames", "2", "--shard-frames", "3", "--quiet"]) == 0
    paths = lmdb_paths(d / "out.lmdb")
    assert [Path(p).name for p in paths] == ["shard-00000.lmdb", "shard-00001.lmdb"]
    shards = [read_all(p) for p in paths]
    assert [s["length"] for s in shards] == [3, 2]
    assert shards[0]["feature_scaler"] == shards[1]["feature_scaler"]  # what AtomsLMDBDataset checks
    assert shards[0]["target_scaler"] == shards[1]["target_scaler"]
    expected, _, _ = in_memory(Gaussian(copy.deepcopy(GAUSS_PARAMS), ["Cu", "O"]), ase.io.read(d / "frames.traj", ":"),
                               scaling)
    stored = [shards[0][str(k)] for k in range(3)] + [shards[1][str(k)] for k in range(2)]
    for got, data in zip(stored, expected):
        assert_same_data(got, data, fp_tol=1e-12, fprime_tol=1e-12)  # standardize: to rounding


def test_cli_errors(cli_files, capsys):
    d, frames = cli_files
    frames[2].calc = None
    ase.io.write(d / "noenergy.traj", frames)

    def run(*args):
        return main(["lmdb", *map(str, args), "--quiet"])

    assert run(d / "noenergy.traj", "--config", d / "config.json", "--out", d / "x.lmdb") == 2
    assert "frame 2: no energy" in capsys.readouterr().err
    assert run(d / "missing.traj", "--config", d / "config.json", "--out", d / "x.lmdb") == 2
    assert "not found" in capsys.readouterr().err
    assert run(d / "frames.traj", "--config", d / "config.json", "--out", d / "x.lmdb", "--scaling", "{oops") == 2
    assert "--scaling: not valid JSON" in capsys.readouterr().err
    assert run(d / "frames.traj", "--config", d / "config.json", "--out", d / "no" / "x.lmdb") == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (d / "x.lmdb").exists()


def test_shards_resume_and_cluster(cli_files, float64):
    """A directory of LMDB files: on a LocalCluster of 2 workers the same data as in this
    process (pickles of torch tensors differ in their storage ids, so data are compared);
    a lost file is the only one rewritten, without refitting the scalers."""
    pytest.importorskip("distributed", reason="needs dask.distributed (the 'cluster' extra)")
    from fastfp.framefile import FrameFile

    d, frames = cli_files
    serial = write_lmdb_shards(FrameFile(d / "frames.traj"), gauss_config(), d / "serial", shard_frames=2)
    assert serial["computed"] == [0, 1, 2] and serial["fitted"]
    cluster = write_lmdb_shards(FrameFile(d / "frames.traj"), gauss_config(), d / "cluster", shard_frames=2,
                                cluster="local:2")
    assert (d / "cluster" / "manifest.json").read_bytes() == (d / "serial" / "manifest.json").read_bytes()
    for a, b in zip(lmdb_paths(d / "serial"), lmdb_paths(d / "cluster")):
        x, y = read_all(a), read_all(b)
        assert x.keys() == y.keys() and x["feature_scaler"] == y["feature_scaler"]
        for k in range(x["length"]):
            assert_same_data(x[str(k)], y[str(k)])
    Path(lmdb_paths(d / "serial")[1]).unlink()
    with pytest.raises(ValueError, match=r"1 LMDB file\(s\) missing \(shard-00001.lmdb\)"):
        lmdb_paths(d / "serial")
    resumed = write_lmdb_shards(FrameFile(d / "frames.traj"), gauss_config(), d / "serial", shard_frames=2)
    assert resumed["computed"] == [1] and not resumed["fitted"]
    for k in range(2):
        assert_same_data(read_all(lmdb_paths(d / "serial")[1])[str(k)], read_all(lmdb_paths(d / "cluster")[1])[str(k)])
    with pytest.raises(ValueError, match=r"differing: settings\.scaling\.elementwise, settings\.scaling\.range, settings\.scaling\.type"):
        write_lmdb_shards(FrameFile(d / "frames.traj"), gauss_config(), d / "serial", shard_frames=2,
                          scaling={"type": "standardize"})


# -- with AMPTorch -------------------------------------------------------------------------

needs_amptorch = pytest.mark.skipif(
    not HAS_AMPTORCH, reason="AMPTorch is not installed (see README: 'Comparing with AMPTorch'); "
    "its AtomsLMDBDataset/AtomsTrainer cannot be run")


@pytest.fixture(scope="module")
def amptorch_lmdb(tmp_path_factory):
    """6 oc20 frames, GMPOrderNorm orders 0-3 x 5 sigmas, cutoff 8, AMPTorch's scalers."""
    frames = ase.io.read(OC20, ":6")
    path = tmp_path_factory.mktemp("amptorch") / "oc20.lmdb"
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        summary = write_lmdb(frames, {"fp_scheme": "gmpordernorm", "fp_params": copy.deepcopy(GMP_PARAMS)}, path,
                             scaling={"type": "normalize", "range": (0, 1), "elementwise": True}, progress=False,
                             chunk_frames=4)
    finally:
        torch.set_default_dtype(old)
    assert summary["scalers"] == "amptorch"
    return frames, path


@needs_amptorch
@requires_shared
def test_amptorch_reads_and_matches_atomstodata(amptorch_lmdb, float64):
    from amptorch.dataset_lmdb import AtomsLMDBDataset
    from amptorch.descriptor.GMPOrderNorm import GMPOrderNorm as TheirGMPOrderNorm
    from amptorch.preprocessing import AtomsToData
    from amptorch.preprocessing import FeatureScaler as TheirFeatureScaler
    from amptorch.preprocessing import TargetScaler as TheirTargetScaler

    frames, path = amptorch_lmdb
    dataset = AtomsLMDBDataset([str(path)])
    try:
        elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
        assert len(dataset) == len(frames) and dataset.input_dim == 20
        assert list(dataset.elements) == elements
        assert type(dataset.feature_scaler) is TheirFeatureScaler and type(dataset.target_scaler) is TheirTargetScaler
        params = copy.deepcopy(dataset.descriptor_setup[1])
        theirs = TheirGMPOrderNorm(MCSHs=params, elements=elements)
        assert dataset.descriptor == theirs  # same descriptor_type and setup hash

        a2d = AtomsToData(descriptor=theirs, r_energy=True, r_forces=True, save_fps=False, fprimes=True)
        expected = [a2d.convert(atoms, idx=k) for k, atoms in enumerate(frames)]
        fs = TheirFeatureScaler(expected, True, {"type": "normalize", "range": (0, 1), "elementwise": True})
        ts = TheirTargetScaler(expected, True)
        fs.norm(expected, disable_tqdm=True)
        ts.norm(expected, disable_tqdm=True)
        assert dataset.feature_scaler.unique == fs.unique
        assert float(dataset.target_scaler.target_mean) == pytest.approx(float(ts.target_mean), rel=1e-12)
        for k, data in enumerate(expected):
            assert_same_data(dataset[k], data, fp_tol=1e-8, fprime_tol=1e-4)
    finally:
        for env in dataset.envs:
            env.close()


@pytest.fixture(scope="module")
def amptorch_shards(amptorch_lmdb, tmp_path_factory):
    """The same 6 frames as ``amptorch_lmdb``, as 2 LMDB files of a sharded directory."""
    from fastfp.framefile import FrameFile

    frames, _ = amptorch_lmdb
    d = tmp_path_factory.mktemp("amptorch_shards")
    ase.io.write(d / "frames.traj", frames)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        summary = write_lmdb_shards(FrameFile(d / "frames.traj"), {"fp_scheme": "gmpordernorm",
                                                                   "fp_params": copy.deepcopy(GMP_PARAMS)},
                                    d / "oc20", shard_frames=4, chunk_frames=3)
    finally:
        torch.set_default_dtype(old)
    assert summary["scalers"] == "amptorch" and summary["shards"] == 2
    return lmdb_paths(d / "oc20")


@needs_amptorch
@requires_shared
def test_amptorch_reads_shard_list(amptorch_lmdb, amptorch_shards, float64):
    """AtomsLMDBDataset over the list of shard files (it checks that their scalers,
    descriptors and elements agree) gives the data of the single file, frame by frame."""
    from amptorch.dataset_lmdb import AtomsLMDBDataset

    shards, single = AtomsLMDBDataset(amptorch_shards), AtomsLMDBDataset([str(amptorch_lmdb[1])])
    try:
        assert len(shards) == len(single) == 6 and shards.length_list == [4, 2]
        assert shards.feature_scaler == single.feature_scaler  # "normalize": the same fit, exactly
        # the energies' mean and deviation merged over 2 shards or over 2 chunks: to rounding
        assert float(shards.target_scaler.target_std) == pytest.approx(float(single.target_scaler.target_std), rel=1e-14)
        for k in range(6):
            assert_same_data(shards[k], single[k])
    finally:
        for env in shards.envs + single.envs:
            env.close()


@needs_amptorch
@requires_shared
@pytest.mark.parametrize("layout", ["file", "shards"])
def test_amptorch_trainer_trains_from_lmdb(amptorch_lmdb, amptorch_shards, tmp_path, float64, layout):
    from amptorch.trainer import AtomsTrainer

    frames, path = amptorch_lmdb
    config = {
        "model": {"get_forces": True, "num_layers": 3, "num_nodes": 5, "batchnorm": False},
        "optim": {"device": "cpu", "force_coefficient": 0.04, "lr": 1e-2, "batch_size": 4, "epochs": 2,
                  "loss": "mse", "metric": "mae"},
        "dataset": {"lmdb_path": [str(path)] if layout == "file" else amptorch_shards, "val_split": 0},
        # not debug: AMPTorch records descriptor_setup for predict() only when it saves a checkpoint
        "cmd": {"debug": False, "run_dir": str(tmp_path), "seed": 1, "identifier": "lmdb", "verbose": False,
                "logger": False},
    }
    trainer = AtomsTrainer(config)
    trainer.train()
    losses = [h["train_loss"] for h in trainer.net.history]
    assert len(losses) == 2 and np.isfinite(losses).all()
    # AMPTorch featurizes new frames with the stored descriptor_setup
    predictions = trainer.predict(frames[:2])
    assert np.isfinite(predictions["energy"]).all() and len(predictions["forces"]) == 2
