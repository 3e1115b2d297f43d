"""fastfp.store: round trip, atomic writes, corrupt stores, provenance; fastfp.config."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase import Atoms

from conftest import assert_fingerprints_equal
from fastfp.fingerprints import Fingerprints
from fastfp.config import config_hash, build_descriptor, resolve_config
from fastfp.store import FORMAT_VERSION, StoreError, StoreWriter, featurize_to_store, open_store

F = 7


def random_fps(rng, atoms_per_frame, derivatives=True, n_features=F) -> Fingerprints:
    """Consistent random Fingerprints (each atom has 1..5 blocks on atoms of its frame)."""
    counts = np.asarray(atoms_per_frame)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    n = int(offsets[-1])
    frame_of = np.repeat(np.arange(len(counts)), counts)
    kw = {}
    if derivatives:
        nb = rng.integers(1, 6, size=n)
        ptr = np.concatenate(([0], np.cumsum(nb))).astype(np.int64)
        j = np.concatenate([rng.integers(offsets[frame_of[i]], offsets[frame_of[i] + 1], size=nb[i]) for i in range(n)])
        kw = dict(fprime_ptr=ptr, fprime_j=j.astype(np.int64), fprimes=rng.normal(size=(int(ptr[-1]), n_features, 3)))
    return Fingerprints(
        fingerprints=rng.normal(size=(n, n_features)), offsets=offsets,
        numbers=rng.integers(1, 90, size=n).astype(np.int64), **kw,
    )


CONFIG = {"fp_scheme": "gmpordernorm", "fp_params": {"MCSHs": {"orders": [0], "sigmas": [1.0]},
                                                      "atom_gaussians": {}}, "elements": ["H"]}


def write(path, batches, derivatives=True, config=CONFIG):
    with StoreWriter(path, config, F, derivatives) as w:
        for b in batches:
            w.append(b)
    return path


@pytest.fixture
def batches():
    rng = np.random.default_rng(0)
    return [random_fps(rng, [3, 5, 1]), random_fps(rng, [4]), random_fps(rng, [2, 6, 2, 3])]


def concat(batches) -> Fingerprints:
    """Reference: batches joined with global indices."""
    fp, nums, offs, ptr, j, fpr = [], [], [0], [0], [], []
    na = nb = 0
    for b in batches:
        fp.append(b.fingerprints); nums.append(b.numbers)
        offs.extend(b.offsets[1:] + na)
        if b.has_derivatives:
            ptr.extend(b.fprime_ptr[1:] + nb); j.append(b.fprime_j + na); fpr.append(b.fprimes)
            nb += len(b.fprime_j)
        na += len(b.numbers)
    kw = {}
    if batches[0].has_derivatives:
        kw = dict(fprime_ptr=np.array(ptr), fprime_j=np.concatenate(j), fprimes=np.concatenate(fpr))
    return Fingerprints(np.concatenate(fp), np.array(offs), np.concatenate(nums), **kw)


# -- round trip -----------------------------------------------------------------------

@pytest.mark.parametrize("derivatives", [True, False])
def test_round_trip(tmp_path, derivatives):
    rng = np.random.default_rng(1)
    bs = [random_fps(rng, c, derivatives) for c in ([3, 5, 1], [4], [2, 6, 2, 3])]
    path = write(tmp_path / "s.h5", bs, derivatives)
    ref = concat(bs)
    with open_store(path) as store:
        assert len(store) == ref.n_frames == 8
        assert store.n_atoms == len(ref.numbers)
        assert store.has_derivatives is derivatives
        assert store.n_features == F
        assert store.config == CONFIG
        assert_fingerprints_equal(store.read_all(), ref)
        for k in range(len(store)):
            assert_fingerprints_equal(store[k], ref.frame(k))
        assert_fingerprints_equal(store[-1], ref.frame(7))
        assert_fingerprints_equal(store[2:6], ref.frames(2, 6))
        assert_fingerprints_equal(store[5:], ref.frames(5, 8))
        assert store[4:4].n_frames == 0
        for k, one in enumerate(store):
            assert_fingerprints_equal(one, ref.frame(k))
        got = list(store.chunks(3))
        assert [c.n_frames for c in got] == [3, 3, 2]
        assert_fingerprints_equal(got[1], ref.frames(3, 6))
        with pytest.raises(IndexError):
            store[8]
        with pytest.raises(ValueError, match="step"):
            store[::2]


def test_real_descriptor_round_trip(tmp_path):
    """GMPOrderNorm output (with made-up pseudodensities) survives the store bit for bit."""
    for el in ("H", "O"):
        (tmp_path / f"{el}.g").write_text("# made up\n0.5 1.0\n0.2 0.3\n")
    config = {"fp_scheme": "gmpordernorm",
              "fp_params": {"MCSHs": {"orders": [0, 1, 2], "sigmas": [0.5, 1.0]}, "cutoff": 4.0,
                            "atom_gaussians": {"<El>": "<El>.g"}}}
    rng = np.random.default_rng(2)
    frames = [Atoms("H2O" * (k + 1), positions=rng.uniform(0, 5, size=(3 * (k + 1), 3)),
                    cell=np.eye(3) * 5, pbc=k % 2 == 0) for k in range(7)]
    resolved = resolve_config(config, base_dir=tmp_path, elements=["H", "O"])
    direct = build_descriptor(resolved).featurize(frames)
    summary = featurize_to_store(frames, resolved, tmp_path / "s.h5", chunk_frames=3)
    assert summary["n_frames"] == 7 and summary["n_blocks"] == len(direct.fprime_j)
    store = open_store(tmp_path / "s.h5")
    assert_fingerprints_equal(store.read_all(), direct)
    assert_fingerprints_equal(store[4], direct.frame(4))
    store.require_config(config, base_dir=tmp_path)
    assert store.metadata["features_per_element"] == {"H": direct.n_features, "O": direct.n_features}


@pytest.mark.parametrize("fprimes_dtype", ["float64", "float32"])
def test_sharded_store_reads_as_one(tmp_path, fprimes_dtype):
    """A directory store of 3 shards (7 frames each, the last 4) reads as one sequence of
    frames: slices across shards, chunks, coo; float32 blocks come back as float64, rounded."""
    for el in ("H", "O"):
        (tmp_path / f"{el}.g").write_text("# made up\n0.5 1.0\n0.2 0.3\n")
    config = resolve_config({"fp_scheme": "gmpordernorm",
                             "fp_params": {"MCSHs": {"orders": [0, 1], "sigmas": [0.5, 1.0]}, "cutoff": 4.0,
                                           "atom_gaussians": {"<El>": "<El>.g"}}},
                            base_dir=tmp_path, elements=["H", "O"])
    rng = np.random.default_rng(5)
    frames = [Atoms("H2O" * (k % 3 + 1), positions=rng.uniform(0, 5, size=(3 * (k % 3 + 1), 3)),
                    cell=np.eye(3) * 5, pbc=True) for k in range(18)]
    direct = build_descriptor(config).featurize(frames)
    if fprimes_dtype == "float32":
        direct = Fingerprints(direct.fingerprints, direct.offsets, direct.numbers, direct.fprime_ptr, direct.fprime_j,
                              direct.fprimes.astype(np.float32).astype(np.float64))
    summary = featurize_to_store(frames, config, tmp_path / "s.store", shard_frames=7, chunk_frames=3,
                                 fprimes_dtype=fprimes_dtype)
    assert summary["shards"] == 3 and summary["computed"] == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "s.store").iterdir()) == [
        "manifest.json", "shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    with open_store(tmp_path / "s.store") as store:
        assert len(store) == 18 and store.shard_bounds == [(0, 7), (7, 14), (14, 18)]
        assert store.n_atoms == len(direct.numbers) and store.fprimes_dtype == fprimes_dtype
        assert store.source == {"frames": "in memory"}
        assert_fingerprints_equal(store.read_all(), direct)
        assert_fingerprints_equal(store[5:16], direct.frames(5, 16))
        assert_fingerprints_equal(store[-1], direct.frame(17))
        assert [c.n_frames for c in store.chunks(5, start=3, stop=17)] == [5, 5, 4]
        assert_fingerprints_equal(list(store.chunks(5, start=3, stop=17))[1], direct.frames(8, 13))
        for got, want in zip(store.coo(9), direct.coo(9)):
            np.testing.assert_array_equal(got, want)
        clone = pickle.loads(pickle.dumps(store))
        assert_fingerprints_equal(clone[12], direct.frame(12))


def test_labels_and_fingerprints_only_reads(tmp_path):
    """Frames with energies and forces: the store holds them, shard by shard; a shard
    with a frame lacking them holds none, and the store then has no labels."""
    from ase.calculators.singlepoint import SinglePointCalculator

    config = resolve_config({"fp_scheme": "gaussian", "fp_params": {"default": {"G2": {"etas": [0.5], "rs_s": [0]},
                                                                                "cutoff": 4.0}}},
                            elements=["H", "O"])
    rng = np.random.default_rng(6)
    frames = []
    for k in range(9):
        atoms = Atoms("H2O" * (k % 3 + 1), positions=rng.uniform(0, 5, size=(3 * (k % 3 + 1), 3)),
                      cell=np.eye(3) * 5, pbc=True)
        atoms.calc = SinglePointCalculator(atoms, energy=float(k), forces=rng.normal(size=(len(atoms), 3)))
        frames.append(atoms)
    featurize_to_store(frames, config, tmp_path / "l.store", shard_frames=4)
    store = open_store(tmp_path / "l.store")
    assert store.has_labels
    energies, forces = store.labels(3, 6)
    np.testing.assert_array_equal(energies, [3.0, 4.0, 5.0])
    np.testing.assert_array_equal(forces, np.concatenate([a.get_forces() for a in frames[3:6]]))
    bare = store.frames(2, 7, derivatives=False)
    assert not bare.has_derivatives
    np.testing.assert_array_equal(bare.fingerprints, store.frames(2, 7).fingerprints)
    assert [c.has_derivatives for c in store.chunks(4, derivatives=False)] == [False] * 3
    frames[5].calc = None
    featurize_to_store(frames, config, tmp_path / "u.store", shard_frames=4)
    unlabelled = open_store(tmp_path / "u.store")
    assert not unlabelled.has_labels
    with pytest.raises(StoreError, match="no energies and forces"):
        unlabelled.labels(0, 1)


def test_reads_across_more_shards_than_stay_open(tmp_path, monkeypatch):
    """Frames and labels spanning more shards than the reader keeps open at once."""
    import fastfp.store

    from ase.calculators.singlepoint import SinglePointCalculator

    monkeypatch.setattr(fastfp.store, "MAX_OPEN_SHARDS", 2)
    config = resolve_config({"fp_scheme": "gaussian", "fp_params": {"default": {"G2": {"etas": [0.5], "rs_s": [0]},
                                                                                "cutoff": 4.0}}},
                            elements=["H", "O"])
    frames = [Atoms("H2O", positions=[[0, 0, 0], [0.9, 0, 0], [0, 0.9, 0.1 * k]]) for k in range(7)]
    for k, atoms in enumerate(frames):
        atoms.calc = SinglePointCalculator(atoms, energy=float(k), forces=np.full((3, 3), float(k)))
    featurize_to_store(frames, config, tmp_path / "many.store", shard_frames=1)
    store = open_store(tmp_path / "many.store")
    assert_fingerprints_equal(store.read_all(), build_descriptor(config).featurize(frames))
    np.testing.assert_array_equal(store.labels(0, 7)[0], np.arange(7.0))


GAUSSIAN_HO = {"fp_scheme": "gaussian", "fp_params": {"default": {"G2": {"etas": [0.5], "rs_s": [0]}, "cutoff": 4.0}},
               "elements": ["H", "O"]}


def water_frames(shift: float = 0.0) -> list:
    return [Atoms("H2O", positions=[[0, 0, 0], [0.9, 0, 0], [0, 0.9, 0.1 * k + shift]], cell=np.eye(3) * 6, pbc=True)
            for k in range(6)]


def test_resume_finds_the_frames_file_by_content(tmp_path):
    """A frames file whose modification time changed (``touch``, a copy) but not its content
    resumes; one with other content of the same size is refused, naming the frames (the
    store used to compare modification times, and refused the first)."""
    import ase.io

    from fastfp import FrameFile

    path, out = tmp_path / "frames.traj", tmp_path / "out.store"
    ase.io.write(path, water_frames())
    config = resolve_config(GAUSSIAN_HO)
    featurize_to_store(FrameFile(path), config, out, shard_frames=2)
    (out / "shard-00001.h5").unlink()
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**10))
    assert featurize_to_store(FrameFile(path), config, out, shard_frames=2)["computed"] == [1]
    size = path.stat().st_size
    ase.io.write(path, water_frames(shift=0.01))
    assert path.stat().st_size == size
    with pytest.raises(StoreError, match=r"written from other frames \(differing: source\.sha256;"):
        featurize_to_store(FrameFile(path), config, out, shard_frames=2)


def test_refusal_names_other_frames_first(tmp_path):
    """Other frames (here a longer selection, whose elements the config takes) are named as
    other frames, not as the descriptor settings they also change."""
    import ase.io

    from fastfp import FrameFile
    from fastfp.frames import elements_of

    path, out = tmp_path / "frames.traj", tmp_path / "out.store"
    frames = water_frames()
    frames[3] = Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]], cell=np.eye(3) * 6, pbc=True)
    ase.io.write(path, frames[3:] + frames[:3])
    no_elements = {k: v for k, v in GAUSSIAN_HO.items() if k != "elements"}
    for selection in ("@:1", "@:4"):
        ff = FrameFile(f"{path}{selection}")
        config = resolve_config(no_elements, elements=elements_of(ff))
        if selection == "@:1":
            featurize_to_store(ff, config, out)
    assert config["elements"] != open_store(out).config["elements"]
    with pytest.raises(StoreError, match=r"written from other frames \(differing: source\.frames, n_frames; "
                                         r"it holds '.*frames\.traj@:1' \(1 frames\), not '.*@:4' \(4 frames\)\)"):
        featurize_to_store(ff, config, out)


def test_failed_connection_leaves_no_store(tmp_path, monkeypatch):
    """A scheduler that cannot be reached leaves no directory behind (it used to leave one
    holding only a manifest), and an existing store as it was."""
    import ase.io

    distributed = pytest.importorskip("distributed", reason="needs dask.distributed (the 'cluster' extra)")
    from fastfp import FrameFile

    class Unreachable:
        def __init__(self, address, timeout):
            raise OSError(f"Timed out trying to connect to {address} after {timeout}")

    monkeypatch.setattr(distributed, "Client", Unreachable)
    path, out = tmp_path / "frames.traj", tmp_path / "out.store"
    ase.io.write(path, water_frames())
    config = resolve_config(GAUSSIAN_HO)
    with pytest.raises(OSError, match="cannot connect to the Dask scheduler at tcp://127.0.0.1:9"):
        featurize_to_store(FrameFile(path), config, out, shard_frames=2, cluster="tcp://127.0.0.1:9")
    assert not out.exists()
    monkeypatch.undo()
    featurize_to_store(FrameFile(path), config, out, shard_frames=2)
    (out / "shard-00002.h5").unlink()
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(distributed, "Client", Unreachable)
    with pytest.raises(OSError, match="cannot connect"):
        featurize_to_store(FrameFile(path), config, out, shard_frames=2, cluster="tcp://127.0.0.1:9")
    assert sorted(p.name for p in out.iterdir()) == before


def test_empty_store(tmp_path):
    write(tmp_path / "e.h5", [])
    store = open_store(tmp_path / "e.h5")
    assert len(store) == 0 and list(store) == [] and store.read_all().n_frames == 0


def test_pickle_and_reopen(tmp_path, batches):
    store = open_store(write(tmp_path / "s.h5", batches))
    clone = pickle.loads(pickle.dumps(store))
    assert_fingerprints_equal(clone[3], store[3])
    assert "frames=8" in repr(clone)


def test_append_checks(tmp_path, batches):
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="features"):
        with StoreWriter(tmp_path / "s.h5", CONFIG, F + 1, True) as w:
            w.append(batches[0])
    with pytest.raises(ValueError, match="derivatives"):
        with StoreWriter(tmp_path / "s.h5", CONFIG, F, True) as w:
            w.append(random_fps(rng, [2], derivatives=False))
    assert list(tmp_path.iterdir()) == []


# -- atomic writes --------------------------------------------------------------------

def test_exception_leaves_no_file_and_keeps_old(tmp_path, batches):
    path = tmp_path / "s.h5"
    with pytest.raises(RuntimeError):
        with StoreWriter(path, CONFIG, F, True) as w:
            w.append(batches[0])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    write(path, batches[:1])
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with StoreWriter(path, CONFIG, F, True) as w:
            w.append(batches[1])
            raise RuntimeError("boom")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.h5"]
    assert len(open_store(path)) == 3

    write(path, batches)  # a successful write replaces it
    assert len(open_store(path)) == 8


KILLED = """
import os, sys, numpy as np
sys.path.insert(0, {tests!r})
from test_store import random_fps, CONFIG, F
from fastfp.store import StoreWriter
w = StoreWriter({path!r}, CONFIG, F, True)
w.append(random_fps(np.random.default_rng(0), [3, 4]))
w._file.flush()
os._exit(9)   # killed: no close, no cleanup
"""


@pytest.mark.parametrize("old", [False, True])
def test_killed_writer(tmp_path, batches, old):
    path = tmp_path / "s.h5"
    if old:
        write(path, batches[:1])
    code = KILLED.format(tests=str(Path(__file__).parent), path=str(path))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    rc = subprocess.run([sys.executable, "-c", code], env=env).returncode
    assert rc == 9
    temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].name.startswith(".s.h5.")
    if old:
        assert len(open_store(path)) == 3  # the old store is intact
    else:
        with pytest.raises(StoreError, match="not found"):
            open_store(path)
    with pytest.raises(StoreError, match="incomplete"):
        open_store(temps[0])


# -- corrupt stores ---------------------------------------------------------------------

def test_random_bytes(tmp_path):
    path = tmp_path / "junk.h5"
    path.write_bytes(np.random.default_rng(0).bytes(10000))
    with pytest.raises(StoreError, match="not an HDF5") as err:
        open_store(path)
    assert str(path) in str(err.value)


def test_missing_and_directory(tmp_path):
    with pytest.raises(StoreError, match="not found"):
        open_store(tmp_path / "nope.h5")
    with pytest.raises(StoreError, match="not a fastfp store"):
        open_store(tmp_path)


def test_truncated(tmp_path, batches):
    path = write(tmp_path / "s.h5", batches)
    data = path.read_bytes()
    for size in (len(data) // 2, len(data) - 100, 600):
        path.write_bytes(data[:size])
        with pytest.raises(StoreError, match=str(path.name)):
            store = open_store(path)
            store.read_all()


def edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


@pytest.mark.parametrize("change, message", [
    (lambda f: f.attrs.__delitem__("complete"), "incomplete"),
    (lambda f: f.attrs.__setitem__("complete", False), "incomplete"),
    (lambda f: f.attrs.__setitem__("format_version", FORMAT_VERSION + 1), "version"),
    (lambda f: f.attrs.__delitem__("format_version"), "version"),
    (lambda f: f.attrs.__setitem__("format", "other"), "not a fastfp store"),
    (lambda f: f.__delitem__("fprimes"), r"missing dataset\(s\) \['fprimes'\]"),
    (lambda f: f.__delitem__("offsets"), "missing dataset"),
    (lambda f: f["offsets"].__setitem__(-1, 5), "offsets"),
    (lambda f: f.attrs.__setitem__("config", "{not json"), "attributes"),
])
def test_corrupt_attributes(tmp_path, batches, change, message):
    path = write(tmp_path / "s.h5", batches)
    edit(path, change)
    with pytest.raises(StoreError, match=message) as err:
        open_store(path)
    assert str(path) in str(err.value)


def test_plain_hdf5_is_not_a_store(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(StoreError, match="not a fastfp store"):
        open_store(path)


# -- provenance -----------------------------------------------------------------------------

@pytest.fixture
def gdir(tmp_path):
    d = tmp_path / "g"
    d.mkdir()
    for el in ("H", "O"):
        (d / f"{el}_pseudodensity.g").write_text("1.0 0.5\n")
    return d


def base_config(gdir):
    return {"fp_scheme": "gmpordernorm",
            "fp_params": {"MCSHs": {"orders": [0, 1], "sigmas": [0.5, 1.0]}, "cutoff": 5,
                          "atom_gaussians": {"<El>": str(gdir / "<El>_pseudodensity.g")}},
            "elements": ["H", "O"]}


def test_require_config(tmp_path, gdir):
    cfg = base_config(gdir)
    path = write(tmp_path / "s.h5", [], config=resolve_config(cfg))
    store = open_store(path)
    store.require_config(cfg)

    same = json.loads(json.dumps(cfg))
    same["fp_params"]["cutoff"] = 5.0  # 5 == 5.0
    store.require_config(same)
    moved = tmp_path / "moved"  # same content elsewhere
    gdir.rename(moved)
    same["fp_params"]["atom_gaussians"] = {"H": str(moved / "H_pseudodensity.g"), "O": str(moved / "O_pseudodensity.g")}
    store.require_config(same)
    gdir = moved

    other = json.loads(json.dumps(same))
    other["fp_params"]["MCSHs"]["sigmas"] = [0.5, 1.5]
    with pytest.raises(StoreError, match=r"different descriptor settings.*fp_params\.MCSHs\.sigmas") as err:
        store.require_config(other)
    assert str(path) in str(err.value)

    (gdir / "O_pseudodensity.g").write_text("1.0 0.6\n")  # same path, new content
    with pytest.raises(StoreError, match=r"atom_gaussians\.O"):
        store.require_config(same)

    no_elements = {k: v for k, v in base_config(gdir).items() if k != "elements"}
    (gdir / "O_pseudodensity.g").write_text("1.0 0.5\n")
    store.require_config(no_elements)  # takes the store's elements
    with pytest.raises(StoreError, match="elements"):
        store.require_config(no_elements | {"elements": ["O", "H"]})


# -- config ---------------------------------------------------------------------------------

def test_config_template_and_relative_paths(tmp_path, gdir):
    cfg = base_config(gdir)
    cfg["fp_params"]["atom_gaussians"] = {"<El>": "g/<El>_pseudodensity.g", "O": "g/O_pseudodensity.g"}
    del cfg["elements"]
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    resolved = resolve_config(tmp_path / "c.json", elements=["O", "H"])
    assert resolved["elements"] == ["O", "H"]
    assert resolved["fp_params"]["atom_gaussians"] == {
        "O": str(gdir / "O_pseudodensity.g"), "H": str(gdir / "H_pseudodensity.g")}
    d = build_descriptor(tmp_path / "c.json", elements=["H", "O"])
    assert d.elements == ["H", "O"] and d.n_features == 4
    assert resolve_config(resolved) == resolved  # idempotent
    assert config_hash(tmp_path / "c.json", elements=["O", "H"]) == config_hash(resolved)
    with pytest.raises(ValueError, match="no 'elements'"):
        resolve_config(tmp_path / "c.json")


@pytest.mark.parametrize("change, message", [
    ({"fp_scheme": "soap"}, "fp_scheme: expected 'gmpordernorm', 'gmp' or 'gaussian', got 'soap'"),
    ({"fingerprint": 1}, r"unknown parameter key\(s\) \['fingerprint'\]"),
    ({"fp_params": [1]}, "fp_params"),
    ({"elements": ["H", "Xx"]}, "Xx"),
    ({"elements": ["H", "H"]}, "duplicate"),
    ({"cutoff_params": {"cutoff_func": "Cosine"}}, "'gaussian' only"),
])
def test_config_errors(gdir, change, message):
    with pytest.raises(ValueError, match=message):
        build_descriptor(base_config(gdir) | change)


def test_config_descriptor_errors(gdir):
    cfg = base_config(gdir)
    cfg["fp_params"]["MCSHs"]["widths"] = [1]
    with pytest.raises(ValueError, match="widths"):
        build_descriptor(cfg)
    cfg = base_config(gdir)
    cfg["fp_params"]["atom_gaussians"] = {"H": str(gdir / "H_pseudodensity.g")}
    with pytest.raises(ValueError, match=r"\['O'\]"):
        build_descriptor(cfg)
    with pytest.raises(ValueError, match="not valid JSON"):
        p = gdir / "bad.json"
        p.write_text("{")
        build_descriptor(p)


@pytest.mark.parametrize("interrupted", [False, True])
def test_error_during_an_interruption_keeps_the_shards(tmp_path, monkeypatch, interrupted):
    """A ``ValueError`` (bad frames) removes the store this call created; raised while the
    run is interrupted (:data:`fastfp.cluster.STOP` set, as the command line does on
    Ctrl-C), it is what the interruption surfaced as, and the complete shards stay for a
    resume (an interrupted ``fastfp lmdb`` once lost them this way)."""
    import fastfp.store
    from fastfp.cluster import STOP

    real = fastfp.store.featurize_shard

    def second_fails(job, path, start, stop):
        if start > 0:
            if interrupted:
                STOP.set()
            raise ValueError("frame 2: stands for an error an interruption surfaced as")
        return real(job, path, start, stop)

    monkeypatch.setattr(fastfp.store, "featurize_shard", second_fails)
    out = tmp_path / "out.store"
    try:
        with pytest.raises(ValueError, match="frame 2"):
            featurize_to_store(water_frames(), resolve_config(GAUSSIAN_HO), out, shard_frames=2)
    finally:
        STOP.clear()
    if not interrupted:
        assert not out.exists()
        return
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000.h5"]
    assert json.loads((out / "manifest.json").read_text())["complete"] is False
    with pytest.raises(StoreError, match="incomplete store"):
        open_store(out)
