"""The fast subset: what ``fastfp bench --history`` runs at every milestone commit and
``fastfp bench --compare`` runs at two commits. fastfp's time and the ratio AMPTorch
time / fastfp time (both measured in one process) of GMPOrderNorm featurization with
derivatives, end-to-end preprocessing, one training epoch and one epoch on the fly.

asv runs the current checkout's suite against each commit's fastfp, so this module uses
only what every commit since the first AMPTorch-compatible descriptor has: AMPTorch's
own interfaces (``prepare_fingerprints``, ``AtomsDataset``, ``AtomsTrainer``) served by
``fastfp.amptorch`` and its ``install()``. It imports nothing from ``fastfp.harness`` or
``benchmarks.common`` (both newer than most commits). A stage a commit does not have
skips (``NotImplementedError`` with the reason), as does everything when AMPTorch is
not installed (the drop-in is measured through AMPTorch's classes).

Its inputs are written by ``fastfp bench`` with the checkout's harness, into the folder
named by ``FASTFP_BENCH_HISTORY`` (:data:`fastfp.harness.settings.HISTORY`):
``frames.traj`` (the first frames of the default workload, with energies and forces)
and ``descriptor.json`` (AMPTorch's ``descriptor_setup`` for them).

Every benchmark has an explicit ``version``: editing this file keeps earlier commits'
results comparable (asv drops results whose version differs); bump it when what is
measured changes.
"""

import contextlib
import copy
import importlib
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

from asv_runner.benchmarks.mark import SkipNotImplemented

#: the variable naming the inputs folder (fastfp.harness.settings.HISTORY)
INPUTS = "FASTFP_BENCH_HISTORY"
#: AMPTorch's default feature scaling, as the drop-in's preprocessing takes it
SCALING = {"type": "normalize", "range": (0, 1), "elementwise": True}
#: the training epoch: SingleNN 3x20, batch 16, forces, force_coefficient 0.05
MODEL = {"name": "singlenn", "get_forces": True, "num_layers": 3, "num_nodes": 20}
OPTIM = {"device": "cpu", "force_coefficient": 0.05, "lr": 1e-2, "batch_size": 16, "epochs": 1}


def _preimport():
    """torch, AMPTorch and fastfp's drop-in imported with the module when this subset
    runs: once, in asv's forkserver, instead of in every benchmark process. Failures are
    the setups' to report."""
    for module in ("torch", "amptorch.trainer", "amptorch.dataset", "fastfp.amptorch"):
        try:
            importlib.import_module(module)
        except Exception:
            continue


if os.environ.get(INPUTS):
    _preimport()


def _inputs():
    """(frames, descriptor_setup) from the inputs folder, or ``NotImplementedError``."""
    folder = os.environ.get(INPUTS, "")
    if not folder or not (Path(folder) / "frames.traj").is_file():
        raise NotImplementedError(f"{INPUTS} names no inputs folder: run by fastfp bench --history / --compare")
    import ase.io

    frames = ase.io.read(Path(folder) / "frames.traj", ":")
    scheme, params, cutoff_params, elements = json.loads((Path(folder) / "descriptor.json").read_text())
    return frames, (scheme, params, cutoff_params, elements)


def _require(module: str, what: str) -> None:
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise NotImplementedError(f"{what}: no {module} at this commit")


def _amptorch_reason() -> str | None:
    try:
        importlib.import_module("amptorch.trainer")
    except Exception as exc:
        return f"AMPTorch cannot be imported ({type(exc).__name__}: {exc})"
    return None


@contextlib.contextmanager
def _drop_in(state: bool):
    """``fastfp.amptorch.install()`` in effect (``state``) or not."""
    import fastfp.amptorch

    fastfp.amptorch.install() if state else fastfp.amptorch.uninstall()
    try:
        yield
    finally:
        fastfp.amptorch.uninstall()


def _seconds(run) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


#: what each benchmark process has built, by class: asv runs ``setup`` before every
#: sample, and the inputs (a trainer with its preprocessed data) are built once
_BUILT: dict = {}


class _Stage:
    """One stage on the inputs' frames, built by the subclass's ``build(backend)``:
    ``time_`` times fastfp (asv's samples), ``track_`` the ratio AMPTorch time / fastfp
    time in one process (the shortest of two AMPTorch runs and of six fastfp runs, the
    two alternated; skipped without AMPTorch)."""

    version = "1"
    timeout = 1800
    number = 1
    repeat = (6, 12, 20.0)  # six samples at least: asv compare's Mann-Whitney test needs them
    rounds = 1
    warmup_time = 0
    unit = "AMPTorch time / fastfp time"

    def setup(self):
        name = type(self).__name__
        if name not in _BUILT:
            self.frames, self.descriptor_setup = _inputs()
            runs = {"fastfp": self.build("fastfp")}
            runs["fastfp"]()  # compiles or loads the kernels, outside the timing
            reason = _amptorch_reason()
            runs["amptorch"] = self.build("amptorch") if reason is None else reason
            _BUILT[name] = runs
        self.runs = _BUILT[name]

    def build(self, backend: str):
        raise NotImplementedError

    def ratio(self) -> float:
        if isinstance(self.runs["amptorch"], str):
            raise SkipNotImplemented(self.runs["amptorch"])
        amptorch = fastfp = float("inf")
        for _ in range(2):  # alternated, so that a change in the machine's load meets both
            amptorch = min(amptorch, _seconds(self.runs["amptorch"]))
            fastfp = min(fastfp, *(_seconds(self.runs["fastfp"]) for _ in range(3)))
        return amptorch / fastfp


class Featurize(_Stage):
    """``prepare_fingerprints`` with derivatives (AMPTorch's GMPOrderNorm against
    ``fastfp.amptorch.GMPOrderNorm``), all frames in one call."""

    def build(self, backend):
        if backend == "fastfp":
            _require("fastfp.amptorch", "an AMPTorch-compatible GMPOrderNorm")
            from fastfp.amptorch import GMPOrderNorm
        else:
            from amptorch.descriptor.GMPOrderNorm import GMPOrderNorm
        _, params, _, elements = self.descriptor_setup
        descriptor = GMPOrderNorm(copy.deepcopy(params), list(elements))
        return lambda: descriptor.prepare_fingerprints(self.frames, True, False, False, 1, None)

    def time_featurize(self):
        self.runs["fastfp"]()

    def track_featurize_ratio(self):
        return self.ratio()

    time_featurize.pretty_name = track_featurize_ratio.pretty_name = "featurize gmpordernorm with derivatives"


def _needs_drop_in():
    reason = _amptorch_reason()
    if reason:
        raise NotImplementedError(f"the drop-in runs AMPTorch's own classes; {reason}")
    _require("fastfp.amptorch.patching", "fastfp.amptorch.install()")


class Preprocess(_Stage):
    """End to end: ``AtomsDataset(frames, ...)`` (fingerprints, derivatives, ``Data``,
    feature and target scaling) without / with ``fastfp.amptorch.install()``."""

    def build(self, backend):
        _needs_drop_in()
        from amptorch.dataset import AtomsDataset

        def run():
            with _drop_in(backend == "fastfp"):
                return AtomsDataset(list(self.frames), self.descriptor_setup, forcetraining=True, save_fps=False,
                                    scaling=dict(SCALING))

        return run

    def time_preprocess(self):
        self.runs["fastfp"]()

    def track_preprocess_ratio(self):
        return self.ratio()

    time_preprocess.pretty_name = track_preprocess_ratio.pretty_name = "end-to-end preprocessing"


class _Training(_Stage):
    """One ``AtomsTrainer`` epoch (:data:`MODEL`, :data:`OPTIM`), preprocessing in setup,
    each backend's own (AMPTorch's side without ``install()``: since the stored path keeps
    fastfp's pair blocks, which AMPTorch's collate cannot read, ``install()``'s data are
    no longer AMPTorch's); ``on_the_fly``: fastfp's epoch with
    ``config["dataset"]["on_the_fly"]``, AMPTorch's from its stored ``Data``."""

    on_the_fly = False

    def build(self, backend):
        _needs_drop_in()
        from amptorch.trainer import AtomsTrainer

        on_the_fly = self.on_the_fly and backend == "fastfp"
        if on_the_fly:
            _require("fastfp.amptorch.onthefly", "training on the fly")
        scheme, params, cutoff_params, elements = self.descriptor_setup
        dataset = {"raw_data": list(self.frames), "val_split": 0, "fp_scheme": scheme, "fp_params": params,
                   "elements": elements, "save_fps": False, "scaling": dict(SCALING)}
        if cutoff_params:
            dataset["cutoff_params"] = cutoff_params
        if on_the_fly:
            dataset["on_the_fly"] = True
        run_dir = tempfile.mkdtemp(prefix="run-", dir=os.getcwd())  # asv removes the benchmark's working folder
        trainer = AtomsTrainer({"model": dict(MODEL), "optim": dict(OPTIM), "dataset": dataset,
                                "cmd": {"debug": True, "run_dir": run_dir, "seed": 1, "identifier": "bench",
                                        "verbose": False, "logger": False}})
        cwd = os.getcwd()
        try:
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), _drop_in(backend == "fastfp"):
                trainer.load()
                trainer.net.initialize()
        finally:
            os.chdir(cwd)  # AtomsTrainer.load_config chdirs into run_dir

        def run():
            with _drop_in(backend == "fastfp"):
                trainer.net.partial_fit(trainer.train_dataset, None, epochs=1)

        return run


class TrainEpoch(_Training):
    def time_train_epoch(self):
        self.runs["fastfp"]()

    def track_train_epoch_ratio(self):
        return self.ratio()

    time_train_epoch.pretty_name = track_train_epoch_ratio.pretty_name = "training epoch"


class TrainEpochOnTheFly(_Training):
    on_the_fly = True

    def time_train_epoch_on_the_fly(self):
        self.runs["fastfp"]()

    def track_train_epoch_on_the_fly_ratio(self):
        return self.ratio()

    time_train_epoch_on_the_fly.pretty_name = "training epoch on the fly"
    track_train_epoch_on_the_fly_ratio.pretty_name = "training epoch on the fly (AMPTorch: stored)"
