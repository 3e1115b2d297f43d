"""Peak memory (resident set) of featurization, end-to-end preprocessing and training on
the fly.

asv's ``peakmem_`` includes what ``setup`` allocated (the frames, imports); each class
has a ``peakmem_reference`` that does nothing after the same setup, the baseline to
subtract."""

from fastfp.harness import stages

from .common import BACKENDS, FRAMES, Benchmark, stage_run


class FeaturizeMemory(Benchmark):
    """GMPOrderNorm fingerprints with derivatives (``prepare_fingerprints``, 256 frames
    per call)."""

    params = [BACKENDS, FRAMES]
    param_names = ["backend", "frames"]

    def prepare(self, info, backend, frames):
        self.run = stage_run("featurize", info, backend, frames, descriptor="gmpordernorm", derivatives=True)

    def peakmem_featurize(self, info, backend, frames):
        self.run()

    peakmem_featurize.pretty_name = "featurize gmpordernorm with derivatives"

    def peakmem_reference(self, info, backend, frames):
        pass


class PreprocessMemory(Benchmark):
    """End to end: ``AtomsDataset(frames, ...)`` without / with ``install()``."""

    params = [BACKENDS, FRAMES]
    param_names = ["backend", "frames"]
    quick = False  # its time is in pipeline.Preprocess

    def prepare(self, info, backend, frames):
        self.run = stage_run("preprocess", info, backend, frames)

    def peakmem_preprocess(self, info, backend, frames):
        self.run()

    peakmem_preprocess.pretty_name = stages.STAGES["preprocess"].title

    def peakmem_reference(self, info, backend, frames):
        pass


class TrainEpochOnTheFlyMemory(Benchmark):
    """One training epoch on the fly (fastfp): the frames, the scalers and one batch's
    derivatives at a time, whatever the number of frames."""

    params = [BACKENDS, FRAMES]
    param_names = ["backend", "frames"]
    repeat = 1

    def prepare(self, info, backend, frames):
        self.run = stage_run("train_epoch_on_the_fly", info, backend, frames)

    def peakmem_train_epoch_on_the_fly(self, info, backend, frames):
        self.run()

    peakmem_train_epoch_on_the_fly.pretty_name = stages.STAGES["train_epoch_on_the_fly"].title

    def peakmem_reference(self, info, backend, frames):
        pass
