"""Derivatives in on-the-fly training, stored or recomputed: the force contraction and
its backward from derivative blocks (featurized with the batch) against the same
products recomputed by the kernels (fastfp.jacobian, nothing stored), alone and with
what each needs featurized per batch; and fastfp's own featurization per batch of 16
on one thread (the kernels' speed without AMPTorch's output format), and its
neighbour search alone."""

from fastfp.config import build_descriptor
from fastfp.frames import pack_frames
from fastfp.harness import settings, workloads
from fastfp.harness.backends import StageUnavailable
from fastfp.harness.stages import _torch_setup
from fastfp.threads import calling_thread_only, single_threaded_libraries

from .common import BACKENDS, DESCRIPTORS, FRAMES, Benchmark, _check_frames

#: frames per batch, as training takes them
BATCH = 16


def _batches(n):
    return [list(range(start, min(start + BATCH, n))) for start in range(0, n, BATCH)]


def _fastfp_only(backend: str, what: str) -> None:
    if backend != "fastfp":
        raise StageUnavailable(f"{what} are fastfp's own (AMPTorch's counterparts: {backend} rows of "
                               "pipeline.ForceContraction and featurize.Featurize)")


def _own_frames(info, backend: str, descriptor: str, frames: int, what: str):
    """``(the first frames of the workload, the descriptor)`` for a benchmark of fastfp's
    own ``what`` (other backends skip)."""
    _fastfp_only(backend, what)
    _check_frames(info, frames, "fastfp", labels=False)
    return (workloads.load_frames(info["source"], frames),
            build_descriptor(settings.descriptor_config(descriptor, info["elements"])))


class _OnTheFlyBatches(Benchmark):
    """GMPOrderNorm on-the-fly batches of 16 (``OnTheFlyDataset.batch``), ``fprimes``
    "blocks" or "recomputed": ``self.step(batch)`` is forces from random dE/dG, a loss of
    the forces and its ``backward()``; ``self.batches`` the frames' batches."""

    params = [BACKENDS, ["blocks", "recomputed"], FRAMES]
    param_names = ["backend", "fprimes", "frames"]

    def prepare(self, info, backend, fprimes, frames):
        _fastfp_only(backend, "on-the-fly batches and recomputed derivatives")
        torch = _torch_setup()  # float64, as AtomsTrainer
        _check_frames(info, frames, "fastfp", labels=True)
        from fastfp.amptorch.descriptors import construct_descriptor
        from fastfp.amptorch.forces import contract_forces, warm_up
        from fastfp.amptorch.onthefly import OnTheFlyDataset
        from fastfp.config import descriptor_setup

        loaded = workloads.load_frames(info["source"], frames)
        config = settings.descriptor_config("gmpordernorm", info["elements"])
        self.dataset = OnTheFlyDataset(loaded, construct_descriptor(descriptor_setup(config)), progress=False,
                                       fprimes=fprimes)
        warm_up()
        generator = torch.Generator().manual_seed(0)

        def step(batch):
            gradients = torch.randn(batch.fingerprint.shape, generator=generator, requires_grad=True)
            (contract_forces(batch.fprimes, gradients) ** 2).sum().backward()

        self.step = step
        self.batches = _batches(frames)
        step(self.dataset.batch(self.batches[0]))  # the compiled kernels, loaded outside the timing


class Contraction(_OnTheFlyBatches):
    """The force contraction and its backward for every batch, the batches made in setup
    (all of them held at once: with "blocks", their derivative blocks, about 3.8 MB per
    frame of the default workload, skip beyond the memory budget)."""

    def prepare(self, info, backend, fprimes, frames):
        super().prepare(info, backend, fprimes, frames)
        first = self.dataset.batch(self.batches[0])
        if fprimes == "blocks":
            per_frame = first.fprimes.fprimes.nbytes / len(self.batches[0])
            settings.check_memory(per_frame * frames, f"holding the derivative blocks of {frames} frames' batches")
        ready = [first] + [self.dataset.batch(k) for k in self.batches[1:]]
        self.contraction = lambda: [self.step(batch) for batch in ready]

    def time_contraction(self, info, backend, fprimes, frames):
        self.contraction()

    time_contraction.pretty_name = "force contraction + backward, fprimes {fprimes}"


class BatchAndContraction(_OnTheFlyBatches):
    """Each batch made (featurization with derivative blocks, or fingerprints and the
    neighbour pairs), then its force contraction and backward: the time, and the peak
    memory (``peakmem_reference``: the same process after setup alone)."""

    def _run(self):
        for k in self.batches:
            self.step(self.dataset.batch(k))

    def time_batch_and_contraction(self, info, backend, fprimes, frames):
        self._run()

    def peakmem_batch_and_contraction(self, info, backend, fprimes, frames):
        self._run()

    def peakmem_reference(self, info, backend, fprimes, frames):
        pass

    time_batch_and_contraction.pretty_name = "on-the-fly batch + force contraction + backward, fprimes {fprimes}"
    peakmem_batch_and_contraction.pretty_name = time_batch_and_contraction.pretty_name


class FeaturizeOneThread(Benchmark):
    """``Descriptor.featurize`` with derivatives, batches of 16 frames, on one thread
    (:func:`fastfp.threads.calling_thread_only`): divide by the frames for the time per
    frame of the kernels, the neighbour search and the blocks' layout."""

    params = [BACKENDS, DESCRIPTORS, FRAMES]
    param_names = ["backend", "descriptor", "frames"]

    def prepare(self, info, backend, descriptor, frames):
        loaded, desc = _own_frames(info, backend, descriptor, frames, "Descriptor.featurize's blocks")
        desc.featurize(loaded[:2])  # the compiled kernels, loaded outside the timing

        def run():
            with calling_thread_only():
                for k in _batches(len(loaded)):
                    desc.featurize(loaded[k[0] : k[-1] + 1])

        self.run = run

    def time_featurize_one_thread(self, info, backend, descriptor, frames):
        self.run()

    time_featurize_one_thread.pretty_name = "featurize {descriptor} with derivatives, batches of 16, one thread"


class NeighbourSearchOneThread(Benchmark):
    """``Descriptor.neighbor_pairs`` with AMPTorch's binning (as on-the-fly batches and
    AMPTorch's featurization search), batches of 16 packed frames, on one thread: the
    neighbour search's share of :class:`FeaturizeOneThread` (vesin and fastfp's work
    around it)."""

    params = [BACKENDS, DESCRIPTORS, FRAMES]
    param_names = ["backend", "descriptor", "frames"]

    def prepare(self, info, backend, descriptor, frames):
        loaded, desc = _own_frames(info, backend, descriptor, frames, "Descriptor.neighbor_pairs's pairs")
        packed = [pack_frames(loaded[k[0] : k[-1] + 1], desc.numbers) for k in _batches(len(loaded))]
        desc.neighbor_pairs(packed[0], amptorch_binning=True)  # the compiled grouping, loaded outside the timing

        def run():
            with calling_thread_only(), single_threaded_libraries():
                for batch in packed:
                    desc.neighbor_pairs(batch, amptorch_binning=True)

        self.run = run

    def time_neighbour_search_one_thread(self, info, backend, descriptor, frames):
        self.run()

    time_neighbour_search_one_thread.pretty_name = ("neighbour search for {descriptor}, AMPTorch's binning, batches of "
                                                    "16, one thread")
