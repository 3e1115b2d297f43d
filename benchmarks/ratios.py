"""AMPTorch time / fastfp time, both measured in the same process (one AMPTorch run,
the best of up to three fastfp runs): the speed-up, free of machine-to-machine noise."""

from fastfp.harness import stages

from .common import FRAMES, Benchmark, bench_frames, best_time


class _Ratio(Benchmark):
    stage = ""
    options: dict = {}
    labels = False
    params = [FRAMES]
    param_names = ["frames"]
    unit = "AMPTorch time / fastfp time"
    repeat = 1

    def setup(self, info, frames):
        images = bench_frames(info, frames, "fastfp", labels=self.labels)
        bench_frames(info, frames, "amptorch", labels=self.labels)  # skips with the reason
        self.runs = {b: stages.build(self.stage, b, images, elements=info["elements"], **self.options)
                     for b in ("amptorch", "fastfp")}

    def _ratio(self):
        amptorch = best_time(self.runs["amptorch"], repeat=1)
        return amptorch / best_time(self.runs["fastfp"])


class FeaturizeRatio(_Ratio):
    """GMPOrderNorm fingerprints with derivatives."""

    stage = "featurize"
    options = {"descriptor": "gmpordernorm", "derivatives": True}

    def track_featurize_ratio(self, info, frames):
        return self._ratio()


class PreprocessRatio(_Ratio):
    """End-to-end preprocessing (``AtomsDataset``) without / with ``install()``."""

    stage = "preprocess"
    labels = True

    def track_preprocess_ratio(self, info, frames):
        return self._ratio()


class ForceContractionRatio(_Ratio):
    """Force contraction, forward + backward, on every batch of 16."""

    stage = "force_contraction"
    labels = True

    def track_force_contraction_ratio(self, info, frames):
        return self._ratio()


class TrainEpochRatio(_Ratio):
    """One training epoch without / with ``install()``."""

    stage = "train_epoch"
    labels = True

    def track_train_epoch_ratio(self, info, frames):
        return self._ratio()
