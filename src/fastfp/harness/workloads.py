"""Frames to benchmark on: the embedded reference workload, the shared real data, any ASE file.

The reference workload ``water-metal`` needs no download: 16,000 frames (35–164 atoms,
mean ≈ 94) of water molecules on Cu(111) slabs, made by molecular dynamics and labelled
with EMT energies (eV) and forces (eV/Å). It is built from a seed, deterministically,
and cached on disk (``$FASTFP_CACHE`` or ``~/.cache/fastfp``) as an ASE ``.traj`` file.

How it is made
--------------
32 trajectories, each a Cu(111) slab (3–4 layers, bottom layer fixed with ``FixAtoms``
as in OC20) with 1–28 water molecules placed above it, periodic in x and y, with at
least 7 Å of vacuum above and below in z (``pbc`` is True in all three directions, as
in OC20). Each runs Langevin MD at 300 K with a 1 fs step and gives one frame per step
after a 50-step burn-in, so consecutive frames of a trajectory are correlated.
Frame ``i`` of the workload is step ``i // 32`` of trajectory ``i % 32``: every prefix
(the 100- and 1,000-frame subsets) holds all 32 systems, and building it runs each
trajectory only as far as that prefix needs.

Labels are EMT, ``ase.calculators.emt.EMT(asap_cutoff=True)`` (its parameter set
covers H and O), evaluated by ``_EMT``: the same formulas vectorized over neighbour
pairs, equal to ASE's to 1e-9 (checked in the tests) and over ten times faster, which
is what lets 16,000 frames build in about a minute on two cores. EMT is no water
model: left to itself it fuses water molecules into O2 within 100 fs. The MD is
therefore biased by ``_WaterRestraint`` (springs keeping each molecule's shape, soft
walls keeping molecules apart); the bias only steers sampling, the stored energies and
forces are pure EMT, so forces are exactly minus the gradient of the stored energy.

Frames store energy and forces in a ``SinglePointCalculator``; read forces with
``atoms.get_forces(apply_constraint=False)``, as AMPTorch does, since fixed atoms carry
a ``FixAtoms`` constraint.

Reproducibility: the same seed gives bitwise-identical frames on one machine and
software stack; MD is chaotic, so another platform may drift apart after many steps.
The cache file name carries ``VERSION``, bumped whenever the recipe changes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import warnings
from pathlib import Path

import ase.io
import numpy as np
from matscipy.neighbours import neighbour_list
from ase import Atoms, units
from ase.build import fcc111
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT, beta
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms, FixConstraint
from ase.md.langevin import Langevin
from tqdm.auto import tqdm

from ..atomic import AtomicPath
from ..frames import elements_of, labels_of
from .settings import shared_data_dir

__all__ = [
    "VERSION",
    "describe",
    "has_labels",
    "is_workload",
    "list_workloads",
    "load_frames",
    "load_workload",
    "supercell",
]

VERSION = "3"  # bump whenever the frames a seed gives change (old caches are then ignored)
REFERENCE = "water-metal"
N_REFERENCE = 16_000

# Real frames in ../shared/data: workload name -> (file, description).
SHARED_FILES = {
    "oc20-test": (
        "oc20_300_test.traj",
        "300 OC20 S2EF DFT frames (adsorbate on slab), 10–220 atoms",
    ),
    "oc20-val": ("oc20_val_300.traj", "300 OC20 S2EF DFT frames, a second sample, 19–197 atoms"),
    "water-842": ("water_842.traj", "842 frames of liquid water MD with DFT labels, 66 atoms"),
}

# ((slab repeats a, b, layers), water molecules): 35 to 164 atoms, mean 94.4.
_SYSTEMS = [
    ((2, 4, 4), 1), ((3, 3, 4), 2), ((3, 4, 3), 5), ((3, 4, 4), 4),
    ((4, 4, 3), 7), ((4, 4, 4), 3), ((4, 4, 4), 8), ((3, 5, 4), 10),
    ((4, 5, 4), 6), ((4, 4, 4), 12), ((4, 5, 4), 10), ((5, 5, 4), 5),
    ((4, 6, 4), 9), ((5, 5, 4), 12), ((5, 6, 4), 12), ((4, 5, 4), 28),
]  # fmt: skip
_N_TRAJ = 2 * len(_SYSTEMS)  # each system twice, with different random placements
_BURN_IN = 50  # MD steps before the first recorded frame
_TIMESTEP = 1.0 * units.fs
_TEMPERATURE_K = 300.0
_FRICTION = 0.02 / units.fs
_VACUUM = 7.0  # Å above the top and below the bottom atom when built
# A water molecule as EMT relaxes it (O–H 1.10 Å, H–O–H 102°), O first.
_WATER = Atoms("OH2", positions=[(0.0, 0.0, 0.0), (0.0, 0.8541, -0.6911), (0.0, -0.8541, -0.6911)])


# --------------------------------------------------------------------------- labels


class _EMT(EMT):
    """ASE's EMT with ``calculate`` vectorized over neighbour pairs.

    Same parameters and formulas as :class:`ase.calculators.emt.EMT`, whose
    ``initialize`` it reuses; always ``asap_cutoff=True`` (cutoff set by the elements
    present, as in ASAP). Energy (eV) and forces (eV/Å) only, no stress. The matscipy
    neighbour list is built with a skin and rebuilt only when an atom has moved more
    than half of it, so MD steps mostly reuse it.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces"]
    skin = 0.5  # Å

    def __init__(self):
        super().__init__(asap_cutoff=True)
        self._list = None

    def _pairs(self, atoms):
        """Directed pairs (i, j) closer than the cutoff: i, j, d = x_j - x_i (Å), |d|."""
        pos, cell = atoms.positions, atoms.cell.array
        if self._list is None or np.abs(pos - self._list[3]).max() > 0.5 * self.skin:
            i, j, shifts = neighbour_list(
                "ijS", positions=pos, cutoff=self.rc_list + self.skin, cell=cell, pbc=atoms.pbc
            )
            self._list = (i.astype(np.int64), j.astype(np.int64), shifts @ cell, pos.copy())
        i, j, offset, _ = self._list
        d = pos[j] - pos[i] + offset
        r = np.sqrt((d * d).sum(axis=1))
        near = r < self.rc_list
        return i[near], j[near], d[near], r[near]

    def check_state(self, atoms, tol=1e-15):
        """What changed since the last calculation: ASE's check, made cheap for MD steps."""
        old = self.atoms
        if old is None or len(old) != len(atoms) or (old.numbers != atoms.numbers).any():
            return list(all_changes)
        if (old.cell.array != atoms.cell.array).any() or (old.pbc != atoms.pbc).any():
            return list(all_changes)
        return [] if np.array_equal(old.positions, atoms.positions) else ["positions"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        Calculator.calculate(self, atoms, properties, system_changes)
        atoms = self.atoms
        if set(system_changes) - {"positions"} or not hasattr(self, "par"):
            self.initialize(atoms)
            self._list = None
        i, j, d, r = self._pairs(atoms)
        n, z, p = len(atoms), self.ia2iz, self.par
        s, o = z[i], z[j]  # parameter rows of the atom and of its neighbour
        w = 1.0 / (1.0 + np.exp(self.acut * (r - self.rc)))  # smooth cutoff
        dwdr_w = self.acut * (w - 1.0)
        chi = self.chi[s, o]
        dsigma1 = np.exp(-p["eta2"][o] * (r - beta * p["s0"][o])) * chi * w
        e2s = (
            p["neghalfv0overgamma2"][s] * np.exp(-p["kappa"][o] * (r / beta - p["s0"][o])) * chi * w
        )
        e2o = (
            p["neghalfv0overgamma2"][o] * np.exp(-p["kappa"][s] * (r / beta - p["s0"][s])) / chi * w
        )
        sigma1 = np.bincount(i, dsigma1, minlength=n)
        ds = -np.log(sigma1 * p["inv12gamma1"][z]) / (beta * p["eta2"][z])
        lds = p["lambda"][z] * ds
        e0_exp = p["E0"][z] * np.exp(-lds)
        sixv0 = 6.0 * p["V0"][z] * np.exp(-p["kappa"][z] * ds)
        energies = (
            e0_exp * (1.0 + lds) + sixv0 + 0.5 * np.bincount(i, e2s + e2o, minlength=n) - p["E0"][z]
        )
        dedsigma1 = (p["lambda"][z] * lds * e0_exp + p["kappa"][z] * sixv0) / (
            beta * p["eta2"][z] * sigma1
        )
        # dE/dr of each directed pair i->j; both directions together give the pair's total.
        dedr = dedsigma1[i] * dsigma1 * (dwdr_w - p["eta2"][o]) + 0.5 * (
            e2s * (dwdr_w - p["kappa"][o] / beta) + e2o * (dwdr_w - p["kappa"][s] / beta)
        )
        f = (dedr / r)[:, None] * d  # d = x_j - x_i
        forces = np.stack(
            [np.bincount(i, f[:, k], n) - np.bincount(j, f[:, k], n) for k in range(3)], axis=1
        )
        energy = float(energies.sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": energies,
            "forces": forces,
        }


class _WaterRestraint(FixConstraint):
    """Sampling bias for MD only: keeps water molecules whole and apart.

    Harmonic springs (``k`` eV/Å²) hold each molecule's O–H and H–H distances at EMT's
    own equilibrium (so they add little force where EMT is content); soft
    harmonic walls (``k_wall`` eV/Å²) push apart O–O, O–H and H–H pairs of different
    molecules closer than ``walls`` Å. Water atoms are ``first:`` in O, H, H order and
    their positions must stay unwrapped (molecules are never split across the cell).
    """

    def __init__(self, first, n_water, k=30.0, walls=(2.7, 1.8, 1.6), k_wall=10.0):
        o = first + 3 * np.arange(n_water)
        self.pairs = np.concatenate(
            [np.stack([o, o + 1], 1), np.stack([o, o + 2], 1), np.stack([o + 1, o + 2], 1)]
        )
        self.r0 = np.repeat(
            [_WATER.get_distance(*pair) for pair in ((0, 1), (0, 2), (1, 2))], n_water
        )
        self.first, self.k, self.walls, self.k_wall = first, k, np.asarray(walls), k_wall

    def _terms(self, atoms):
        """Energy (eV) and, per restrained pair (a, b), d = x_b - x_a, r = |d| and dE/dr."""
        pos = atoms.positions
        a, b = self.pairs.T
        d = pos[b] - pos[a]
        r = np.linalg.norm(d, axis=1)
        wa, wb, wd, wr = neighbour_list(
            "ijDd", positions=pos[self.first :], cutoff=self.walls.max(), cell=atoms.cell.array, pbc=atoms.pbc
        )
        half = wa < wb  # each unordered pair once
        wa, wb, wd, wr = wa[half].astype(np.int64), wb[half].astype(np.int64), wd[half], wr[half]
        r_wall = self.walls[(wa % 3 > 0).astype(int) + (wb % 3 > 0)]  # O-O, O-H, H-H
        m = (wa // 3 != wb // 3) & (wr < r_wall)
        stretch = np.concatenate([self.k * (r - self.r0), self.k_wall * (wr[m] - r_wall[m])])
        ks = np.concatenate([np.full(len(r), self.k), np.full(m.sum(), self.k_wall)])
        return (
            0.5 * float((stretch**2 / ks).sum()),
            np.concatenate([a, wa[m] + self.first]),
            np.concatenate([b, wb[m] + self.first]),
            np.concatenate([d, wd[m]]),
            np.concatenate([r, wr[m]]),
            stretch,
        )

    def adjust_forces(self, atoms, forces):
        _, a, b, d, r, dedr = self._terms(atoms)
        f = (dedr / r)[:, None] * d
        np.add.at(forces, a, f)
        np.add.at(forces, b, -f)

    def adjust_potential_energy(self, atoms):
        return self._terms(atoms)[0]

    def adjust_momenta(self, atoms, momenta):
        pass  # a force term, not a constraint on velocities

    def get_removed_dof(self, atoms):
        return 0

    def copy(self):
        return self  # holds no state that changes

    def todict(self):
        return {"name": type(self).__name__}


# --------------------------------------------------------------------------- generation


def _n_atoms(traj: int) -> int:
    (a, b, layers), n_water = _SYSTEMS[traj % len(_SYSTEMS)]
    return a * b * layers + 3 * n_water


def _build_system(traj: int, rng: np.random.Generator) -> Atoms:
    """Trajectory ``traj``'s starting point: a Cu(111) slab with water above it, constraints set."""
    size, n_water = _SYSTEMS[traj % len(_SYSTEMS)]
    atoms = fcc111("Cu", size=size, vacuum=_VACUUM)
    atoms.pbc = True
    n_slab, cell = len(atoms), atoms.cell.array
    top = atoms.positions[:, 2].max()
    # Sites on a lateral grid ~3 Å apart, in layers 3 Å apart (alternate layers offset),
    # lowest layer 2.5 Å above the surface; molecules fill layers bottom-up in random order.
    na, nb = (max(1, int(np.linalg.norm(v) // 3.0)) for v in cell[:2])
    n_layers = -(-n_water // (na * nb))
    grid = [(ia, ib) for ia in range(na) for ib in range(nb)]
    sites = [(ia, ib, k) for k in range(n_layers) for ia, ib in rng.permutation(grid)]
    for ia, ib, k in sites[:n_water]:
        w = _WATER.copy()
        w.rotate(rng.uniform(0.0, 360.0), rng.normal(size=3), center=w.positions[0])
        frac = (np.array([ia, ib]) + 0.5 * (1 + k % 2) + rng.uniform(-0.15, 0.15, 2)) / (na, nb)
        w.translate(frac @ cell[:2] + (0.0, 0.0, top + 2.5 + 3.0 * k) - w.positions[0])
        atoms += w
    atoms.center(vacuum=_VACUUM, axis=2)
    tags = atoms.get_tags()  # fcc111 tags layers 1 (top) .. n (bottom); water gets 0
    atoms.set_constraint([FixAtoms(mask=tags == size[2]), _WaterRestraint(n_slab, n_water)])
    return atoms


def _run_trajectory(job: tuple[int, int, int]) -> tuple[int, list[Atoms]]:
    """Run trajectory ``traj`` of the workload for ``seed``; return its first ``n`` frames."""
    traj, seed, n = job
    rng = np.random.default_rng((seed, traj))
    atoms = _build_system(traj, rng)
    atoms.calc = _EMT()
    fixed = atoms.constraints[0]
    kT = units.kB * _TEMPERATURE_K  # Maxwell-Boltzmann velocities
    atoms.set_momenta(
        np.sqrt(atoms.get_masses() * kT)[:, None] * rng.standard_normal((len(atoms), 3))
    )
    md = Langevin(
        atoms, _TIMESTEP, temperature_K=_TEMPERATURE_K, friction=_FRICTION, fixcm=False, rng=rng
    )
    frames, forces = [], None
    for step in range(_BURN_IN + n):
        forces = md.step(forces)
        if step >= _BURN_IN:
            result = atoms.calc.results  # pure EMT at the current positions
            frame = Atoms(
                atoms.numbers,
                atoms.positions,
                cell=atoms.cell,
                pbc=atoms.pbc,
                constraint=fixed.copy(),
            )
            frame.calc = SinglePointCalculator(
                frame, energy=result["energy"], forces=result["forces"].copy()
            )
            frame.info.update(trajectory=traj, step=step - _BURN_IN)
            frames.append(frame)
    if not all(
        np.isfinite(f.positions).all() and np.isfinite(f.calc.results["forces"]).all()
        for f in frames
    ):
        raise RuntimeError(f"trajectory {traj} (seed {seed}) produced non-finite values")
    return traj, frames


def _generate(
    n_frames: int, seed: int, progress: bool = True, workers: int | None = None
) -> list[Atoms]:
    """Build the first ``n_frames`` frames of the reference workload (no cache).

    Trajectories run in ``workers`` processes; by default one per CPU for builds of more
    than 1,000 frames, else in this process (starting workers costs seconds of imports).
    """
    jobs = [(t, seed, len(range(t, n_frames, _N_TRAJ))) for t in range(min(n_frames, _N_TRAJ))]
    jobs.sort(key=lambda job: -_n_atoms(job[0]) * (job[2] + _BURN_IN))  # longest first
    if workers is None:
        workers = (os.cpu_count() or 1) if n_frames > 1000 else 1
    workers = min(workers, len(jobs))
    by_traj = {}
    # fork on Linux: workers start at once (spawn would re-import fastfp, numba and ASE in
    # each); they only run NumPy/matscipy code, so threads the parent may run are harmless.
    start = "fork" if sys.platform == "linux" else "spawn"
    with contextlib.ExitStack() as stack:
        run = map
        if workers > 1:
            run = stack.enter_context(
                multiprocessing.get_context(start).Pool(workers)
            ).imap_unordered
        bar = stack.enter_context(
            tqdm(total=n_frames, desc=f"building {REFERENCE}", unit="frame", disable=not progress)
        )
        for traj, frames in run(_run_trajectory, jobs):
            by_traj[traj] = frames
            bar.update(len(frames))
    return [by_traj[i % _N_TRAJ][i // _N_TRAJ] for i in range(n_frames)]


# --------------------------------------------------------------------------- cache


def _cache_dir(cache_dir) -> Path:
    return Path(cache_dir or os.environ.get("FASTFP_CACHE") or Path.home() / ".cache" / "fastfp")


def _cache_name(name: str, seed: int, n_frames: int) -> str:
    return f"{name}-seed{seed}-n{n_frames}-v{VERSION}.traj"


def _find_cached(directory: Path, name: str, seed: int, n_frames: int) -> Path | None:
    """The cache file holding at least ``n_frames`` frames (the smallest such), if any."""
    prefix, suffix = f"{name}-seed{seed}-n", f"-v{VERSION}.traj"
    sizes = []
    for path in directory.glob(f"{prefix}*{suffix}"):
        size = path.name[len(prefix) : -len(suffix)]
        if size.isdigit() and int(size) >= n_frames:
            sizes.append(int(size))
    return directory / _cache_name(name, seed, min(sizes)) if sizes else None


def _write_atomic(path: Path, frames: list[Atoms]) -> None:
    """Write ``frames`` to ``path`` (ASE .traj), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicPath(path) as tmp:
        ase.io.write(tmp, frames, format="traj")


# --------------------------------------------------------------------------- public API


def list_workloads() -> dict[str, str]:
    """Names of the workloads :func:`load_workload` knows, with a one-line description.

    Always ``water-metal``; ``oc20-test``, ``oc20-val`` and ``water-842`` only when
    :func:`shared_data_dir` finds their files.
    """
    workloads = {
        REFERENCE: f"embedded reference: {N_REFERENCE:,} MD frames of water on Cu(111), 35–164 "
        "atoms (H, O, Cu), EMT energies (eV) and forces (eV/Å); built from a seed and cached"
    }
    shared = shared_data_dir()
    for name, (filename, description) in SHARED_FILES.items():
        if shared is not None and (shared / filename).is_file():
            workloads[name] = f"{description} ({shared / filename})"
    return workloads


def is_workload(source) -> bool:
    """Whether ``source`` names a workload (``NAME`` or ``NAME:N``) rather than a path."""
    return not Path(source).exists() and str(source).partition(":")[0] in (REFERENCE, *SHARED_FILES)


def load_workload(
    name: str = REFERENCE,
    n_frames: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> list[Atoms]:
    """Frames of a named workload, each an ``ase.Atoms`` with energy and forces attached.

    Positions and cell in Å, energy (one float per frame) in eV, forces (n_atoms, 3) in
    eV/Å; read them with ``atoms.get_potential_energy()`` and
    ``atoms.get_forces(apply_constraint=False)``.

    ``water-metal`` (the default): the first ``n_frames`` (default 16,000) frames of the
    reference workload for ``seed``. Any prefix is itself a spread over all 32 MD
    trajectories, so 100 or 1,000 frames are a small but representative subset and are
    built without building the rest. The result is cached in ``cache_dir`` (default
    ``$FASTFP_CACHE`` or ``~/.cache/fastfp``), one file per size; a cached larger build
    serves smaller sizes. ``progress`` shows a tqdm bar while building.

    ``oc20-test``, ``oc20-val``, ``water-842``: the real frames in :func:`shared_data_dir`,
    all of them or the first ``n_frames``; ``seed`` and ``cache_dir`` are not used.
    """
    if n_frames is not None and (not isinstance(n_frames, (int, np.integer)) or n_frames < 1):
        raise ValueError(f"n_frames must be a positive integer, got {n_frames!r}")
    if name in SHARED_FILES:
        shared = shared_data_dir()
        if shared is None or not (shared / SHARED_FILES[name][0]).is_file():
            raise FileNotFoundError(
                f"workload {name!r} needs shared/data/{SHARED_FILES[name][0]}, which was not found "
                "(set FASTFP_SHARED to the shared folder)"
            )
        frames = _read_file(shared / SHARED_FILES[name][0])
        if n_frames is not None and n_frames > len(frames):
            raise ValueError(f"workload {name!r} has {len(frames)} frames, {n_frames} requested")
        return frames[:n_frames]
    if name != REFERENCE:
        raise ValueError(f"unknown workload {name!r}; known: {sorted([REFERENCE, *SHARED_FILES])}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n_frames = N_REFERENCE if n_frames is None else int(n_frames)
    directory = _cache_dir(cache_dir)
    cached = _find_cached(directory, name, seed, n_frames)
    if cached is not None:
        return ase.io.read(cached, index=f":{n_frames}", format="traj")
    frames = _generate(n_frames, seed, progress)
    _write_atomic(directory / _cache_name(name, seed, n_frames), frames)
    return frames


def _read_file(path: Path, n: int | None = None) -> list[Atoms]:
    """The first ``n`` (all if None) frames of one ASE-readable file; ``ValueError``
    naming the file if ASE fails."""
    try:
        frames = ase.io.read(path, index=slice(0, n))
    except Exception as err:  # ASE raises many types for unreadable input
        raise ValueError(
            f"{path}: ASE cannot read this file ({type(err).__name__}: {err})"
        ) from err
    return list(frames) if isinstance(frames, list) else [frames]


def load_frames(source: str | os.PathLike, n: int | None = None, progress: bool = False) -> list[Atoms]:
    """The first ``n`` frames (all if None; fewer if there are fewer) of ``source``, as
    ``ase.Atoms`` (positions Å, energies eV, forces eV/Å when labelled).

    ``source`` is a workload name, optionally with a size (``"water-metal:100"``,
    ``"oc20-test"``; see :func:`list_workloads`; of the reference workload only the
    frames needed are built, ``progress`` showing a bar), a file any ASE reader accepts,
    or a directory of such files (sorted by name, frames concatenated; files ASE cannot
    read are skipped with a warning).

    Raises ``FileNotFoundError`` for a path that does not exist (and is no workload name),
    ``ValueError`` naming the path for a file ASE cannot read, a directory without
    readable frames, or a source with zero frames.
    """
    path = Path(source)
    if not path.exists():
        name, _, size = str(source).partition(":")
        if name == REFERENCE or name in SHARED_FILES:
            if size and not size.isdigit():
                raise ValueError(f"{source!r}: size after ':' must be a positive integer")
            total = int(size) if size else (N_REFERENCE if name == REFERENCE else None)
            if n is not None and name == REFERENCE:
                total = min(n, total)
            frames = load_workload(name, total, progress=progress)
            return frames[:n]
        raise FileNotFoundError(
            f"{source}: no such file or directory, and not a workload name "
            f"{sorted([REFERENCE, *SHARED_FILES])}"
        )
    # AMPTorch LMDB sources (a .lmdb file or a folder of them) will be recognised here.
    if path.is_dir():
        frames, skipped = [], []
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        for file in files:
            try:
                frames += _read_file(file)
            except ValueError as err:
                skipped.append(str(err))
            if n is not None and len(frames) >= n:
                break
        if not frames:
            detail = "; ".join(skipped) if skipped else "it has no files"
            raise ValueError(f"{path}: directory has no frames ASE can read ({detail})")
        if skipped:
            warnings.warn(
                f"{path}: skipped files ASE cannot read: {'; '.join(skipped)}", stacklevel=2
            )
        return frames[:n]
    frames = _read_file(path, n)
    if not frames:
        raise ValueError(f"{path}: file contains zero frames")
    return frames


def has_labels(frames) -> bool:
    """True if there is at least one frame and every frame has an energy and forces
    (:func:`fastfp.frames.labels_of`; a ``SinglePointCalculator`` returns what it stores)."""
    frames = list(frames)
    try:
        labels_of(frames)
    except ValueError:
        return False
    return bool(frames)


def describe(frames, source) -> dict:
    """What benchmark setups need to know of ``frames`` (read from ``source``):
    ``source``, ``n_frames``, ``elements`` (sorted symbols), ``labels`` (every frame has
    an energy and forces) and ``atoms_per_frame`` (mean). Raises ``ValueError`` for no
    frames."""
    frames = list(frames)
    if not frames:
        raise ValueError(f"no frames in {source!r}")
    return {"source": str(source), "n_frames": len(frames), "elements": elements_of(frames),
            "labels": has_labels(frames), "atoms_per_frame": float(np.mean([len(a) for a in frames]))}


def supercell(frame: Atoms, target_atoms: int) -> Atoms:
    """``frame`` repeated along its first two cell vectors to about ``target_atoms``
    atoms (a slab stays a slab; bulk grows in-plane), without labels."""
    k = max(1, round(target_atoms / len(frame)))
    nx = max(1, int(np.floor(np.sqrt(k))))
    ny = max(1, round(k / nx))
    big = frame.repeat((nx, ny, 1))
    big.calc = None
    return big
