"""AMPTorch time / fastfp time, both measured in the same process (one AMPTorch run,
the best of up to three fastfp runs): the speed-up, free of machine-to-machine noise."""

from fastfp.harness import stages

from .common import FRAMES, Benchmark, best_time, stage_run


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
