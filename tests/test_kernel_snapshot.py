"""The CPU kernels against a snapshot of the kernels before issue 22's
(``tests/data/kernel_snapshot.npz``, written by ``scripts/kernel_snapshot.py`` at
d7270f8): fingerprints and the derivative blocks' products J^T x, J y equal to 1e-12
relative (the largest difference over the array's largest entry), the blocks from
:meth:`featurize` and the products recomputed without blocks (:meth:`jacobian`) both.

One case is worse conditioned than 1e-12: GMP's derivatives with the valence-Gaussian
pseudodensities on the OC20 frames (their Gaussians partly cancel). There a rigid
translation of all atoms by 1e-7 Å, which changes nothing mathematically, changes the
products by about 1e-8 relative, in the old kernels as in the new. So the bound for an
array is the larger of 1e-12 and that change, measured here with the current kernels
(for every other array it stays at 1e-12)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED, requires_shared

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "data" / "kernel_snapshot.npz"
RTOL = 1e-12


def _script():
    spec = importlib.util.spec_from_file_location("kernel_snapshot", ROOT / "scripts" / "kernel_snapshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _script()
#: the rigid translation (Å) that measures each array's round-off floor
SHIFT = 1e-7


def _relative(value, reference):
    return np.max(np.abs(value - reference)) / np.max(np.abs(reference))


@pytest.fixture(scope="module")
def snapshot():
    with np.load(SNAPSHOT) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module", params=SCRIPT.DESCRIPTORS)
def current(request):
    """``(kind, arrays, bounds)``: the current kernels' snapshot arrays of one
    descriptor, and per key the larger of :data:`RTOL` and the relative change of the
    array when all atoms are translated by :data:`SHIFT` Å (its round-off floor)."""
    kind = request.param
    arrays = SCRIPT.compute(SHARED, descriptors=(kind,))
    moved = SCRIPT.compute(SHARED, descriptors=(kind,), shift=SHIFT)
    return kind, arrays, {key: max(RTOL, _relative(moved[key], value)) for key, value in arrays.items()}


@requires_shared
def test_snapshot_names_its_commit(snapshot):
    assert str(snapshot["commit"]).startswith("d7270f8")


@requires_shared
def test_kernels_equal_the_snapshot(snapshot, current):
    kind, arrays, bounds = current
    assert len(arrays) == 3 * len(SCRIPT.FRAMES)
    for key, value in arrays.items():
        reference = snapshot[key]
        assert value.shape == reference.shape, key
        assert _relative(value, reference) <= bounds[key], (key, _relative(value, reference), bounds[key])
    if kind != "gmp":  # only GMP's valence Gaussians on OC20 need more than 1e-12
        assert set(bounds.values()) == {RTOL}


@requires_shared
def test_recomputed_products_equal_the_snapshot(snapshot, current):
    """J^T x and J y by :meth:`jacobian` (no blocks stored) against the old kernels' blocks."""
    from fastfp.frames import pack_frames

    kind, _, bounds = current
    for name, frames, descriptor in SCRIPT.frame_sets(SHARED):
        desc = descriptor(kind)
        jacobian = desc.jacobian(pack_frames(frames, desc.numbers))
        x, y = SCRIPT.random_vectors(*snapshot[f"{kind}/{name}/fingerprints"].shape)
        for label, value in (("jt", jacobian.transposed_product(x)), ("jy", jacobian.product(y))):
            key = f"{kind}/{name}/{label}"
            assert _relative(value, snapshot[key]) <= bounds[key], (key, _relative(value, snapshot[key]), bounds[key])
