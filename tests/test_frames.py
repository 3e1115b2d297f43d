"""Labels read as ASE reads them: ``stored_labels`` (one check of all frames) hands over
exactly what ASE's getters return, and nothing where ASE would refuse."""

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from conftest import SHARED, requires_shared
from fastfp.frames import ase_label, frame_label, labels_of, stored_labels


def _labelled(n=3, seed=0):
    """``n`` small periodic frames with stored energies and forces, one atom fixed."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1, 1, k + 1))
        atoms.rattle(0.05, seed=k)
        atoms.set_constraint(FixAtoms(indices=[0]))
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()), forces=rng.normal(size=(len(atoms), 3)))
        frames.append(atoms)
    return frames


def _as_ase_returns(frames, what):
    read = "get_potential_energy" if what == "energy" else "get_forces"
    return [getattr(a, read)(apply_constraint=False) for a in frames]


def _assert_same(stored, expected):
    assert len(stored) == len(expected)
    for a, b in zip(stored, expected):
        np.testing.assert_array_equal(a, b)
        assert type(a) is type(b)


@pytest.mark.parametrize("what", ["energy", "forces"])
def test_stored_labels_are_what_ase_returns(what):
    frames = _labelled()
    _assert_same(stored_labels(frames, (what,))[what], _as_ase_returns(frames, what))
    assert stored_labels([], (what,)) == {what: []}


@pytest.mark.parametrize("what", ["energy", "forces"])
def test_ase_label_is_what_ase_returns(what):
    frames = _labelled()
    _assert_same([ase_label(a, what) for a in frames], _as_ase_returns(frames, what))


def test_an_unknown_label_is_refused_by_name():
    atoms = _labelled(1)[0]
    for read in (lambda: ase_label(atoms, "stress"), lambda: frame_label(atoms, 0, "stress")):
        with pytest.raises(ValueError, match=r"^unknown label 'stress': 'energy' or 'forces'$"):
            read()


@requires_shared
def test_stored_labels_of_real_frames():
    """OC20 frames (tags, fixed atoms, 3.7 species a frame) as read from their file."""
    frames = ase.io.read(SHARED / "data" / "oc20_300_test.traj", ":20")
    stored = stored_labels(frames, ("energy", "forces"))
    for what in ("energy", "forces"):
        _assert_same(stored[what], _as_ase_returns(frames, what))
    energies, forces = labels_of(frames)
    np.testing.assert_array_equal(energies, _as_ase_returns(frames, "energy"))
    np.testing.assert_array_equal(forces, np.concatenate(_as_ase_returns(frames, "forces")))


def _moved(frames):
    frames[1].positions[2, 0] += 1e-9


def _strained(frames):
    frames[2].cell[0, 0] += 1e-9


def _unwrapped(frames):
    frames[0].pbc = [True, True, False]


def _transmuted(frames):
    frames[1].numbers[0] = 28


def _magnetised(frames):
    frames[2].set_initial_magnetic_moments(np.zeros(len(frames[2])))


@pytest.mark.parametrize("change", [_moved, _strained, _unwrapped, _transmuted, _magnetised])
def test_a_changed_frame_is_refused_as_ase_refuses_it(change):
    """One frame changed after its labels were stored: ASE refuses its labels, so
    ``stored_labels`` hands over none, and ``labels_of`` names the frame."""
    frames = _labelled()
    change(frames)
    with pytest.raises(Exception):
        _as_ase_returns(frames, "energy")
    for names in (("energy",), ("forces",), ("energy", "forces")):
        assert stored_labels(frames, names) is None
    with pytest.raises(ValueError, match=r"frame 1\d: no energy"):
        labels_of(frames, first_index=10)


def test_a_change_within_ases_tolerance_keeps_the_labels():
    frames = _labelled()
    frames[1].positions[2, 0] += 5e-16  # within compare_atoms' 1e-15
    _as_ase_returns(frames, "forces")  # ASE hands them over
    _assert_same(stored_labels(frames, ("forces",))["forces"], _as_ase_returns(frames, "forces"))


class _Shifted(SinglePointCalculator):
    """A stored energy that ASE's getter hands over shifted: not the stored result."""

    def get_property(self, name, atoms=None, allow_calculation=True):
        value = super().get_property(name, atoms, allow_calculation)
        return value + 1.0 if name == "energy" else value


def test_other_calculators_and_missing_results_are_left_to_ase():
    for calc in (EMT(), _Shifted):
        frames = _labelled()
        frames[0].calc = calc if isinstance(calc, EMT) else calc(frames[0], **frames[0].calc.results)
        assert stored_labels(frames, ("energy",)) is None
        energies, _ = labels_of(frames)
        assert energies[0] == frames[0].get_potential_energy()
    frames = _labelled()
    frames[2].calc = SinglePointCalculator(frames[2], energy=1.0)
    assert stored_labels(frames, ("energy",)) is not None
    assert stored_labels(frames, ("forces",)) is None
    assert stored_labels(frames, ("energy", "forces")) is None
    with pytest.raises(ValueError, match="frame 2: no forces"):
        labels_of(frames)


def test_labels_of_still_refuses_non_finite_labels():
    frames = _labelled()
    frames[1].calc.results["energy"] = np.nan
    assert stored_labels(frames, ("energy",)) is not None
    with pytest.raises(ValueError, match="frame 1: energy missing, of the wrong shape or not finite"):
        labels_of(frames)
