"""Validation and packing of frames (ASE ``Atoms``) into flat arrays.

Every descriptor starts here: a list of frames becomes one :class:`PackedFrames`
(positions of all atoms concatenated, per-frame offsets, cells and pbc), after
checks that name the offending frame.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
from ase.data import atomic_numbers as _ATOMIC_NUMBERS, chemical_symbols

from .errors import FrameError


@dataclass(frozen=True)
class PackedFrames:
    """Frames concatenated into flat arrays.

    Attributes
    ----------
    positions : (n_atoms_total, 3) float64, Å
    numbers : (n_atoms_total,) int64, atomic numbers
    offsets : (n_frames + 1,) int64; atoms of frame k are ``offsets[k]:offsets[k+1]``
    cells : (n_frames, 3, 3) float64, Å, lattice vectors as rows
    pbc : (n_frames, 3) bool
    """

    positions: np.ndarray
    numbers: np.ndarray
    offsets: np.ndarray
    cells: np.ndarray
    pbc: np.ndarray

    @property
    def n_frames(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    def slice(self, start: int, stop: int) -> "PackedFrames":
        """Frames ``start:stop`` (views of these arrays, offsets from 0)."""
        a0, a1 = self.offsets[start], self.offsets[stop]
        return PackedFrames(self.positions[a0:a1], self.numbers[a0:a1], self.offsets[start : stop + 1] - a0,
                            self.cells[start:stop], self.pbc[start:stop])


def element_numbers(elements: Sequence[str]) -> np.ndarray:
    """Atomic numbers of chemical symbols; raises ``ValueError`` for an unknown symbol."""
    unknown = [el for el in elements if el not in _ATOMIC_NUMBERS or el == "X"]
    if unknown:
        raise ValueError(f"unknown chemical element(s) {unknown}")
    return np.array([_ATOMIC_NUMBERS[el] for el in elements], dtype=np.int64)


def check_frame(index: int, numbers, positions, cell, pbc, allowed: np.ndarray) -> None:
    """Raise :class:`FrameError` naming frame ``index`` if it cannot be featurized.

    Checks: at least one atom; finite positions; elements among ``allowed``
    (atomic numbers); periodic lattice vectors finite and linearly independent.
    """
    if len(numbers) == 0:
        raise FrameError(f"frame {index}: empty frame (no atoms)")
    bad = ~np.isfinite(positions).all(axis=1)
    if bad.any():
        raise FrameError(
            f"frame {index}: non-finite (NaN or infinite) position for atom(s) "
            f"{np.flatnonzero(bad)[:10].tolist()}"
        )
    foreign = np.setdiff1d(numbers, allowed)
    if len(foreign):
        symbols = [chemical_symbols[z] for z in foreign]
        known = [chemical_symbols[z] for z in allowed]
        raise FrameError(
            f"frame {index}: element(s) {symbols} not in the descriptor's elements {known}"
        )
    periodic = cell[np.asarray(pbc, dtype=bool)]
    if len(periodic):
        if not np.isfinite(periodic).all():
            raise FrameError(f"frame {index}: non-finite periodic cell vectors {periodic.tolist()}")
        gram = periodic @ periodic.T
        scale = max(float(np.max(np.diag(gram))), 1e-300)
        if abs(np.linalg.det(gram)) <= 1e-12 * scale ** len(periodic):
            raise FrameError(
                f"frame {index}: periodic cell has zero volume (pbc={np.asarray(pbc).tolist()}, "
                f"cell={cell.tolist()})"
            )


def pack_frames(frames: Sequence, allowed: np.ndarray, *, first_index: int = 0) -> PackedFrames:
    """Validate ``frames`` (ASE ``Atoms``) and concatenate them.

    ``allowed`` holds the atomic numbers the descriptor knows; ``first_index`` is
    added to frame numbers in error messages (for frames streamed in chunks).
    Raises :class:`FrameError` for the first bad frame (:func:`check_frame`'s checks, made
    on the whole batch at once).
    """
    if len(frames) == 0:
        raise ValueError("no frames given")
    counts = np.fromiter((len(a) for a in frames), dtype=np.int64, count=len(frames))
    offsets = np.concatenate(([0], np.cumsum(counts)))
    positions = np.empty((offsets[-1], 3))
    numbers = np.empty(offsets[-1], dtype=np.int64)
    cells = np.empty((len(frames), 3, 3))
    pbc = np.empty((len(frames), 3), dtype=bool)
    for k, atoms in enumerate(frames):
        sl = slice(offsets[k], offsets[k + 1])
        positions[sl] = atoms.positions
        numbers[sl] = atoms.numbers
        cells[k] = atoms.cell.array
        pbc[k] = atoms.pbc
    packed = PackedFrames(positions, numbers, offsets, cells, pbc)
    check_frames(packed, allowed, first_index + np.arange(len(frames)))
    return packed


def check_frames(packed: PackedFrames, allowed: np.ndarray, index) -> None:
    """Raise :class:`FrameError` for the first frame of ``packed`` that :func:`check_frame`
    refuses (its checks made on all frames at once), naming frame k ``index[k]`` (the
    numbers the caller knows the frames by)."""
    for k in np.flatnonzero(_failing(packed, allowed)):  # check_frame raises for the first
        sl = slice(packed.offsets[k], packed.offsets[k + 1])
        check_frame(int(index[k]), packed.numbers[sl], packed.positions[sl], packed.cells[k], packed.pbc[k], allowed)


def _failing(packed: PackedFrames, allowed: np.ndarray) -> np.ndarray:
    """(n_frames,) bool: the frames :func:`check_frame` refuses, found for all frames at
    once (no frame it refuses is missed)."""
    counts = np.diff(packed.offsets)
    bad_atoms = ~np.isfinite(packed.positions).all(axis=1) | ~np.isin(packed.numbers, allowed)
    failing = (counts == 0) | (np.bincount(np.repeat(np.arange(len(counts)), counts)[bad_atoms],
                                           minlength=len(counts)) > 0)
    for pattern in np.unique(packed.pbc, axis=0):  # periodic cell vectors, by pbc pattern
        n_periodic = int(pattern.sum())
        if n_periodic == 0:
            continue
        frames = np.flatnonzero((packed.pbc == pattern).all(axis=1))
        periodic = packed.cells[frames][:, pattern]
        with np.errstate(invalid="ignore", over="ignore"):
            gram = periodic @ periodic.transpose(0, 2, 1)
            scale = np.maximum(np.diagonal(gram, axis1=1, axis2=2).max(axis=1), 1e-300)
            flat = ~(np.abs(np.linalg.det(gram)) > 1e-12 * scale**n_periodic)  # NaN counts as flat
        failing[frames] |= ~np.isfinite(periodic).all(axis=(1, 2)) | flat
    return failing


def chunks(frames: Iterable, size: int, *, convert: Callable = lambda a: a, max_atoms: int | None = None):
    """``(index of the first frame, [convert(frame), ...])`` for ``size`` frames at a
    time, reading ``frames`` lazily; with ``max_atoms``, a chunk also ends once it holds
    that many atoms (it always holds at least one frame)."""
    it = iter(frames)
    first = 0
    while True:
        if max_atoms is None:
            chunk = [convert(a) for a in itertools.islice(it, size)]
        else:
            chunk, atoms = [], 0
            for a in itertools.islice(it, size):
                chunk.append(convert(a))
                atoms += len(chunk[-1])
                if atoms >= max_atoms:
                    break
        if not chunk:
            return
        yield first, chunk
        first += len(chunk)


def elements_of(frames: Iterable) -> list[str]:
    """Sorted chemical symbols of the atoms in ``frames`` (read once, lazily: anything
    with ``numbers``, such as ASE ``Atoms`` or ``ase.db`` rows). Raises ``ValueError``
    when there are no frames."""
    seen: set[int] = set()
    n = 0
    for atoms in frames:
        seen.update(np.unique(atoms.numbers).tolist())
        n += 1
    if n == 0:
        raise ValueError("no frames given")
    return sorted(chemical_symbols[z] for z in seen)


def _check_label(what: str) -> None:
    """``ValueError`` unless ``what`` is a label fastfp reads: ``"energy"`` or ``"forces"``."""
    if what not in ("energy", "forces"):
        raise ValueError(f"unknown label {what!r}: 'energy' or 'forces'")


def ase_label(atoms, what: str):
    """A frame's label as AMPTorch reads it from ASE: ``"energy"``,
    ``atoms.get_potential_energy(apply_constraint=False)`` (eV), or ``"forces"``,
    ``atoms.get_forces(apply_constraint=False)`` ((n_atoms, 3) eV/Å: fixed atoms keep
    their forces). Raises ``ValueError`` for another ``what``, else what ASE raises (no
    calculator, a property it lacks, a frame changed since its results were stored)."""
    _check_label(what)
    read = atoms.get_potential_energy if what == "energy" else atoms.get_forces
    return read(apply_constraint=False)


def frame_label(atoms, index: int, what: str):
    """The energy (``what="energy"``: a float, eV) or forces (``"forces"``: (n_atoms, 3)
    float64, eV/Å) of frame ``index``, read as AMPTorch reads them
    (``apply_constraint=False``: fixed atoms keep their forces). Raises ``ValueError``
    naming the frame when the label is missing, of the wrong shape or not finite."""
    _check_label(what)  # here, not reported below as a frame without the label
    try:
        value = ase_label(atoms, what)
    except Exception as exc:  # no calculator, or a calculator without this property
        raise ValueError(f"frame {index}: no {what} ({type(exc).__name__}: {exc})") from None
    array = np.asarray(np.nan if value is None else value, dtype=np.float64)
    if array.shape != (() if what == "energy" else (len(atoms), 3)) or not np.isfinite(array).all():
        raise ValueError(f"frame {index}: {what} missing, of the wrong shape or not finite")
    return float(array) if what == "energy" else array


#: the tolerance of the comparison ASE's calculators make before they hand a result over
#: (``Calculator.check_state``'s default, Å for positions)
_STATE_TOLERANCE = 1e-15


def stored_labels(frames: Sequence, names: Sequence[str]) -> dict[str, list] | None:
    """What ``atoms.get_potential_energy(apply_constraint=False)`` (name ``"energy"``:
    eV) and ``atoms.get_forces(apply_constraint=False)`` (``"forces"``: (n_atoms, 3) eV/Å,
    the calculator's array itself, not a copy) return for every frame of ``frames`` (ASE
    ``Atoms``): ``{name: [value of each frame]}`` for each of ``names``, when every
    frame's calculator is ASE's ``SinglePointCalculator`` (frames read from files)
    holding those results; else None, and the caller asks ASE frame by frame (which
    raises as ASE does).

    ASE hands a stored result over only after comparing the frame with the calculator's
    copy of it (``SinglePointCalculator.get_property``: ``check_state``, that is
    ``ase.calculators.calculator.compare_atoms``: cell, pbc and each per-atom array of
    ``all_changes`` within 1e-15 absolute): NumPy calls on small arrays, per frame and
    label, whose overhead weighed in fastfp's preprocessing and on-the-fly set-up. The
    same comparison is made here once for all frames and all ``names``, one array
    comparison per property; where any frame differs, None.
    """
    from ase.calculators.singlepoint import SinglePointCalculator

    if not names:  # nothing asked of ASE, nothing to compare
        return {}
    frames = list(frames)
    for atoms in frames:
        calc = getattr(atoms, "calc", None)
        if type(calc) is not SinglePointCalculator or calc.atoms is None \
                or not all(name in calc.results for name in names) or set(getattr(calc, "ignored_changes", ())):
            return None
    # a few thousand frames at a time: the arrays compared stay small beside the frames
    if not all(_unchanged(frames[k : k + _CHECKED_FRAMES]) for k in range(0, len(frames), _CHECKED_FRAMES)):
        return None
    return {name: [atoms.calc.results[name] for atoms in frames] for name in names}


#: frames compared at once by :func:`stored_labels`
_CHECKED_FRAMES = 2048


def _unchanged(frames: list) -> bool:
    """Whether no frame differs from its calculator's copy by what ``compare_atoms``
    compares: cell and pbc, and the per-atom arrays of ``all_changes`` (both or neither
    of a frame and its copy holding each, the same names in every frame), to 1e-15
    absolute; one array comparison per property."""
    from ase.calculators.calculator import all_changes

    copies = [atoms.calc.atoms for atoms in frames]
    names = set(all_changes) - {"cell", "pbc"}
    held = {frozenset(names & set(a.arrays)) for pair in zip(frames, copies) for a in pair}
    if len(held) > 1:
        return False
    compared = [(np.array([a.cell.array for a in frames]), np.array([a.cell.array for a in copies])),
                (np.array([a.pbc for a in frames]), np.array([a.pbc for a in copies]))]
    for name in sorted(held.pop() if held else ()):
        now = [a.arrays[name] for a in frames]
        then = [a.arrays[name] for a in copies]
        if any(x.shape != y.shape for x, y in zip(now, then)):
            return False
        compared.append((np.concatenate(now), np.concatenate(then)))
    # the copies are most often equal: that test first, the tolerance's only where they differ
    return all(np.array_equal(x, y) or np.allclose(x, y, rtol=0, atol=_STATE_TOLERANCE) for x, y in compared)


def labels_of(frames: Sequence, *, first_index: int = 0, forces: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Energies (n_frames,) float64, eV, and with ``forces`` the forces of all atoms
    (n_atoms, 3) float64, eV/Å (else None), of ``frames`` in order (:func:`frame_label`;
    :func:`stored_labels` where it can). Every energy is read before any force; errors
    number the frames from ``first_index``. Raises ``ValueError`` naming the first frame
    whose label is missing, of the wrong shape or not finite."""
    frames = list(frames)
    stored = stored_labels(frames, ("energy", "forces") if forces else ("energy",))
    energies = _checked(frames, first_index, "energy", stored)
    if not forces:
        return energies, None
    parts = _checked(frames, first_index, "forces", stored)
    return energies, np.concatenate(parts) if parts else np.empty((0, 3))


def _checked(frames: list, first_index: int, what: str, stored: dict | None):
    """:func:`labels_of`'s ``what`` of every frame: energies as an array, forces as a
    list of arrays; from ``stored`` (:func:`stored_labels`, or None) where they are all
    finite and of their frame's shape, else frame by frame (:func:`frame_label` raises for
    the first bad one)."""
    if stored is not None:
        stored = stored[what]
        try:
            if what == "energy":
                values = np.array(stored, dtype=np.float64)
                if values.shape == (len(frames),) and np.isfinite(values).all():
                    return values
            else:
                values = [np.asarray(v, dtype=np.float64) for v in stored]
                if all(v.shape == (len(a), 3) for v, a in zip(values, frames)) \
                        and (not values or np.isfinite(np.concatenate(values)).all()):
                    return values
        except (TypeError, ValueError):  # not numbers: frame_label names the frame
            pass
    values = [frame_label(a, first_index + k, what) for k, a in enumerate(frames)]
    return np.array(values, dtype=np.float64) if what == "energy" else values
