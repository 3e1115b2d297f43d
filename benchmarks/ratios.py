"""Ratios of times measured in the same process, free of machine-to-machine noise:
AMPTorch time / fastfp time (one AMPTorch run, the best of up to three fastfp runs), and
how fastfp scales with threads and with the atoms of a frame."""

import time
from unittest import mock

import numpy as np

import fastfp.threads
from fastfp.harness import stages
from fastfp.harness.roofs import multiply_add
from fastfp.threads import calling_thread_only, num_threads, run_ranges

from .common import FRAMES, Benchmark, atoms_run, best_time, stage_run


class _Ratio(Benchmark):
    """The ratio of one stage's times (or of ``amptorch_stage``'s for AMPTorch), labelled
    with the stage's title."""

    stage = ""
    #: the stage AMPTorch's time comes from (default: ``stage``)
    amptorch_stage = ""
    options: dict = {}
    params = [FRAMES]
    param_names = ["frames"]
    unit = "AMPTorch time / fastfp time"
    repeat = 1
    quick = False  # the summary computes the speed-up from the times instead
    #: the table label (default: the stage's title)
    title = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        getattr(cls, f"track_{cls.stage}_ratio").pretty_name = cls.title or stages.STAGES[cls.stage].title

    def prepare(self, info, frames):
        self.runs = {"amptorch": stage_run(self.amptorch_stage or self.stage, info, "amptorch", frames, **self.options),
                     "fastfp": stage_run(self.stage, info, "fastfp", frames, **self.options)}

    def _ratio(self):
        amptorch = best_time(self.runs["amptorch"], repeat=1)
        return amptorch / best_time(self.runs["fastfp"])


class FeaturizeRatio(_Ratio):
    """GMPOrderNorm fingerprints with derivatives."""

    stage = "featurize"
    options = {"descriptor": "gmpordernorm", "derivatives": True}
    title = "featurize gmpordernorm with derivatives"

    def track_featurize_ratio(self, info, frames):
        return self._ratio()


class PreprocessRatio(_Ratio):
    """End-to-end preprocessing (``AtomsDataset``) without / with ``install()``."""

    stage = "preprocess"

    def track_preprocess_ratio(self, info, frames):
        return self._ratio()


class ForceContractionRatio(_Ratio):
    """Force contraction, forward + backward, on every batch of 16."""

    stage = "force_contraction"

    def track_force_contraction_ratio(self, info, frames):
        return self._ratio()


class TrainEpochRatio(_Ratio):
    """One training epoch without / with ``install()``."""

    stage = "train_epoch"

    def track_train_epoch_ratio(self, info, frames):
        return self._ratio()


class TrainOnTheFlyRatio(_Ratio):
    """AMPTorch's stored-path training epoch (preprocessing excluded) against fastfp's
    epoch on the fly (featurization included)."""

    stage = "train_epoch_on_the_fly"
    amptorch_stage = "train_epoch"
    title = "training epoch on the fly (AMPTorch: stored)"

    def track_train_epoch_on_the_fly_ratio(self, info, frames):
        return self._ratio()


class PatchedRatio(Benchmark):
    """AMPTorch with fastfp's patch series (``config["dataset"]["fp_backend"] = "fastfp"``,
    its worker process) against unpatched AMPTorch with ``fastfp.amptorch.install()``
    (this process), in the same run: the two ways into the same fastfp hooks. Timed by
    :func:`alternated_ratio`, three times each; 1.0 is equal speed."""

    params = [["preprocess", "train_epoch"], FRAMES]
    param_names = ["stage", "frames"]
    unit = "patched time / install() time"
    repeat = 1
    quick = False

    def prepare(self, info, stage, frames):
        self.runs = [stage_run(stage, info, backend, frames) for backend in ("amptorch-patched", "fastfp")]

    def track_patched_ratio(self, info, stage, frames):
        return alternated_ratio(*self.runs, pairs=3)

    track_patched_ratio.pretty_name = "{stage}: patched AMPTorch / install()"


def alternated_ratio(numerator, denominator, pairs: int = 5, budget: float = 60.0) -> float:
    """Time of ``numerator()`` / time of ``denominator()``: the two are timed alternately,
    ``pairs`` times each (fewer once ``budget`` seconds are spent), and the shortest of
    each compared, so that a change in the machine's load meets both alike."""
    first = second = float("inf")
    start = time.perf_counter()
    for _ in range(pairs):
        first = min(first, best_time(numerator, repeat=1))
        second = min(second, best_time(denominator, repeat=1))
        if time.perf_counter() - start > budget:
            break
    return first / second


def threads_ratio(run, pairs: int = 5, budget: float = 60.0) -> float:
    """One-thread time / default-threads time of ``run()`` (:func:`alternated_ratio`)."""

    def one_thread():
        with calling_thread_only():
            return run()

    return alternated_ratio(one_thread, run, pairs, budget)


class ThreadsRatio(Benchmark):
    """fastfp on one thread (:func:`fastfp.threads.calling_thread_only`, as with
    ``FASTFP_NUM_THREADS=1``) against its default threads (every CPU the process may
    use), both in this process: how its work scales with threads.
    Featurization with derivatives (``prepare_fingerprints``) and end-to-end
    preprocessing (``AtomsDataset``, or what it does under ``install()`` without AMPTorch).
    Timed by :func:`threads_ratio`."""

    params = [["featurize", "preprocess"], FRAMES]
    param_names = ["stage", "frames"]
    unit = "one-thread time / default-threads time"
    repeat = 1
    quick = False

    def prepare(self, info, stage, frames):
        options = {"descriptor": "gmpordernorm", "derivatives": True} if stage == "featurize" else {}
        self.run = stage_run(stage, info, "fastfp", frames, **options)

    def track_threads_ratio(self, info, stage, frames):
        return threads_ratio(self.run)

    track_threads_ratio.pretty_name = "{stage}: one thread / default threads"

    def track_serial_share(self, info, stage, frames):
        """The share of a default-threads call in which the calling thread works outside
        the ranges it shares with the kernel threads (:func:`fastfp.threads.run_ranges`):
        its Python work (AMPTorch's ``Data`` objects, ASE's label look-ups, the chunk
        bookkeeping), serial code, and waiting for the neighbour search thread. Of the
        call with the shortest time, of three.

        Amdahl's law, with this share s: if the rest of the call runs c times faster than
        on one thread (c at most :class:`ThreadsCeiling`'s ratio), the thread ratio is
        c - (c - 1) s, and 1.6x needs s <= (c - 1.6) / (c - 1). (About: the search thread
        may work while the calling thread is alone.)"""
        calls = []
        for _ in range(3):
            inside = [0.0]

            def timed(func, ranges):
                t0 = time.perf_counter()
                try:
                    return run_ranges(func, ranges)
                finally:
                    inside[0] += time.perf_counter() - t0

            with mock.patch.object(fastfp.threads, "run_ranges", timed):
                wall = best_time(self.run, repeat=1)
            calls.append((wall, (wall - inside[0]) / wall))
        return min(calls)[1]

    track_serial_share.pretty_name = "{stage}: calling thread alone"
    track_serial_share.unit = "share of the default-threads time"


class ThreadsCeiling(Benchmark):
    """:class:`ThreadsRatio` for a loop of vectorised multiply-adds on 32 KiB of data per
    thread (L1 cache), one copy per default thread, on :func:`fastfp.threads.run_ranges`
    (one thread runs every copy): what threads can give compute-bound code like fastfp's
    kernels on these CPUs. On separate cores it comes near the number of threads; it
    stays lower where CPUs share a core's arithmetic units (hyper-threads, as a virtual
    machine's CPUs may be)."""

    unit = "one-thread time / default-threads time"
    repeat = 1
    quick = False

    def prepare(self, info):
        self.data = [(np.random.default_rng(k).random(2048), np.zeros(2048)) for k in range(num_threads())]
        self.run = lambda: run_ranges(lambda k, _: multiply_add(*self.data[k], 250_000),
                                      [(k, k + 1) for k in range(len(self.data))])
        self.run()  # compiles

    def track_threads_ceiling(self, info):
        return threads_ratio(self.run)

    track_threads_ceiling.pretty_name = "vectorised multiply-adds (L1 cache): one thread / default threads"


class AtomsRatio(Benchmark):
    """Featurization with derivatives (GMPOrderNorm, default threads) of one frame of
    about N atoms against one of about 500 (frame 0 of the frames repeated in-plane), in
    this process: how the cost of a frame grows with its atoms."""

    params = [[4000]]
    param_names = ["atoms"]
    unit = "time / 500-atom time"
    repeat = 1
    quick = False

    def prepare(self, info, atoms):
        self.runs = [atoms_run(info, "fastfp", n, "gmpordernorm") for n in (500, atoms)]

    def track_atoms_ratio(self, info, atoms):
        small, large = (best_time(run) for run in self.runs)
        return large / small

    track_atoms_ratio.pretty_name = "featurize gmpordernorm with derivatives, one frame / a 500-atom frame"
