"""Tests for fastfp.harness.workloads: the embedded water-on-Cu workload, its cache, and frame loading."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.calculators.emt import EMT

from fastfp.harness import workloads
from fastfp.harness.settings import DATA, shared_data_dir
from fastfp.harness.workloads import has_labels, list_workloads, load_frames, load_workload

N_TRAJ = workloads._N_TRAJ


@pytest.fixture(scope="module")
def frames100():
    """The first 100 frames of the reference workload, seed 0 (built, not cached)."""
    return workloads._generate(100, seed=0, progress=False)


def assert_same_frames(a, b, atol=0.0):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.numbers, y.numbers)
        np.testing.assert_allclose(x.positions, y.positions, rtol=0, atol=atol)
        np.testing.assert_allclose(x.cell.array, y.cell.array, rtol=0, atol=atol)
        np.testing.assert_array_equal(x.pbc, y.pbc)
        assert x.get_potential_energy() == pytest.approx(y.get_potential_energy(), rel=0, abs=atol)
        np.testing.assert_allclose(
            x.get_forces(apply_constraint=False),
            y.get_forces(apply_constraint=False),
            rtol=0,
            atol=atol,
        )


def emt_reference(frame):
    """Energy and forces of ``frame`` from ASE's own EMT calculator (the labels' definition)."""
    atoms = frame.copy()
    atoms.set_constraint()
    atoms.calc = EMT(asap_cutoff=True)
    return atoms.get_potential_energy(), atoms.get_forces()


# ---------------------------------------------------------------- the reference workload


def test_atom_counts_and_layout(frames100):
    counts = np.array([len(a) for a in frames100])
    assert counts.min() >= 35 and counts.max() <= 164
    first = counts[:N_TRAJ]  # one frame of every trajectory: the full range
    assert first.min() == 35 and first.max() == 164
    assert 80 < first.mean() < 110
    a = frames100[0]
    assert a.pbc.all() and set(a.get_chemical_symbols()) == {"Cu", "O", "H"}
    # frame i is step i // N_TRAJ of trajectory i % N_TRAJ
    assert [a.info["trajectory"] for a in frames100[:3]] == [0, 1, 2]
    assert frames100[N_TRAJ + 1].info == {"trajectory": 1, "step": 1}


def test_labels_present_and_finite(frames100):
    assert has_labels(frames100)
    for a in frames100:
        forces = a.get_forces(apply_constraint=False)
        assert forces.shape == (len(a), 3)
        assert np.isfinite(a.positions).all() and np.isfinite(forces).all()
        assert np.isfinite(a.get_potential_energy())
        assert np.abs(forces).max() < 20.0  # eV/Å: nothing exploded
    # the bottom layer is fixed, as in OC20; the stored forces on it are the raw EMT forces
    a = frames100[0]
    fixed = a.constraints[0].get_indices()
    assert len(fixed) > 0 and np.abs(a.get_forces(apply_constraint=False)[fixed]).max() > 0


def test_labels_are_ase_emt(frames100):
    for a in (frames100[0], frames100[15], frames100[46]):  # 35, 164 and 156 atoms
        energy, forces = emt_reference(a)
        assert a.get_potential_energy() == pytest.approx(energy, rel=0, abs=1e-9)
        np.testing.assert_allclose(a.get_forces(apply_constraint=False), forces, rtol=0, atol=1e-9)


def test_forces_are_energy_gradient(frames100):
    frame = frames100[15]
    atoms = frame.copy()
    atoms.set_constraint()
    atoms.calc = EMT(asap_cutoff=True)
    index, axis, h = len(atoms) - 2, 2, 1e-4  # a water hydrogen, z
    energies = []
    for step in (h, -h):
        atoms.positions[index, axis] += step
        energies.append(atoms.get_potential_energy())
        atoms.positions[index, axis] -= step
    numeric = -(energies[0] - energies[1]) / (2 * h)
    stored = frame.get_forces(apply_constraint=False)[index, axis]
    assert abs(stored) > 1e-3
    assert numeric == pytest.approx(stored, rel=1e-3)


def test_deterministic_and_prefix(frames100):
    run = workloads._run_trajectory
    traj, again = run((3, 0, 4))[1], run((3, 0, 4))[1]
    assert_same_frames(traj, again)
    assert_same_frames(
        traj, frames100[3::N_TRAJ]
    )  # a trajectory run alone = its frames in the workload
    assert_same_frames(traj[:2], run((3, 0, 2))[1])  # a shorter run is a prefix
    other = run((3, 1, 4))[1]
    assert not np.allclose(traj[0].positions, other[0].positions, atol=1e-3)
    assert not np.isclose(
        traj[-1].get_potential_energy(), other[-1].get_potential_energy(), atol=1e-6
    )


def test_worker_processes_give_same_frames(frames100):
    parallel = workloads._generate(8, seed=0, progress=False, workers=2)  # the path of big builds
    assert_same_frames(parallel, frames100[:8])


# ---------------------------------------------------------------- cache


def test_cache_round_trip(tmp_path, frames100, monkeypatch):
    frames = load_workload(n_frames=10, cache_dir=tmp_path, progress=False)
    path = tmp_path / f"water-metal-seed0-n10-v{workloads.VERSION}.traj"
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert_same_frames(frames, frames100[:10])

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(workloads, "_generate", no_build)
    assert_same_frames(load_workload(n_frames=10, cache_dir=tmp_path), frames)
    assert_same_frames(
        load_workload(n_frames=4, cache_dir=tmp_path), frames[:4]
    )  # from the larger file
    again = load_workload(n_frames=10, cache_dir=tmp_path)
    assert has_labels(again) and again[0].constraints  # FixAtoms survives the file


def test_interrupted_write_leaves_no_cache(tmp_path, frames100, monkeypatch):
    real_write = ase.io.write

    def interrupted(filename, images, **kwargs):
        real_write(filename, images[:2], **kwargs)  # part of the file is on disk
        raise KeyboardInterrupt

    monkeypatch.setattr(workloads, "_generate", lambda n, seed, progress: frames100[:n])
    monkeypatch.setattr(workloads.ase.io, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_workload(n_frames=5, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no final file, temporary file removed
    monkeypatch.undo()

    # a temporary file left by a killed build is never taken for the cache
    stray = tmp_path / f".water-metal-seed0-n5-v{workloads.VERSION}.traj.x1y2.tmp"
    real_write(stray, frames100[:5], format="traj")
    built = []
    monkeypatch.setattr(
        workloads, "_generate", lambda n, seed, progress: built.append(n) or frames100[:n]
    )
    load_workload(n_frames=5, cache_dir=tmp_path)
    assert built == [5]
    assert (tmp_path / f"water-metal-seed0-n5-v{workloads.VERSION}.traj").is_file()


def test_cache_dir_from_environment(tmp_path, frames100, monkeypatch):
    monkeypatch.setenv("FASTFP_CACHE", str(tmp_path / "c"))
    monkeypatch.setattr(workloads, "_generate", lambda n, seed, progress: frames100[:n])
    assert len(load_frames("water-metal:3")) == 3
    assert (tmp_path / "c" / f"water-metal-seed0-n3-v{workloads.VERSION}.traj").is_file()


# ---------------------------------------------------------------- names, files, directories


def test_list_workloads():
    names = list_workloads()
    assert DATA.default == workloads.REFERENCE  # the benchmarks' default frames
    assert "water-metal" in names and "16,000" in names["water-metal"]
    shared = shared_data_dir()
    for name, (filename, _) in workloads.SHARED_FILES.items():
        assert (name in names) == (shared is not None and (shared / filename).is_file())


def test_shared_data_dir_from_environment(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("FASTFP_SHARED", str(tmp_path))
    assert shared_data_dir() == tmp_path / "data"
    monkeypatch.setenv("FASTFP_SHARED", str(tmp_path / "missing"))
    assert shared_data_dir() is None


def test_load_frames_file_and_directory(tmp_path, frames100):
    ase.io.write(tmp_path / "b.traj", frames100[3:5])
    ase.io.write(tmp_path / "a.extxyz", frames100[:3])
    frames = load_frames(tmp_path / "a.extxyz")
    assert len(frames) == 3 and has_labels(frames)
    np.testing.assert_allclose(frames[2].positions, frames100[2].positions, atol=1e-6)
    (tmp_path / "notes.bin").write_bytes(b"\x00\x01 not a structure")
    with pytest.warns(UserWarning, match="notes.bin"):
        frames = load_frames(tmp_path)
    assert_same_frames(frames, frames100[:5], atol=1e-6)  # sorted by name: a.extxyz, then b.traj
    assert not has_labels([]) and not has_labels([frames100[0].copy()])


def test_load_frames_bad_inputs(tmp_path):
    missing = tmp_path / "nope.traj"
    with pytest.raises(FileNotFoundError, match="nope.traj"):
        load_frames(missing)
    with pytest.raises(FileNotFoundError, match="not a workload name"):
        load_frames("no-such-workload")
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("hello\nworld\n")
    with pytest.raises(ValueError, match=r"garbage\.xyz: ASE cannot read"):
        load_frames(garbage)
    empty = tmp_path / "empty.traj"
    ase.io.Trajectory(empty, "w").close()
    with pytest.raises(ValueError, match=r"empty\.traj: file contains zero frames"):
        load_frames(empty)
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    with pytest.raises(ValueError, match="empty_dir: directory has no frames"):
        load_frames(empty_dir)
    bad_dir = tmp_path / "bad_dir"
    bad_dir.mkdir()
    (bad_dir / "x.xyz").write_text("not xyz\n")
    with pytest.raises(ValueError, match=r"bad_dir: directory has no frames.*x\.xyz"):
        load_frames(bad_dir)
    with pytest.raises(ValueError, match="positive integer"):
        load_frames("water-metal:many")
    with pytest.raises(ValueError, match="unknown workload"):
        load_workload("water-moon")
    with pytest.raises(ValueError, match="n_frames"):
        load_workload(n_frames=0)


# ---------------------------------------------------------------- real data in ../shared/data


def shared_file(name):
    shared = shared_data_dir()
    if shared is None or not (shared / workloads.SHARED_FILES[name][0]).is_file():
        pytest.skip(f"shared/data/{workloads.SHARED_FILES[name][0]} not found (set FASTFP_SHARED)")
    return shared / workloads.SHARED_FILES[name][0]


def test_shared_oc20_frames():
    path = shared_file("oc20-test")
    frames = load_frames("oc20-test:5")
    assert len(frames) == 5 and has_labels(frames)
    assert_same_frames(frames, load_frames(path)[:5])
    fixed = frames[0].constraints[0].get_indices()
    raw = frames[0].get_forces(apply_constraint=False)
    assert np.abs(raw[fixed]).max() > 0  # fixed atoms keep their DFT forces when read raw


@pytest.mark.parametrize("name, n_atoms", [("oc20-val", None), ("water-842", 66)])
def test_shared_workloads(name, n_atoms):
    shared_file(name)
    frames = load_workload(name, n_frames=3)
    assert len(frames) == 3 and has_labels(frames)
    if n_atoms:
        assert {len(a) for a in frames} == {n_atoms}
    with pytest.raises(ValueError, match="frames"):
        load_workload(name, n_frames=100_000)
