"""The pipeline stages, once, for every backend: what the benchmarks, ``fastfp bench``
and the profilers time.

A stage is built in two steps, so that only the measured work is timed::

    from fastfp.harness import stages, workloads
    frames = workloads.load_frames("water-metal", 100)     # the default workload, first 100 frames
    run = stages.build("featurize", "fastfp", frames, descriptor="gmpordernorm", derivatives=True)
    run()                                                    # the measured work; returns its result

:func:`build` checks that the backend can run the stage, prepares the inputs (untimed)
and returns a zero-argument callable. It raises
:class:`~fastfp.harness.backends.StageUnavailable` (a ``NotImplementedError``, so asv
skips the benchmark) with the reason when the backend is missing, the frames have no
energies for a training stage, or the inputs would not fit in memory.

Stages (:data:`STAGES`; backends: :mod:`fastfp.harness.backends`)
-------------------------------------------------------------------
``featurize``   ``prepare_fingerprints`` of a descriptor (``gmpordernorm``, ``gmp``,
                ``gaussian``), fingerprints only or with derivatives, 256 frames per
                call, results of a chunk dropped before the next (memory stays bounded);
                for ``cupy``: ``featurize(..., device="cuda")``, frames in host memory to
                fingerprints and derivative blocks on the GPU (no COO conversion), 2,000
                frames per call, the device synchronised before the next;
``scale``       feature + target scaling fitted and applied to the same ``Data`` list
                (AMPTorch's ``FeatureScaler``/``TargetScaler`` vs fastfp's);
``store_write`` / ``store_read``  the fastfp store (AMPTorch has no comparable one):
                precomputed fingerprints written to a one-shard store (one HDF5 file);
                a sharded store read back 256 frames at a time;
``collate``     every batch of 16 ``Data`` (``DataCollater``: AMPTorch's
                ``sparse_block_diag`` vs fastfp's);
``force_contraction``  on every collated batch of 16: forces from dE/dG (a leaf
                tensor) and the derivative matrix, a loss of the forces, ``backward()``
                (AMPTorch's ``torch.sparse.mm`` expression from ``amptorch/model.py`` on
                its COO matrices vs :func:`fastfp.amptorch.forces.contract_forces` on
                the pair blocks AMPTorch's data set holds with fastfp as its backend,
                :mod:`fastfp.amptorch.frame_blocks`); the "amptorch" side
                is plain torch but, like every "amptorch" stage, runs only where
                AMPTorch is installed, so its column never shows an imitation;
``train_epoch`` one epoch of ``AtomsTrainer`` (SingleNN 3×20, batch 16, forces,
                force_coefficient 0.05) without / with ``install()`` / patched
                AMPTorch with ``fp_backend: "fastfp"`` (``amptorch-patched``);
``train_epoch_on_the_fly``  the same epoch with ``config["dataset"]["on_the_fly"]``
                (fastfp only): every batch featurized, scaled and contracted inside the
                epoch, memory bounded by the batch;
``preprocess``  end to end: ``AtomsDataset(frames, ...)`` without / with ``install()``
                / patched with ``fp_backend="fastfp"`` (fingerprints, derivatives,
                ``Data``, feature and target scaling).

``amptorch-patched`` runs in a worker process where this process's AMPTorch is not the
patched one (:mod:`fastfp.harness.patched`).

Descriptor settings for the frames' elements come from
:func:`fastfp.harness.settings.descriptor_config`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fastfp.config import build_descriptor, descriptor_setup
from fastfp.frames import chunks, elements_of

from . import settings
from . import patched
from .backends import (BACKENDS, StageUnavailable, fastfp_installed, is_available, missing_torch, patched_imported,
                       why_unavailable)
from .workloads import has_labels

NO_LABELS = "frames have no energies/forces: training stages skipped"

#: frames per ``prepare_fingerprints`` call in the featurize stage (CPU backends)
CHUNK_FRAMES = 256
#: frames per ``featurize(device="cuda")`` call (about 4 GB of float64 derivative blocks
#: of the default workload: many frames per kernel launch, far from the GPU's memory)
GPU_CHUNK_FRAMES = 2000
#: the training stage's model and optimiser
TRAIN_MODEL = {"name": "singlenn", "get_forces": True, "num_layers": 3, "num_nodes": 20}
TRAIN_OPTIM = {"device": "cpu", "force_coefficient": 0.05, "lr": 1e-2, "batch_size": 16, "epochs": 1}
BATCH_SIZE = 16


@dataclass
class Request:
    """What a stage builder gets: the stage, backend and frames, and the options of
    :func:`build`. ``tempdir()`` makes a folder removed with the stage's callable."""

    stage: str
    backend: str
    frames: list
    descriptor: str = "gmpordernorm"
    elements: list | None = None
    derivatives: bool = True
    collect: bool = False
    data: list | None = None
    batch_size: int = BATCH_SIZE
    tempdirs: list = field(default_factory=list, repr=False)

    @functools.cached_property
    def config(self) -> dict:
        """The benchmark settings of the descriptor (:func:`settings.descriptor_config`)."""
        return settings.descriptor_config(self.descriptor, self.elements)

    def descriptor_object(self, backend: str | None = None):
        """The AMPTorch-interface descriptor of ``backend`` (default the request's), as
        AMPTorch's ``construct_descriptor`` builds it."""
        backend = backend or self.backend
        if backend == "amptorch":
            from amptorch.dataset import construct_descriptor

            with fastfp_installed(False):  # the module attribute may be fastfp's under install()
                return construct_descriptor(descriptor_setup(self.config))
        return build_descriptor(self.config, amptorch=True)

    def tempdir(self) -> Path:
        directory = Path(tempfile.mkdtemp(prefix="fastfp-bench-"))
        self.tempdirs.append(directory)
        return directory


def _remove(directories: list) -> None:
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


class Run:
    """The callable :func:`build` returns: calls the stage's measured work; holds what
    it needs (and its temporary files, removed with it)."""

    def __init__(self, request: Request):
        self.request = request
        self.func: Callable[[], Any] | None = None

    def __call__(self):
        return self.func()

    def __repr__(self) -> str:
        r = self.request
        return f"<stage {r.stage} [{r.backend}] {len(r.frames)} frames, {r.descriptor}>"


# -- stages ----------------------------------------------------------------------------


def _tiny(atoms, n: int = 8):
    """The first ``n`` atoms of ``atoms`` (same cell), with zero energy and forces:
    enough to load the kernels."""
    from ase.calculators.singlepoint import SinglePointCalculator

    small = atoms[: min(n, len(atoms))]
    small.calc = SinglePointCalculator(small, energy=0.0, forces=np.zeros((len(small), 3)))
    return small


def _warm_up(work, frames) -> None:
    """``work([a few atoms of frames[0]])``: loads (or compiles) the numba kernels the
    stage uses, outside its timing."""
    work([_tiny(frames[0])])


def _featurize_gpu(req: Request):
    from fastfp.gpu.device import synchronize

    desc = build_descriptor(req.config)
    _warm_up(lambda frames: desc.featurize(frames, derivatives=req.derivatives, device="cuda"), req.frames)
    synchronize()

    def run():
        out = [] if req.collect else None
        atoms = 0
        for _, chunk in chunks(req.frames, GPU_CHUNK_FRAMES):
            fps = desc.featurize(chunk, derivatives=req.derivatives, device="cuda")
            synchronize()
            atoms += len(fps.numbers)
            if req.collect:
                out.append(fps)
            del fps
        return out if req.collect else atoms

    return run


def _featurize(req: Request):
    if req.backend == "cupy":
        return _featurize_gpu(req)
    desc = req.descriptor_object()
    if req.backend == "fastfp":
        _warm_up(lambda frames: desc.prepare_fingerprints(frames, req.derivatives), req.frames)

    def run():
        out = [] if req.collect else None
        atoms = 0
        for _, chunk in chunks(req.frames, CHUNK_FRAMES):
            images = desc.prepare_fingerprints(chunk, req.derivatives, False, False, 1, None)
            atoms += sum(int(im["num_atoms"]) for im in images)
            if req.collect:
                out.extend(images)
            del images
        return out if req.collect else atoms

    return run


def _torch_setup():
    reason = missing_torch()
    if reason:
        raise StageUnavailable(reason)
    import torch

    torch.set_default_dtype(torch.float64)  # as AtomsTrainer does
    return torch


def _data_list(req: Request, blocks: bool = False):
    """AMPTorch ``Data`` objects (fingerprints, derivatives, energy, forces) of the
    frames, made by fastfp (identical to AMPTorch's, see tests/test_amptorch_dropin.py),
    or ``req.data`` when given; with ``blocks``, the derivatives as the data set holds
    them with fastfp as AMPTorch's backend (pair blocks, :mod:`fastfp.amptorch.frame_blocks`),
    else as AMPTorch's COO matrices."""
    if req.data is not None:
        return req.data
    from fastfp.amptorch.data import blocks_in_data, images_to_data

    with blocks_in_data() if blocks else contextlib.nullcontext():
        return images_to_data(req.descriptor_object("fastfp"), req.frames, True, True, True, disable_tqdm=True)


def _fit_and_scale(data, feature_scaler, target_scaler):
    """What ``AtomsDataset.process`` does after conversion: fit both scalers on ``data``
    (forces on, AMPTorch's default scaling) and scale it in place. Returns ``data``."""
    from fastfp.amptorch.scaling import DEFAULT_SCALING

    features = feature_scaler(data, True, dict(DEFAULT_SCALING))
    targets = target_scaler(data, True)
    features.norm(data, disable_tqdm=True)
    targets.norm(data, disable_tqdm=True)
    return data


def _scale(req: Request):
    _torch_setup()
    data = _data_list(req)
    if req.backend == "amptorch":
        from amptorch.preprocessing import FeatureScaler, TargetScaler
    else:
        from fastfp.amptorch.scaling import FeatureScaler, TargetScaler

    def run():
        with fastfp_installed(False):  # AMPTorch's own FeatureScaler.norm for "amptorch"
            return _fit_and_scale(data, FeatureScaler, TargetScaler)

    return run


def _store_path(req: Request, name: str) -> Path:
    directory = req.tempdir()
    need = settings.estimate_bytes("blocks", req.frames, req.descriptor, req.elements)
    settings.check_disk(directory, need, "the store")
    return directory / name


def _store_write(req: Request):
    from fastfp.store import StoreWriter

    config = req.config
    desc = build_descriptor(config)
    batches = [desc.featurize(chunk, derivatives=req.derivatives) for _, chunk in chunks(req.frames, CHUNK_FRAMES)]
    path = _store_path(req, "bench.h5")  # a one-shard store: one file

    def run():
        with StoreWriter(path, config, desc.n_features, req.derivatives) as writer:
            for fps in batches:
                writer.append(fps)
        return path

    return run


def _store_read(req: Request):
    from fastfp.store import featurize_to_store, open_store

    path = _store_path(req, "bench.store")
    featurize_to_store(req.frames, req.config, path, derivatives=req.derivatives, chunk_frames=CHUNK_FRAMES)

    def run():
        with open_store(path) as store:
            if req.collect:
                return store.read_all()
            return sum(fps.n_frames for fps in store.chunks(CHUNK_FRAMES))

    return run


def _collate_like_amptorch(data_list, block_diag):
    """AMPTorch's ``DataCollater(train=True, forcetraining=True)`` with ``block_diag``
    (used for "fastfp" where AMPTorch is not installed)."""
    from torch_geometric.data import Batch

    mtxs = [d.fprimes for d in data_list]
    for d in data_list:
        d.fprimes = None
    batch = Batch.from_data_list(data_list)
    for d, m in zip(data_list, mtxs):
        d.fprimes = m
    batch.fprimes = block_diag(mtxs)
    return batch, [batch.energy, batch.forces]


def _collate(req: Request):
    _torch_setup()
    batches = [batch for _, batch in chunks(_data_list(req), req.batch_size)]
    use_amptorch = req.backend == "amptorch" or is_available("amptorch")
    if use_amptorch:
        from amptorch.dataset import DataCollater

        collater = DataCollater(train=True, forcetraining=True)
    else:
        from fastfp.amptorch.backend import sparse_block_diag

        def collater(batch):
            return _collate_like_amptorch(batch, sparse_block_diag)

    def run():
        out = []
        with fastfp_installed(use_amptorch and req.backend == "fastfp"):
            for batch in batches:
                result = collater(batch)
                if req.collect:
                    out.append(result)
        return out if req.collect else len(batches)

    return run


def _amptorch_forces(fprimes, gradients):
    """AMPTorch's force contraction, verbatim from ``BPNN.forward`` and
    ``SingleNN.forward`` in AMPTorch's ``amptorch/model.py`` (AMPTorch 0.1, lines 202
    and 297: ``forces = -1 * torch.sparse.mm(batch.fprimes.t(), gradients.t()).view(-1, 3)``;
    tests/test_bench.py checks the installed file still has it)."""
    import torch

    return -1 * torch.sparse.mm(fprimes.t(), gradients.t()).view(-1, 3)


def _force_contraction(req: Request):
    """Forces from dE/dG and the derivative matrix of every collated batch, then a loss
    of the forces (sum of squares) and ``loss.backward()``: what each training step does
    with this product. dE/dG is a leaf (1, n_rows) tensor, as AMPTorch's ``gradients``
    (random values, seeded: the cost does not depend on them). The matrices are the
    training batches' (``req.data``'s, or the data set's of the backend: AMPTorch's COO,
    fastfp's pair blocks), collated in setup by fastfp's ``sparse_block_diag`` hook (for
    COO, AMPTorch's matrices, faster: tests/test_bench.py). ``collect``: per batch
    ``(dE/dG, forces, gradient of the loss by dE/dG)``."""
    torch = _torch_setup()
    from fastfp.amptorch.backend import sparse_block_diag

    data = _data_list(req, blocks=req.backend != "amptorch")
    matrices = [sparse_block_diag([d.fprimes for d in batch]) for _, batch in chunks(data, req.batch_size)]
    generator = torch.Generator().manual_seed(0)
    gradients = [torch.randn(1, m.shape[0], generator=generator, dtype=torch.get_default_dtype()).requires_grad_()
                 for m in matrices]
    if req.backend == "amptorch":
        contract = _amptorch_forces
        matrices = [m.matrix for m in matrices]  # the COO tensors
    else:
        from fastfp.amptorch import forces, frame_blocks

        contract = forces.contract_forces
        forces.warm_up()  # load the compiled kernels outside the timing
        frame_blocks.warm_up()

    def run():
        out = []
        for fprimes, dEdG in zip(matrices, gradients):
            dEdG.grad = None
            forces = contract(fprimes, dEdG)
            loss = (forces ** 2).sum()
            loss.backward()
            if req.collect:
                out.append((dEdG.detach(), forces.detach(), dEdG.grad))
        return out if req.collect else len(matrices)

    return run


def train_config(dataset: dict, run_dir) -> dict:
    """AtomsTrainer's config of the training stages for ``dataset`` (its
    ``config["dataset"]``; :func:`frames_dataset`): SingleNN 3×20, batch 16, forces on,
    force_coefficient 0.05, one epoch, seed 1, checkpoints in ``run_dir``."""
    return {
        "model": dict(TRAIN_MODEL),
        "optim": dict(TRAIN_OPTIM),
        "dataset": dataset,
        "cmd": {"debug": True, "run_dir": str(run_dir), "seed": 1, "identifier": "bench",
                "verbose": False, "logger": False},
    }


def frames_dataset(req: Request) -> dict:
    """AtomsTrainer's ``config["dataset"]`` for the request's frames and descriptor
    settings, AMPTorch's default scaling, no validation split."""
    from fastfp.amptorch.scaling import DEFAULT_SCALING

    scheme, params, cutoff_params, els = descriptor_setup(req.config)
    dataset = {"raw_data": list(req.frames), "val_split": 0, "fp_scheme": scheme, "fp_params": params,
               "elements": els, "save_fps": False, "scaling": dict(DEFAULT_SCALING)}
    if cutoff_params:
        dataset["cutoff_params"] = cutoff_params
    return dataset


def _train_epoch(req: Request):
    """One epoch of ``AtomsTrainer``: from the stored ``Data`` (stage ``train_epoch``,
    preprocessing in setup, done the fast way for both backends: the same ``Data``,
    tests/test_amptorch_dropin.py, their derivatives AMPTorch's COO matrices for
    "amptorch", pair blocks for fastfp, :mod:`fastfp.amptorch.frame_blocks`), or on the
    fly (``train_epoch_on_the_fly``: ``config["dataset"]["on_the_fly"]``, scalers fitted
    in setup, every batch featurized inside the epoch)."""
    _torch_setup()
    from amptorch.trainer import AtomsTrainer

    from fastfp.amptorch import frame_blocks
    from fastfp.amptorch.forces import warm_up

    config = train_config(frames_dataset(req), req.tempdir())
    on_the_fly = req.stage == "train_epoch_on_the_fly"
    config["dataset"]["on_the_fly"] = on_the_fly
    patched_amptorch = req.backend == "amptorch-patched"
    if patched_amptorch:  # AMPTorch calls fastfp's hooks itself
        config["dataset"]["fp_backend"] = "fastfp"
    trainer = AtomsTrainer(config)
    cwd = os.getcwd()
    try:
        with contextlib.redirect_stdout(open(os.devnull, "w")), fastfp_installed(not patched_amptorch):
            trainer.load()
            trainer.net.initialize()
    finally:
        os.chdir(cwd)  # AtomsTrainer.load_config chdirs into run_dir
    if req.backend == "amptorch":
        for data in trainer.train_dataset.data_list:
            data.fprimes = data.fprimes.to_coo()
    else:  # the force contraction's compiled kernels
        warm_up()
        frame_blocks.warm_up()

    def run():
        with fastfp_installed(req.backend == "fastfp"):
            trainer.net.partial_fit(trainer.train_dataset, None, epochs=1)
        return float(trainer.net.history[-1]["train_loss"])

    return run


def _preprocess(req: Request):
    _torch_setup()
    if req.backend in ("amptorch", "amptorch-patched") or is_available("amptorch"):
        from amptorch.dataset import AtomsDataset

        from fastfp.amptorch.scaling import DEFAULT_SCALING

        # patched AMPTorch calls fastfp's hooks itself
        backend = {"fp_backend": "fastfp"} if req.backend == "amptorch-patched" else {}

        def work(frames):
            with fastfp_installed(req.backend == "fastfp"):
                dataset = AtomsDataset(list(frames), descriptor_setup(req.config), forcetraining=True,
                                       save_fps=False, scaling=dict(DEFAULT_SCALING), **backend)
            return dataset.data_list

    else:  # fastfp without AMPTorch: what AtomsDataset.process does under install()
        from fastfp.amptorch.backend import preprocessing
        from fastfp.amptorch.data import images_to_data
        from fastfp.amptorch.scaling import FeatureScaler, TargetScaler

        desc = req.descriptor_object("fastfp")

        def work(frames):
            with preprocessing():
                data = images_to_data(desc, list(frames), True, True, True, disable_tqdm=True)
                return _fit_and_scale(data, FeatureScaler, TargetScaler)

    if req.backend != "amptorch":  # featurization, conversion and scaling kernels
        _warm_up(work, req.frames)
    return lambda: work(req.frames)


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its name, a title for tables, what it needs, its builder."""

    name: str
    title: str
    builder: Callable[[Request], Callable[[], Any]]
    #: energies and forces needed (training stages)
    needs_labels: bool = False
    needs_torch: bool = False
    #: backends that can run it at all; the others skip with their reason in ``missing``
    backends: tuple = ("amptorch", "fastfp")
    missing: dict = field(default_factory=dict)
    #: AMPTorch must be installed for every backend (the fastfp side runs AMPTorch's
    #: own code with fastfp.amptorch.install())
    needs_amptorch: bool = False
    #: the derivatives held at once, for the memory check (settings.estimate_bytes):
    #: "coo" (AMPTorch Data), or None (bounded by chunks)
    memory: str | None = None


#: the stages AMPTorch with fastfp's patch series runs too (its own code, fastfp's hooks)
_PATCHED_TOO = ("amptorch", "amptorch-patched", "fastfp")

_NO_STORE = ("AMPTorch has no fingerprint store comparable to fastfp's (its save_fps HDF5 cache is one file "
             "per image, read back inside prepare_fingerprints): not compared")

STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("featurize", "featurize", _featurize, backends=BACKENDS),
        Stage("scale", "feature + target scaling", _scale, needs_labels=True, needs_torch=True, memory="coo"),
        Stage("store_write", "store write", _store_write, backends=("fastfp",), missing={"amptorch": _NO_STORE}),
        Stage("store_read", "store read", _store_read, backends=("fastfp",), missing={"amptorch": _NO_STORE}),
        Stage("collate", "collate (batches of 16)", _collate, needs_labels=True, needs_torch=True, memory="coo"),
        Stage("force_contraction", "force contraction, forward + backward", _force_contraction,
              needs_labels=True, needs_torch=True, memory="coo"),
        Stage("train_epoch", "training epoch", _train_epoch, needs_labels=True, needs_torch=True,
              needs_amptorch=True, memory="coo", backends=_PATCHED_TOO),
        Stage("train_epoch_on_the_fly", "training epoch on the fly", _train_epoch, needs_labels=True,
              needs_torch=True, needs_amptorch=True, backends=("amptorch-patched", "fastfp"),
              missing={"amptorch": "AMPTorch has no on-the-fly path (its stored path: the training epoch row)"}),
        Stage("preprocess", "end-to-end preprocessing", _preprocess, needs_labels=True, needs_torch=True,
              memory="coo", backends=_PATCHED_TOO),
    )
}


def why_not(stage: str, backend: str) -> str | None:
    """Why ``stage`` cannot run for ``backend`` here whatever the frames, or None: the
    backend or something the stage needs is missing, or the stage has no such side.
    Raises ``ValueError`` for an unknown stage or backend."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    spec = STAGES[stage]
    reason = why_unavailable(backend)
    if reason:
        return reason
    if backend not in spec.backends:
        return spec.missing.get(backend, f"{spec.title} has no {backend} implementation")
    if spec.needs_amptorch and backend != "amptorch-patched" and not is_available("amptorch"):
        return (f"{spec.title} runs AMPTorch's AtomsTrainer (with fastfp.amptorch.install() for fastfp); "
                f"{why_unavailable('amptorch')}")
    if spec.needs_torch:
        return missing_torch()
    return None


def build(stage: str, backend: str, frames, check_memory: bool = True, **options) -> Run:
    """Prepare ``stage`` for ``backend`` on ``frames`` and return the zero-argument
    callable that does the measured work (and returns its result).

    Options (:class:`Request`): ``descriptor`` (``"gmpordernorm"``), ``elements``
    (default: those of ``frames``; pass the data set's to keep settings equal across
    subsets), ``derivatives`` (featurize, store), ``collect`` (featurize, store_read,
    collate, force_contraction: return the full results instead of a count, for
    comparisons), ``data`` (scale, collate, force_contraction: a ready ``Data`` list,
    modified in place by scale), ``batch_size`` (collate, force_contraction: 16).
    ``check_memory``: skip when the inputs would not fit (:func:`settings.check_memory`).
    Raises :class:`~fastfp.harness.backends.StageUnavailable` with the reason if it
    cannot run here, ``ValueError`` for an unknown stage, backend or option.
    """
    reason = why_not(stage, backend)
    if reason:
        raise StageUnavailable(reason)
    spec = STAGES[stage]
    if backend == "fastfp" and is_available("amptorch"):
        importlib.import_module("fastfp.amptorch.patching")  # here, so that no stage times its imports
    frames = list(frames)
    if not frames:
        raise ValueError("no frames")
    if spec.needs_labels and not has_labels(frames):
        raise StageUnavailable(NO_LABELS)
    request = Request(stage, backend, frames, **options)
    if request.elements is None:
        request.elements = elements_of(frames)
    if check_memory and spec.memory and request.data is None:
        need = settings.estimate_bytes(spec.memory, frames, request.descriptor, request.elements)
        settings.check_memory(need, f"{stage} on {len(frames)} frames")
    run = Run(request)
    weakref.finalize(run, _remove, request.tempdirs)  # temporary files live as long as the callable
    if backend == "amptorch-patched" and not patched_imported():
        run.func = patched.remote(stage, frames, options)
    else:
        run.func = spec.builder(request)
    return run
