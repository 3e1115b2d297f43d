"""The rest of the pipeline, GMPOrderNorm fingerprints with derivatives: scaling, the
fastfp store, collation, the force contraction, one training epoch (stored and on the
fly), and end-to-end preprocessing."""

from fastfp.harness import stages

from .common import BACKENDS, FRAMES, Benchmark, stage_run


class _Stage(Benchmark):
    """One stage of :mod:`fastfp.harness.stages` on N frames, timed by the subclass's
    ``time_<stage>``, whose table label is the stage's title."""

    stage = ""
    params = [BACKENDS, FRAMES]
    param_names = ["backend", "frames"]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        getattr(cls, f"time_{cls.stage}").pretty_name = stages.STAGES[cls.stage].title

    def prepare(self, info, backend, frames):
        self.run = stage_run(self.stage, info, backend, frames)


class Scale(_Stage):
    """Feature scaling (normalize to [0, 1], elementwise) and target scaling, fitted and
    applied to the same ``Data`` list."""

    stage = "scale"
    quick = False  # inside end-to-end preprocessing

    def time_scale(self, info, backend, frames):
        self.run()


class StoreWrite(_Stage):
    """Writing precomputed fingerprints and derivative blocks to the fastfp HDF5 store."""

    stage = "store_write"

    def time_store_write(self, info, backend, frames):
        self.run()


class StoreRead(_Stage):
    """Reading the fastfp HDF5 store back, 256 frames at a time."""

    stage = "store_read"

    def time_store_read(self, info, backend, frames):
        self.run()


class Collate(_Stage):
    """``DataCollater`` on every batch of 16 ``Data`` (block-diagonal derivative matrix)."""

    stage = "collate"

    def time_collate(self, info, backend, frames):
        self.run()


class ForceContraction(_Stage):
    """Forces from dE/dG and the derivative matrix of every batch of 16, a loss of the
    forces and its ``backward()`` (AMPTorch's ``torch.sparse.mm`` vs fastfp's
    ``contract_forces``); collation and the dE/dG tensors are in setup."""

    stage = "force_contraction"

    def time_force_contraction(self, info, backend, frames):
        self.run()


class TrainEpoch(_Stage):
    """One ``AtomsTrainer`` epoch (SingleNN 3x20, batch 16, forces, force_coefficient
    0.05), without / with ``fastfp.amptorch.install()`` / patched AMPTorch with
    ``fp_backend: "fastfp"``; preprocessing is in setup."""

    stage = "train_epoch"
    repeat = 1  # setup (preprocessing) runs before every sample

    def time_train_epoch(self, info, backend, frames):
        self.run()


class TrainEpochOnTheFly(_Stage):
    """One ``AtomsTrainer`` epoch on the fly (``config["dataset"]["on_the_fly"]``; fastfp
    through ``install()``, or patched AMPTorch):
    every batch featurized with derivatives, scaled and contracted into forces inside the
    epoch; scaler fitting in setup. Memory is bounded by the batch, so 16,000 frames run."""

    stage = "train_epoch_on_the_fly"
    repeat = 1  # setup (fitting the scalers) runs before every sample

    def time_train_epoch_on_the_fly(self, info, backend, frames):
        self.run()


class Preprocess(_Stage):
    """End to end: ``AtomsDataset(frames, ...)`` without / with ``install()`` / patched
    with ``fp_backend="fastfp"``."""

    stage = "preprocess"

    def time_preprocess(self, info, backend, frames):
        self.run()
