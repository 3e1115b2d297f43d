"""Peak memory (resident set) of featurization and end-to-end preprocessing.

asv's ``peakmem_`` includes what ``setup`` allocated (the frames, imports); each class
has a ``peakmem_reference`` that does nothing after the same setup, the baseline to
subtract."""

from fastfp.harness import stages

from .common import BACKENDS, FRAMES, Benchmark, bench_frames


class FeaturizeMemory(Benchmark):
    """GMPOrderNorm fingerprints with derivatives (``prepare_fingerprints``, 256 frames
    per call)."""

    params = [BACKENDS, FRAMES]
    param_names = ["backend", "frames"]

    def setup(self, info, backend, frames):
        images = bench_frames(info, frames, backend)
        self.run = stages.build("featurize", backend, images, descriptor="gmpordernorm", derivatives=True,
                                elements=info["elements"])

    def peakmem_featurize(self, info, backend, frames):
        self.run()

    def peakmem_reference(self, info, backend, frames):
        pass


class PreprocessMemory(Benchmark):
    """End to end: ``AtomsDataset(frames, ...)`` without / with ``install()``."""

    params = [BACKENDS, FRAMES]
    param_names = ["backend", "frames"]

    def setup(self, info, backend, frames):
        images = bench_frames(info, frames, backend, labels=True)
        self.run = stages.build("preprocess", backend, images, descriptor="gmpordernorm",
                                elements=info["elements"])

    def peakmem_preprocess(self, info, backend, frames):
        self.run()

    def peakmem_reference(self, info, backend, frames):
        pass
