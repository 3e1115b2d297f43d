"""Neighbour pairs of a batch of frames (vesin's neighbour list, wrapped): the same pairs
and vectors as matscipy's ``neighbour_list``, AMPTorch's misses dropped alike, the
centre's own pair first and its images exact."""

import numpy as np
import pytest
from ase.geometry import complete_cell
from matscipy.neighbours import neighbour_list

from conftest import SHARED, requires_shared
from fastfp.frames import PackedFrames, pack_frames
from fastfp.neighbors import amptorch_binning_mask, neighbor_pairs


def matscipy_pairs(frames: PackedFrames, cutoff: float, amptorch_binning: bool = False):
    """(centre, neighbour, vector) rows of every frame by matscipy, AMPTorch's misses
    dropped when asked."""
    rows = []
    for k in range(frames.n_frames):
        start, stop = frames.offsets[k], frames.offsets[k + 1]
        positions = frames.positions[start:stop]
        i, j, shifts, vectors = neighbour_list("ijSD", positions=positions, cutoff=cutoff,
                                               cell=complete_cell(frames.cells[k]), pbc=frames.pbc[k])
        if amptorch_binning:
            keep = amptorch_binning_mask(positions, frames.cells[k], frames.pbc[k], cutoff, i, j, shifts)
            i, j, vectors = i[keep], j[keep], vectors[keep]
        rows.append(np.column_stack([i + start, j + start, vectors]))
    return np.concatenate(rows)


def assert_same_pairs(expected, pairs):
    got = np.column_stack([pairs.centers, pairs.j, pairs.vectors])
    assert len(got) == len(expected)

    def ordered(rows):
        return rows[np.lexsort(tuple(np.round(rows[:, c], 8) for c in range(rows.shape[1] - 1, -1, -1)))]

    np.testing.assert_allclose(ordered(got), ordered(expected), rtol=0, atol=1e-10)


def random_frame(rng, kind):
    n = int(rng.integers(1, 30))
    cell = rng.normal(size=(3, 3)) * rng.uniform(0.5, 3.0) + np.diag(rng.uniform(2.0, 15.0, 3))
    pbc = rng.random(3) < 0.6
    if kind == "zero vectors":  # the cell's non-periodic vectors left out (slabs, molecules)
        cell[~pbc] = 0.0
    fractions = rng.uniform(-0.3, 1.3, (n, 3))  # atoms outside the cell too
    if kind == "faces":  # some atoms just below a face, where AMPTorch's binning misses pairs
        fractions[rng.random(n) < 0.3, rng.integers(3)] = rng.choice([1.0, 0.0]) - 5e-8
    positions = fractions @ complete_cell(cell)
    if kind == "spread":  # far outside the cell along every axis
        positions = rng.uniform(-25.0, 25.0, (n, 3))
    return PackedFrames(positions, np.ones(n, dtype=np.int64), np.array([0, n]), cell[None], pbc[None])


@pytest.mark.parametrize("amptorch_binning", [False, True])
@pytest.mark.parametrize("kind", ["triclinic", "zero vectors", "spread", "faces"])
def test_random_geometries_match_matscipy(kind, amptorch_binning):
    """Triclinic cells smaller and larger than the cutoff, mixed periodicity, atoms
    outside the cell: the same pairs and vectors as matscipy, with and without dropping
    the pairs AMPTorch misses (frames of several such geometries at once: the frames that
    need the mask are found for the whole batch)."""
    rng = np.random.default_rng(["triclinic", "zero vectors", "spread", "faces"].index(kind))
    for _ in range(50):
        parts = [random_frame(rng, kind) for _ in range(4)]
        frames = PackedFrames(np.concatenate([p.positions for p in parts]), np.concatenate([p.numbers for p in parts]),
                              np.concatenate(([0], np.cumsum([len(p.numbers) for p in parts]))),
                              np.concatenate([p.cells for p in parts]), np.concatenate([p.pbc for p in parts]))
        cutoff = float(rng.uniform(1.0, 9.0))
        assert_same_pairs(matscipy_pairs(frames, cutoff, amptorch_binning),
                          neighbor_pairs(frames, cutoff, amptorch_binning=amptorch_binning))


@requires_shared
@pytest.mark.parametrize("amptorch_binning", [False, True])
def test_oc20_frames_match_matscipy(amptorch_binning):
    """300 real OC20 frames (adsorbates on slabs, atoms on periodic faces), with and
    without dropping the pairs AMPTorch misses."""
    import ase.io

    atoms = ase.io.read(SHARED / "data" / "oc20_300_test.traj", ":")
    frames = pack_frames(atoms, np.unique(np.concatenate([a.numbers for a in atoms])))
    assert_same_pairs(matscipy_pairs(frames, 6.0, amptorch_binning),
                      neighbor_pairs(frames, 6.0, amptorch_binning=amptorch_binning))


def test_self_pairs_come_first_and_own_images_are_exact():
    """With ``self_pairs`` each centre starts with itself at zero distance; an atom's own
    images are exactly its cell vectors wherever the atom sits."""
    cell = np.array([[2.9, 0.0, 0.0], [0.3, 3.1, 0.0], [0.2, 0.4, 3.0]])
    vectors = []
    for x in (0.0, 1e-3, 2.8999, -0.71):
        frames = PackedFrames(np.array([[x, 0.8, 2.8]]), np.ones(1, dtype=np.int64), np.array([0, 1]),
                              cell[None], np.ones((1, 3), dtype=bool))
        pairs = neighbor_pairs(frames, 4.5, self_pairs=True)
        assert pairs.j[0] == 0 and (pairs.vectors[0] == 0).all()
        vectors.append(pairs.vectors[np.lexsort(pairs.vectors.T)])
    for v in vectors[1:]:
        np.testing.assert_array_equal(v, vectors[0])
