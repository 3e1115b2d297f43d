"""Peak memory (resident set) of featurization, end-to-end preprocessing and training on
the fly.

asv's ``peakmem_`` includes what ``setup`` allocated (the frames, imports); each class
has a ``peakmem_reference`` that does nothing after the same setup, the baseline to
subtract."""

from fastfp.harness import stages
from fastfp.harness.backends import StageUnavailable

from .common import BACKENDS, FRAMES, Benchmark, stage_run


class _StageMemory(Benchmark):
    """Peak memory of one stage of :mod:`fastfp.harness.stages` (built with ``options``)
    on N frames, measured by the subclass's ``peakmem_<stage>``, whose table label is
    ``title`` (default: the stage's title)."""

    stage = ""
    options: dict = {}
    title = ""
    params = [BACKENDS, FRAMES]
    param_names = ["backend", "frames"]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        getattr(cls, f"peakmem_{cls.stage}").pretty_name = cls.title or stages.STAGES[cls.stage].title

    def prepare(self, info, backend, frames):
        if backend == "amptorch-patched":
            raise StageUnavailable("amptorch-patched runs in a worker process, whose memory asv's peakmem_ "
                                   "does not see (scripts/train_epoch.py --patched reports its peak)")
        self.run = stage_run(self.stage, info, backend, frames, **self.options)

    def peakmem_reference(self, info, backend, frames):
        pass


class FeaturizeMemory(_StageMemory):
    """GMPOrderNorm fingerprints with derivatives (``prepare_fingerprints``, 256 frames
    per call)."""

    stage = "featurize"
    options = {"descriptor": "gmpordernorm", "derivatives": True}
    title = "featurize gmpordernorm with derivatives"

    def peakmem_featurize(self, info, backend, frames):
        self.run()


class PreprocessMemory(_StageMemory):
    """End to end: ``AtomsDataset(frames, ...)`` without / with ``install()``."""

    stage = "preprocess"
    quick = False  # its time is in pipeline.Preprocess

    def peakmem_preprocess(self, info, backend, frames):
        self.run()


class TrainEpochOnTheFlyMemory(_StageMemory):
    """One training epoch on the fly (fastfp): the frames, the scalers and one batch's
    derivatives at a time, whatever the number of frames."""

    stage = "train_epoch_on_the_fly"
    repeat = 1

    def peakmem_train_epoch_on_the_fly(self, info, backend, frames):
        self.run()
