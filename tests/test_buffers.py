"""The derivative blocks' memory is handed out again only once nothing refers to it."""

import numpy as np
import pytest

from fastfp import buffers


def _address(array):
    return array.__array_interface__["data"][0]


@pytest.fixture
def fresh_buffers(monkeypatch):
    monkeypatch.setattr(buffers, "_kept", [])


def test_memory_is_reused_only_when_nothing_refers_to_it(fresh_buffers):
    torch = pytest.importorskip("torch", reason="the tensor case needs torch")
    shape = (4, 5, 3)
    for hold in (lambda a: a[1:], torch.from_numpy, lambda a: a.reshape(-1)):  # a view, a tensor, a reshape
        array = buffers.empty(shape)
        assert array.shape == shape and array.dtype == np.float64
        where = _address(array)
        holder = hold(array)
        del array
        others = [buffers.empty(shape) for _ in range(buffers.KEEP)]
        assert where not in map(_address, others)
        del others, holder
        again = [buffers.empty(shape) for _ in range(buffers.KEEP)]  # held together: every kept buffer
        assert where in map(_address, again)
        del again


def test_kept_buffers_are_bounded(fresh_buffers, monkeypatch):
    monkeypatch.setattr(buffers, "MAX_BYTES", 1000)
    arrays = [buffers.empty((10, 3)) for _ in range(buffers.KEEP + 2)]  # all held
    assert len(buffers._kept) == buffers.KEEP
    assert len({_address(a) for a in arrays}) == len(arrays)
    large = buffers.empty((100, 3))  # above MAX_BYTES: fresh and not kept
    assert all(not np.shares_memory(large, kept) for kept in buffers._kept)
    del arrays
    larger = buffers.empty((20, 3))  # no free buffer fits: a free one is replaced
    assert len(buffers._kept) == buffers.KEEP and any(np.shares_memory(larger, kept) for kept in buffers._kept)


def test_featurize_never_overwrites_blocks_still_held(fresh_buffers, tmp_path):
    """Blocks a caller holds keep their values through later featurizations; blocks
    dropped lend their memory to the next."""
    from ase.build import bulk, molecule

    from conftest import write_pseudodensities
    from fastfp.descriptors.gmp import GMPOrderNorm

    gaussians = write_pseudodensities(tmp_path, {"Cu": [(1.0, 0.8)], "O": [(1.0, 0.5)], "H": [(1.0, 0.3)]})
    desc = GMPOrderNorm({"MCSHs": {"orders": [0, 1, 2], "sigmas": [0.5, 1.0]}, "atom_gaussians": gaussians,
                         "cutoff": 4.0}, ["H", "O", "Cu"])
    frames = [bulk("Cu", "fcc", a=3.6, cubic=True), molecule("H2O", vacuum=3.0)]
    first = desc.featurize(frames)
    kept = first.fprimes.copy()
    where = _address(first.fprimes)
    for _ in range(3):
        other = desc.featurize(frames[::-1])
        assert not np.shares_memory(other.fprimes, first.fprimes)
    np.testing.assert_array_equal(first.fprimes, kept)
    del first
    again = desc.featurize(frames)
    assert _address(again.fprimes) == where
    np.testing.assert_array_equal(again.fprimes, kept)
