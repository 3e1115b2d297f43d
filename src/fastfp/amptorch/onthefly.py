"""On-the-fly training: fingerprints and derivatives computed per batch, never stored.

With :func:`fastfp.amptorch.install` in effect and ``config["dataset"]["on_the_fly"] =
True``, AMPTorch's ``AtomsTrainer`` (``amptorch/trainer.py``) trains from an
:class:`OnTheFlyDataset` instead of its ``AtomsDataset``. The data set keeps only the
frames as flat arrays (positions, atomic numbers, cells, pbc, energies, forces:
:class:`LabelledFrames`) and the fitted scalers. Each batch is featurized with exact
derivatives when the DataLoader asks for it, scaled, handed to the model with its
derivatives as fastfp's pair blocks (:class:`~fastfp.amptorch.forces.DerivativeBlocks`,
no COO, no thresholding) and dropped after the step, so memory is bounded by the batch
whatever the number of frames.

The scalers are AMPTorch's classes, fitted to the same statistics as ``AtomsDataset``
fits them, by one pass over the frames that computes fingerprints only and keeps only
per-element statistics (:class:`~fastfp.amptorch.scaling.FitStatistics`).
Checkpoints, ``normalizers.pt`` and ``AtomsTrainer.predict`` are AMPTorch's, unchanged.

The next batch is featurized on a background thread while the model trains on the
current one (:class:`AheadLoader`): fastfp's kernels release the GIL, and a thread hands
the batch over without copying its derivative blocks (~60 MB per batch of 16 frames of
the default workload). DataLoader worker processes, which pickle each batch over to
the trainer, took twice as long per epoch on 2 cores (one or two workers, 320 frames).

With the model on a GPU (``config["optim"]["gpus"] = 1``, :func:`training_device`) the
data set featurizes on the GPU (``device="cuda"``): fingerprints, derivative blocks
and atomic numbers reach torch by DLPack where they lie (``torch.from_dlpack``, no
copy), and scaling, the model and the force contraction
(:class:`~fastfp.amptorch.forces.DerivativeBlocks` of torch tensors) run there: frames
and labels go to the device, derivatives never leave it. The feature scaler is fitted
on the GPU too (fingerprints only; each chunk's fingerprints come to the host for the
statistics). Under numba's CUDA simulator the same code runs on NumPy arrays and CPU
tensors.
"""

from __future__ import annotations

import copy
import functools
import importlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torch_geometric.data import Batch
from tqdm.auto import tqdm

from ..frames import PackedFrames, check_frame, pack_frames
from .descriptors import AMPTorchInterface
from .forces import DerivativeBlocks
from .scaling import FeatureScaler, FitStatistics, TargetScaler, feature_scaler, scale_fingerprints

#: the key in ``config["dataset"]`` that turns on-the-fly training on
KEY = "on_the_fly"
#: ``config["dataset"]`` keys AtomsTrainer reads (``descriptor`` and ``fp_length`` it
#: writes itself), and ``on_the_fly``
DATASET_KEYS = {"raw_data", "elements", "fp_scheme", "fp_params", "cutoff_params", "scaling", "save_fps",
                "val_split", "val_split_mode", "descriptor", "fp_length", KEY}
#: keys of AMPTorch's LMDB data sets, which hold precomputed fingerprints
LMDB_KEYS = ("lmdb_path", "cache")
#: atoms per featurization call while fitting the feature scaler (fingerprints only, so
#: little memory; 4,096 atoms took half the time of 512 on the default workload)
FIT_ATOMS = 4096
#: the same on the GPU: many frames per kernel launch (about 1,400 frames of the
#: default workload, well under 1 GB of neighbour list)
FIT_ATOMS_DEVICE = 2**17
#: batches featurized ahead of the one the model trains on (featurization dominates: one
#: is enough to keep it busy; each holds its derivative blocks, ~60 MB for 16 frames of
#: the default workload)
AHEAD = 1


def check_config(config: dict) -> bool:
    """Whether ``config`` (AtomsTrainer's) asks for on-the-fly training, after checking
    that fastfp can do what it asks. Raises ``ValueError`` naming the offending key:
    ``on_the_fly`` not true or false, an LMDB key, a key AtomsTrainer does not know in
    ``config["dataset"]``, a ``fp_scheme`` other than gmpordernorm, gmp and gaussian,
    ``fp_params`` ``"log"`` (no derivatives) with forces or a nonzero
    ``"prime_threshold"`` (derivatives here are exact), a bad ``scaling``, or a
    ``config["optim"]["gpus"]`` other than 0 or 1; with ``gpus`` 1 and no GPU to run
    on, :class:`~fastfp.gpu.device.DeviceError` (:func:`training_device`). Unknown
    ``fp_params`` keys are reported when the descriptor is built (:func:`trainer_dataset`)."""
    dataset = config.get("dataset", {})
    flag = dataset.get(KEY, False)
    if not isinstance(flag, bool):
        raise ValueError(f"config['dataset'][{KEY!r}] must be True or False, got {flag!r}")
    if not flag:
        return False
    where = f"config['dataset'] with {KEY!r}"
    for key in LMDB_KEYS:
        if key in dataset:
            raise ValueError(f"{where}: {key!r} is for AMPTorch's LMDB data sets (precomputed fingerprints); "
                             f"give the frames as 'raw_data' instead, or drop {KEY!r}")
    unknown = sorted(set(dataset) - DATASET_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(DATASET_KEYS)}")
    if "raw_data" not in dataset:
        raise ValueError(f"{where}: 'raw_data' (the frames, or a file of them) is required")
    scheme = dataset.get("fp_scheme", "gmpordernorm")
    if not isinstance(scheme, str) or scheme.lower() not in ("gmpordernorm", "gmp", "gaussian"):
        raise ValueError(f"{where}: 'fp_scheme' {scheme!r} is not one fastfp computes; "
                         "use 'gmpordernorm', 'gmp' or 'gaussian'")
    params = dataset.get("fp_params")
    if not isinstance(params, dict):
        raise ValueError(f"{where}: 'fp_params' must be a dict, got {params!r}")
    forces = config.get("model", {}).get("get_forces", True)
    if forces and params.get("log", False):
        raise ValueError(f"{where}: fp_params 'log' fingerprints have no derivatives, so forces cannot be "
                         "trained (as in AMPTorch); drop 'log' or set config['model']['get_forces'] = False")
    if params.get("prime_threshold", 0) != 0:
        raise ValueError(f"{where}: fp_params 'prime_threshold' = {params['prime_threshold']!r}: on-the-fly "
                         "derivatives are exact, nothing is thresholded; drop 'prime_threshold' or set it to 0")
    if "scaling" in dataset:
        from .lmdb import check_scaling

        try:
            check_scaling(dataset["scaling"])
        except ValueError as exc:
            raise ValueError(f"config['dataset']['scaling']: {exc}") from None
    training_device(config)
    return True


def training_device(config: dict) -> str:
    """Where on-the-fly batches are featurized, scaled and contracted: ``"cuda"`` when
    AtomsTrainer puts the model on a GPU (``config["optim"]["gpus"]`` 1: AMPTorch's
    ``cuda:0``, the current device of CuPy and numba-cuda), else ``"cpu"``.

    Raises ``ValueError`` naming ``'gpus'`` for a value other than 0 or 1 (one batch is
    featurized for one device), and :class:`~fastfp.gpu.device.DeviceError` saying what
    is missing when ``gpus`` is 1 but CuPy, numba-cuda, a GPU or torch's CUDA is not
    there: never a fall-back to the CPU. Under numba's CUDA simulator torch's CUDA is not
    needed (tests)."""
    gpus = config.get("optim", {}).get("gpus", 0)
    if isinstance(gpus, bool) or gpus not in (0, 1):
        raise ValueError(f"config['optim']['gpus'] = {gpus!r} with {KEY!r}: on-the-fly training featurizes "
                         "each batch for one device; set 'gpus' to 1 (the GPU) or 0 (the CPU)")
    if not gpus:
        return "cpu"
    from ..gpu.device import DeviceError, array_module, simulated

    where = f"config['optim']['gpus'] = 1 with {KEY!r} featurizes on the GPU"
    try:
        array_module()
    except DeviceError as exc:
        raise DeviceError(f"{where}: {exc}") from None
    if not simulated() and not torch.cuda.is_available():
        raise DeviceError(f"{where}, but this torch has no CUDA (torch.cuda.is_available() is False): "
                          "install a CUDA build of torch, or set 'gpus' to 0")
    return "cuda"


# -- frames ----------------------------------------------------------------------------


def _label(atoms, index: int, what: str, forces: bool) -> np.ndarray:
    """The energy (or forces) of ``atoms`` (frame ``index``), as AMPTorch reads them
    (``apply_constraint=False``); ``ValueError`` naming the frame if missing or not finite."""
    try:
        value = np.asarray(atoms.get_forces(apply_constraint=False) if forces
                           else atoms.get_potential_energy(apply_constraint=False), dtype=np.float64)
    except Exception as exc:  # no calculator, or one without this property
        raise ValueError(f"frame {index}: no {what} ({type(exc).__name__}: {exc})") from None
    if not np.isfinite(value).all():
        raise ValueError(f"frame {index}: {what} not finite")
    return value


@dataclass(frozen=True)
class LabelledFrames:
    """Frames as flat arrays with their labels: what on-the-fly training keeps.

    Attributes
    ----------
    frames : :class:`~fastfp.frames.PackedFrames` (positions Å, numbers, offsets, cells, pbc)
    energies : (n_frames,) float64, eV
    forces : (n_atoms, 3) float64, eV/Å, or None
    allowed : atomic numbers a frame may hold (the descriptor's elements)
    """

    frames: PackedFrames
    energies: np.ndarray
    forces: np.ndarray | None
    allowed: np.ndarray

    @classmethod
    def from_images(cls, images, allowed: np.ndarray, forces: bool) -> "LabelledFrames":
        """Pack ASE ``Atoms`` with energies (and ``forces``). Raises
        :class:`~fastfp.frames.FrameError` or ``ValueError`` naming the first bad frame."""
        frames = pack_frames(images, allowed)
        energies = np.array([_label(a, k, "energy", False) for k, a in enumerate(images)])
        labels = np.concatenate([_label(a, k, "forces", True) for k, a in enumerate(images)]) if forces else None
        return cls(frames, energies, labels, np.asarray(allowed))

    def __len__(self) -> int:
        return self.frames.n_frames

    def select(self, indices) -> tuple[PackedFrames, np.ndarray, np.ndarray | None]:
        """Frames ``indices`` (in that order) packed, with their energies and forces.
        Each frame is checked again (:func:`~fastfp.frames.check_frame`): a
        :class:`~fastfp.frames.FrameError` names its index in this set."""
        indices = np.asarray(indices, dtype=np.int64)
        offsets = self.frames.offsets
        atoms = np.concatenate([np.arange(offsets[k], offsets[k + 1]) for k in indices])
        packed = PackedFrames(
            positions=self.frames.positions[atoms],
            numbers=self.frames.numbers[atoms],
            offsets=np.concatenate(([0], np.cumsum(offsets[indices + 1] - offsets[indices]))),
            cells=self.frames.cells[indices],
            pbc=self.frames.pbc[indices],
        )
        for n, k in enumerate(indices):
            a0, a1 = packed.offsets[n], packed.offsets[n + 1]
            check_frame(int(k), packed.numbers[a0:a1], packed.positions[a0:a1], packed.cells[n], packed.pbc[n],
                        self.allowed)
        return packed, self.energies[indices], None if self.forces is None else self.forces[atoms]


# -- the data set ----------------------------------------------------------------------


class OnTheFlyDataset(Dataset):
    """Frames featurized per batch, with AMPTorch's scalers fitted on all of them.

    Item ``k`` is ``k`` itself; :meth:`batch` turns a list of items into a batch. The
    attributes AtomsTrainer and its metrics read are those of AMPTorch's
    ``AtomsDataset``: ``feature_scaler``, ``target_scaler``, ``input_dim``,
    ``descriptor``, ``forcetraining``.

    Parameters
    ----------
    images : sequence of ASE ``Atoms`` with energies (and, with ``forcetraining``, forces)
    descriptor : a :mod:`fastfp.amptorch` descriptor
    forcetraining : compute derivatives and train on forces
    scaling : AMPTorch's feature scaling dict (default: normalize to (0, 1) per element)
    scalers : the ``(FeatureScaler, TargetScaler)`` classes (default: fastfp's; the
        AtomsTrainer hook passes AMPTorch's, so checkpoints hold AMPTorch's objects)
    progress : show a progress bar while fitting the feature scaler
    device : ``"cpu"``, or ``"cuda"``: featurize on the current CUDA GPU (the feature
        scaler's fit too, fingerprints only), batches as torch tensors there (see the
        module's docstring). The GPU's neighbour list is complete: the pairs AMPTorch's
        neighbour search drops (atoms within 1e-7 of a periodic face,
        :func:`~fastfp.neighbors.amptorch_binning_mask`), dropped on the CPU, are kept.

    Raises :class:`~fastfp.frames.FrameError` or ``ValueError`` naming the first frame
    that cannot be featurized or lacks an energy (forces), ``ValueError`` for another
    ``device``, :class:`~fastfp.gpu.device.DeviceError` if ``"cuda"`` cannot run.
    """

    def __init__(self, images, descriptor, forcetraining=True, scaling=None, scalers=(FeatureScaler, TargetScaler),
                 progress=True, device="cpu"):
        if not isinstance(descriptor, AMPTorchInterface):
            raise TypeError(f"on-the-fly training needs a fastfp.amptorch descriptor, got {type(descriptor).__name__}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self.descriptor = descriptor
        self.device = device
        self._featurizer = descriptor
        if device == "cuda":  # AMPTorch's neighbour-search emulation is CPU only
            self._featurizer = copy.copy(descriptor)
            self._featurizer.amptorch_binning = False
        self.forcetraining = forcetraining
        self.frames = LabelledFrames.from_images(list(images), descriptor.numbers, forcetraining)
        feature_class, target_class = scalers
        self.target_scaler = target_class([SimpleNamespace(energy=e) for e in self.frames.energies.tolist()],
                                          forcetraining)
        # AMPTorch's rows are as wide as the widest element in the frame (all frames alike)
        per_element, present = descriptor.features_per_element(), np.unique(self.frames.frames.numbers)
        self.input_dim = max(per_element[el] for el, z in zip(descriptor.elements, descriptor.numbers) if z in present)
        scaling = scaling or {"type": "normalize", "range": (0, 1), "elementwise": True}
        self.feature_scaler = self._fit(feature_class, scaling, progress)

    def _fit(self, cls, scaling, progress):
        """A ``cls`` feature scaler fitted to the fingerprints of all frames, computed a
        chunk at a time."""
        statistics = FitStatistics()
        offsets = self.frames.frames.offsets
        chunk = FIT_ATOMS if self.device == "cpu" else FIT_ATOMS_DEVICE
        with tqdm(total=len(self), desc="fitting feature scaler (fastfp, on the fly)", disable=not progress) as bar:
            start = 0
            while start < len(self):
                stop = max(start + 1, int(np.searchsorted(offsets, offsets[start] + chunk)))
                stop = min(stop, len(self))
                packed = self.frames.select(range(start, stop))[0]
                _, fingerprints = self._featurize(packed, derivatives=False)
                statistics.add(fingerprints.cpu().numpy(), packed.numbers)
                bar.update(stop - start)
                start = stop
        return feature_scaler(cls, statistics, self.forcetraining, scaling, torch.get_default_dtype())

    def _featurize(self, packed, derivatives):
        """``(Fingerprints, unscaled fingerprints (n_atoms, input_dim) in torch's default
        dtype)`` of the frames ``packed``, the tensor on the arrays' device (DLPack)."""
        fps = self._featurizer.featurize_packed(packed, derivatives, self.device)
        fingerprints = torch.from_dlpack(self.descriptor._transform(fps.fingerprints))[:, : self.input_dim]
        return fps, fingerprints.to(torch.get_default_dtype())

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> int:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame {index} out of range for {len(self)} frames")
        return index % len(self)

    def batch(self, indices) -> Batch:
        """The frames ``indices`` featurized, scaled and collated as AMPTorch's
        ``DataCollater`` collates its ``Data``: a torch_geometric ``Batch`` with
        ``fingerprint`` (n_atoms, input_dim), ``atomic_numbers``, ``batch``, ``energy``
        (n_frames,) and, with force training, ``forces`` (n_atoms, 3) and ``fprimes``
        (:class:`~fastfp.amptorch.forces.DerivativeBlocks`), all scaled.

        Raises :class:`~fastfp.frames.FrameError` naming the index of a frame that
        cannot be featurized."""
        packed, energies, forces = self.frames.select(indices)
        fps, fingerprints = self._featurize(packed, self.forcetraining)
        device, dtype = fingerprints.device, torch.get_default_dtype()
        numbers = torch.from_dlpack(fps.numbers)
        fingerprints, scale = scale_fingerprints(self.feature_scaler, fingerprints, numbers)
        counts = torch.from_numpy(np.diff(packed.offsets)).to(device)
        targets = SimpleNamespace(energy=torch.tensor(energies, dtype=dtype, device=device),
                                  forces=None if forces is None else torch.tensor(forces, dtype=dtype, device=device))
        self.target_scaler.norm([targets], disable_tqdm=True)  # AMPTorch's arithmetic, on the whole batch at once
        batch = Batch(fingerprint=fingerprints, atomic_numbers=numbers, energy=targets.energy,
                      batch=torch.repeat_interleave(torch.arange(len(counts), device=device), counts,
                                                    output_size=packed.n_atoms),
                      ptr=torch.from_numpy(packed.offsets).to(device))
        if self.forcetraining:
            batch.forces = targets.forces
            factor = 1 / scale if self.feature_scaler.transform == "standardize" else scale
            blocks = (fps.fprime_ptr, fps.fprime_j, fps.fprimes)
            if self.device == "cuda":  # contracted by torch ops where they lie
                blocks = tuple(map(torch.from_dlpack, blocks))
            ptr, j, fprimes = blocks
            batch.fprimes = DerivativeBlocks(ptr, j, fprimes[:, : self.input_dim], factor.contiguous())
        return batch


# -- loading ---------------------------------------------------------------------------


class AheadLoader(DataLoader):
    """A ``DataLoader`` whose batches are collated on one background thread, up to
    :data:`AHEAD` batches ahead of the one being used.

    Indices are drawn in the calling thread, in the order and from the random streams a
    plain ``DataLoader`` (``num_workers=0``) uses, so the batches are the same. An error
    while collating is raised where the batch is used; leaving the loop early (an error,
    ``KeyboardInterrupt``) cancels the batches not started and waits for the one running.
    """

    def __init__(self, dataset, collate_fn=None, **options):
        if options.get("num_workers", 0):
            raise ValueError("AheadLoader collates on a thread of this process; num_workers must be 0")
        self._collate = collate_fn or default_collate
        self._pool = None  # one iteration at a time
        super().__init__(dataset, collate_fn=self._submit, **options)

    def _submit(self, items):
        return self._pool.submit(self._collate, items)

    def __iter__(self):
        pending = deque()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastfp-onthefly")
        try:
            for future in super().__iter__():
                pending.append(future)
                if len(pending) > AHEAD:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def collate_for_trainer(dataset: OnTheFlyDataset, items) -> list:
    """AMPTorch's ``ParallelCollater`` output (one device) for ``items`` of ``dataset``:
    ``[[batch], [[energy, forces]]]`` (``[[energy]]`` without force training)."""
    batch = dataset.batch(items)
    targets = [batch.energy, batch.forces] if dataset.forcetraining else [batch.energy]
    return [[batch], [targets]]


# -- AtomsTrainer hooks (installed by fastfp.amptorch.install) -------------------------


def trainer_dataset(images, descriptor_setup, forcetraining=True, save_fps=True, scaling=None, device="cpu", **_):
    """What AtomsTrainer's ``AtomsDataset(...)`` call builds on the fly: an
    :class:`OnTheFlyDataset` with AMPTorch's descriptor setup and scaler classes, on
    ``device`` (:func:`training_device`; ``save_fps`` has nothing to save here).
    Unknown or bad ``fp_params`` raise ``ValueError`` naming the key."""
    amptorch_dataset = importlib.import_module("amptorch.dataset")
    scheme, params, cutoff_params, elements = descriptor_setup
    try:
        descriptor = amptorch_dataset.construct_descriptor((scheme, params, cutoff_params, elements))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"config['dataset']['fp_params'] ({scheme}): {exc}") from None
    return OnTheFlyDataset(images, descriptor, forcetraining, scaling,
                           (amptorch_dataset.FeatureScaler, amptorch_dataset.TargetScaler), device=device)


def load_dataset(trainer, original) -> None:
    """``AtomsTrainer.load_dataset``: AMPTorch's own (``original``), building an
    :class:`OnTheFlyDataset` where it builds its ``AtomsDataset`` when the config asks
    for on-the-fly training (:func:`check_config`)."""
    if not check_config(trainer.config):
        return original(trainer)
    module = importlib.import_module("amptorch.trainer")
    atoms_dataset = module.AtomsDataset
    module.AtomsDataset = functools.partial(trainer_dataset, device=training_device(trainer.config))
    try:
        return original(trainer)
    finally:
        module.AtomsDataset = atoms_dataset


def load_skorch(trainer, original) -> None:
    """``AtomsTrainer.load_skorch``: AMPTorch's own (``original``), then, for an
    :class:`OnTheFlyDataset`, batches made by it on an :class:`AheadLoader`."""
    original(trainer)
    dataset = getattr(trainer, "train_dataset", None)
    if isinstance(dataset, OnTheFlyDataset):
        collate = functools.partial(collate_for_trainer, dataset)
        trainer.net.set_params(iterator_train=AheadLoader, iterator_valid=AheadLoader,
                               iterator_train__collate_fn=collate, iterator_valid__collate_fn=collate)


# -- one timed epoch (for the benchmark harness) ---------------------------------------


__all__ = ["OnTheFlyDataset", "LabelledFrames", "AheadLoader", "check_config", "training_device", "KEY"]
