"""Threaded kernels give the same bits as one thread; thread settings, ranges and chunks."""

import threading

import numpy as np
import pytest

from conftest import assert_fingerprints_equal, load_reference, requires_shared
from fastfp.amptorch import descriptors as amptorch_descriptors
from fastfp.amptorch.descriptors import GMPOrderNorm as AMPTorchGMPOrderNorm
from fastfp.descriptors.gaussian import Gaussian
from fastfp.descriptors.gmp import GMPOrderNorm
from fastfp.frames import FrameError, chunks
from fastfp.threads import balanced_ranges, calling_thread_only, num_threads, prefetched, run_ranges


@requires_shared
@pytest.mark.parametrize("name, cls, extra", [
    ("gmpordernorm_solid", GMPOrderNorm, ()),
    ("gaussian_cosine", Gaussian, ("cutoff_params",)),
])
@pytest.mark.parametrize("derivatives", [True, False])
def test_threads_give_identical_results(monkeypatch, name, cls, extra, derivatives):
    config, frames, _ = load_reference(name)
    desc = cls(config["fp_params"], config["elements"], *(config[k] for k in extra))
    results = {}
    for n in ("1", "3"):
        monkeypatch.setenv("FASTFP_NUM_THREADS", n)
        fps = desc.featurize(frames, derivatives=derivatives)
        coo = fps.coo_frames(1e-5) if derivatives else []
        results[n] = fps, coo
    assert_fingerprints_equal(results["1"][0], results["3"][0])
    for (i1, v1, s1), (i3, v3, s3) in zip(results["1"][1], results["3"][1]):
        np.testing.assert_array_equal(i1, i3)
        np.testing.assert_array_equal(v1, v3)
        assert s1 == s3


def test_balanced_ranges_cover_everything_once():
    ptr = np.concatenate(([0], np.cumsum([5, 0, 100, 1, 1, 1, 50, 0])))
    for parts in (1, 2, 3, 8, 20):
        ranges = balanced_ranges(ptr, parts)
        assert ranges[0][0] == 0 and ranges[-1][1] == len(ptr) - 1
        assert all(a < b for a, b in ranges)
        assert all(b == c for (_, b), (c, _) in zip(ranges, ranges[1:]))
        assert len(ranges) <= parts
    assert balanced_ranges(np.array([0]), 4) == [(0, 0)]


def test_num_threads_setting(monkeypatch):
    monkeypatch.setenv("FASTFP_NUM_THREADS", "2")
    assert num_threads() == 2
    monkeypatch.delenv("FASTFP_NUM_THREADS")
    assert num_threads() >= 1
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv("FASTFP_NUM_THREADS", bad)
        with pytest.raises(ValueError, match="FASTFP_NUM_THREADS"):
            num_threads()


def test_chunks_bounded_by_atoms():
    sizes = [5, 300, 700, 10, 10, 600, 1]
    got = [(start, [len(a) for a in chunk]) for start, chunk in chunks([np.zeros(n) for n in sizes], 3, max_atoms=512)]
    assert got == [(0, [5, 300, 700]), (3, [10, 10, 600]), (6, [1])]
    assert list(chunks(range(5), 2)) == [(0, [0, 1]), (2, [2, 3]), (4, [4])]


@requires_shared
@pytest.mark.parametrize("threads", ["1", "2"])
def test_featurized_chunks_in_order_and_errors_name_the_frame(monkeypatch, threads):
    """The next chunks' neighbours are searched ahead on a thread (not with one
    thread): same results in the same order as one call, and a bad frame still raises
    naming its index in the whole input."""
    monkeypatch.setenv("FASTFP_NUM_THREADS", threads)
    config, frames, _ = load_reference("gmpordernorm_solid")
    desc = AMPTorchGMPOrderNorm(config["fp_params"], config["elements"])
    monkeypatch.setattr(amptorch_descriptors, "CHUNK_ATOMS", 2 * max(len(a) for a in frames))
    whole = desc.featurize(frames, amptorch_binning=True)  # as featurized_chunks finds neighbours
    parts = list(desc.featurized_chunks(frames, derivatives=True))
    assert len(parts) > 1 and [start for start, _, _ in parts] == list(np.cumsum([0] + [len(c) for _, c, _ in parts[:-1]]))
    np.testing.assert_array_equal(np.concatenate([fps.fingerprints for _, _, fps in parts]), whole.fingerprints)
    bad = [a.copy() for a in frames]
    bad[-1].positions[0, 0] = np.nan
    with pytest.raises(FrameError, match=f"frame {len(frames) - 1}:"):
        list(desc.featurized_chunks(bad, derivatives=True))


def test_calling_thread_only(monkeypatch):
    """Inside the block every range runs in the calling thread, nested blocks included;
    the setting comes back after, also after an exception."""
    monkeypatch.setenv("FASTFP_NUM_THREADS", "4")
    ranges = [(k, k + 1) for k in range(16)]

    def thread_names():
        return set(run_ranges(lambda a, b: threading.current_thread().name, ranges))

    with calling_thread_only():
        with calling_thread_only():
            assert num_threads() == 1
        assert thread_names() == {threading.current_thread().name}
    assert num_threads() == 4
    with pytest.raises(KeyError):
        with calling_thread_only():
            raise KeyError
    assert num_threads() == 4


@pytest.mark.parametrize("threads", ["1", "2", "4"])
def test_run_ranges_runs_every_range_once_and_raises(monkeypatch, threads):
    """Every range runs exactly once, results in the ranges' order, whichever thread
    takes it; an exception in any range reaches the caller, and no range starts after."""
    monkeypatch.setenv("FASTFP_NUM_THREADS", threads)
    ranges = [(k, k + 1) for k in range(37)]
    assert run_ranges(lambda a, b: (a, b), ranges) == ranges

    def fail_at_20(a, b):
        if a == 20:
            raise RuntimeError("range 20")
        return a

    with pytest.raises(RuntimeError, match="range 20"):
        run_ranges(fail_at_20, ranges)

    events = []

    def fail_first(a, b):
        events.append("start")
        if a == 0:
            events.append("raised")
            raise RuntimeError("range 0")

    with pytest.raises(RuntimeError, match="range 0"):
        run_ranges(fail_first, ranges)
    # no range starts after one raised (but one per other thread that was about to)
    assert events[events.index("raised"):].count("start") <= int(threads) - 1


@pytest.mark.parametrize("threads", ["1", "2"])
def test_prefetched_in_order_ahead_and_raises_where_handed_over(monkeypatch, threads):
    """Each item with its result, in order; with threads the results are made on another
    thread, at most ``ahead`` items beyond the one handed over; an error comes with its
    item, and leaving early starts no more items."""
    monkeypatch.setenv("FASTFP_NUM_THREADS", threads)
    started = []

    def square(k):
        started.append((k, threading.current_thread() is threading.main_thread()))
        if k == 7:
            raise RuntimeError("item 7")
        return k * k

    handed = []
    with pytest.raises(RuntimeError, match="item 7"):
        for k, result in prefetched(square, range(10), 2):
            assert result == k * k
            assert max(s for s, _ in started) <= k + 2
            handed.append(k)
    assert handed == list(range(7))
    assert all(main == (threads == "1") for _, main in started)
    started.clear()
    for k, _ in prefetched(square, range(10), 2):
        if k == 1:
            break
    assert max(s for s, _ in started) <= 3


def test_a_forked_child_makes_its_own_threads(monkeypatch):
    """After the pool's threads started, a forked child (a DataLoader or multiprocessing
    worker) runs ranges on threads of its own instead of waiting for the parent's."""
    import multiprocessing

    monkeypatch.setenv("FASTFP_NUM_THREADS", "2")
    ranges = [(k, k + 1) for k in range(8)]
    assert run_ranges(lambda a, b: a, ranges) == list(range(8))  # the parent's pool runs
    with multiprocessing.get_context("fork").Pool(1) as pool:
        result = pool.apply_async(run_ranges, (_first, ranges))
        assert result.get(timeout=60) == list(range(8))


def _first(a, b):
    return a
