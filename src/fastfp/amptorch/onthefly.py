"""On-the-fly training: fingerprints and derivatives computed per batch, never stored.

With ``config["dataset"]["on_the_fly"] = True``, AMPTorch's ``AtomsTrainer``
(``amptorch/trainer.py``) trains from an :class:`OnTheFlyDataset` instead of its
``AtomsDataset``: patched AMPTorch with ``config["dataset"]["fp_backend"] = "fastfp"``
asks fastfp's backend for it (:func:`fastfp.amptorch.backend.dataset_class`), unpatched
AMPTorch gets it through :func:`fastfp.amptorch.install`. The data set keeps only the
frames as flat arrays (positions, atomic numbers, cells, pbc, energies, forces:
:class:`LabelledFrames`) and the fitted scalers. Each batch is featurized with exact
derivatives when the DataLoader asks for it, scaled, handed to the model with its
derivatives (no COO, no thresholding) and dropped after the step, so memory is bounded
by the batch whatever the number of frames. A batch hands its derivatives over in one
of two ways (``config["dataset"]["fastfp_fprimes"]``, ``OnTheFlyDataset(...,
fprimes=...)``): ``"blocks"``, fastfp's pair blocks featurized with the batch
(:class:`~fastfp.amptorch.forces.DerivativeBlocks`), as stores hold them, or
``"recomputed"``, never stored at all
(:class:`~fastfp.amptorch.forces.RecomputedDerivatives`: the kernels recompute them
inside the force contraction and its backward, so a batch's memory grows with its atoms,
not its pairs). The default, ``"auto"``, takes blocks on the GPU, and on the CPU blocks
for a batch of at most :data:`~fastfp.jacobian.PART_ATOMS` atoms whose blocks fit
:data:`BLOCKS_BYTES` (the faster way there) and recomputation for a larger one.

With ``config["dataset"]["fastfp_store"] = PATH`` instead (no ``raw_data``), the
batches are read from a fastfp store with labels (:class:`StoreDataset`): fingerprints,
derivative blocks, energies and forces as the store holds them, a batch at a time.

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
data set featurizes on the GPU (``device="cuda"``): the frames and labels are copied to
the device once, each batch is gathered and featurized there, on a CUDA stream other
than the default one, so that it overlaps the training step of the batch before on the
default stream (:func:`~fastfp.gpu.device.side_stream`); fingerprints, derivative
blocks and atomic numbers reach torch by DLPack where they lie (``torch.from_dlpack``,
no copy), and scaling, the model and the force contraction
(:class:`~fastfp.amptorch.forces.DerivativeBlocks` of torch tensors) run there:
derivatives never leave the device. With ``fastfp_fprimes = "recomputed"`` the GPU
stores no blocks either: the batch keeps its neighbour pairs and the GPU kernel
recomputes the derivatives in each product of the force contraction
(:class:`~fastfp.gpu.jacobian.DeviceJacobian`). Blocks stay the GPU's default until a
GPU run of ``scripts/gpu_check.py`` (its on-the-fly epoch with both) shows otherwise.
The feature scaler is fitted on the GPU too (fingerprints only; each chunk's
fingerprints come to the host for the statistics). Under numba's CUDA simulator the
same code runs on NumPy arrays and CPU tensors.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torch_geometric.data import Batch
from tqdm.auto import tqdm

from ..config import require_same_settings
from ..descriptors.base import check_device
from ..fingerprints import Fingerprints
from ..frames import PackedFrames, check_frames, labels_of, pack_frames
from ..jacobian import PART_ATOMS
from ..threads import prefetched, single_threaded_libraries
from .descriptors import AMPTorchInterface, construct_descriptor
from .forces import DerivativeBlocks, RecomputedDerivatives
from .scaling import (DEFAULT_SCALING, FeatureScaler, FitStatistics, TargetScaler, check_scaling, feature_scaler,
                      scale_fingerprints)

#: the key in ``config["dataset"]`` that turns on-the-fly training on
KEY = "on_the_fly"
#: the key in ``config["dataset"]`` that names a fastfp store to train from
STORE_KEY = "fastfp_store"
#: the key in ``config["dataset"]`` that chooses how on-the-fly batches hand over their
#: derivatives (:data:`FPRIMES`)
FPRIMES_KEY = "fastfp_fprimes"
#: the ways: "auto" (the default: on the CPU stored blocks for a batch of at most
#: :data:`~fastfp.jacobian.PART_ATOMS` atoms whose blocks take at most
#: :data:`BLOCKS_BYTES`, recomputed for a larger one; on the GPU blocks),
#: recomputed in the force contraction, or stored blocks
FPRIMES = ("auto", "recomputed", "blocks")
#: "auto" on the CPU: the largest derivative blocks a batch stores (an upper bound: pairs
#: times features times 3 float64). Blocks are the faster way for batches of the default
#: workload's size (16 frames, about 90 MB: 4,000 frames an epoch in 21 s against 25 s
#: recomputed, reports/runs.md), recomputation keeps larger batches in bounded memory.
BLOCKS_BYTES = 256 * 2**20
#: ``config["dataset"]`` keys AtomsTrainer reads (``descriptor`` and ``fp_length`` it
#: writes itself), and fastfp's
DATASET_KEYS = {"raw_data", "elements", "fp_scheme", "fp_params", "cutoff_params", "scaling", "save_fps",
                "val_split", "val_split_mode", "descriptor", "fp_length", "fp_backend", KEY, STORE_KEY, FPRIMES_KEY}
#: keys of AMPTorch's LMDB data sets, which hold precomputed fingerprints
LMDB_KEYS = ("lmdb_path", "cache")
#: atoms per featurization call while fitting the feature scaler (fingerprints only, so
#: little memory; 4,096 atoms took half the time of 512 on the default workload)
FIT_ATOMS = 4096
#: frames per read of stored fingerprints while fitting the feature scaler
FIT_FRAMES = 256
#: the same on the GPU: many frames per kernel launch (about 1,400 frames of the
#: default workload, well under 1 GB of neighbour list)
FIT_ATOMS_DEVICE = 2**17
#: batches featurized ahead of the one the model trains on (featurization dominates: one
#: is enough to keep it busy; each holds its derivative blocks, ~60 MB for 16 frames of
#: the default workload)
AHEAD = 1


def check_config(config: dict) -> str | None:
    """How ``config`` (AtomsTrainer's) asks fastfp to feed the trainer: :data:`KEY`
    (``"on_the_fly"``: frames featurized per batch), :data:`STORE_KEY`
    (``"fastfp_store"``: batches read from a store) or None (AMPTorch's own data sets),
    after checking that fastfp can do what it asks. Raises ``ValueError`` naming the
    offending key: ``on_the_fly`` not true or false, both modes at once, an LMDB key, a
    key AtomsTrainer does not know in ``config["dataset"]``, no ``raw_data`` on the fly
    (``raw_data`` with a store), a ``fp_scheme`` other than gmpordernorm, gmp and gaussian,
    ``fp_params`` ``"log"`` (no derivatives) with forces or a nonzero
    ``"prime_threshold"`` (derivatives here are exact), a bad ``scaling``, or a
    ``config["optim"]["gpus"]`` other than 0 or 1 (with a store: other than 0), a
    ``fastfp_fprimes`` other than those of :data:`FPRIMES`, or given without
    ``on_the_fly``; with
    ``gpus`` 1 and no GPU to run on, :class:`~fastfp.gpu.device.DeviceError`
    (:func:`training_device`). Unknown ``fp_params`` keys are reported when the
    descriptor is built (:func:`trainer_dataset`), settings that differ from the store's
    when it is opened (:func:`load_dataset`)."""
    dataset = config.get("dataset", {})
    flag = dataset.get(KEY, False)
    if not isinstance(flag, bool):
        raise ValueError(f"config['dataset'][{KEY!r}] must be True or False, got {flag!r}")
    mode = STORE_KEY if STORE_KEY in dataset else KEY if flag else None
    if FPRIMES_KEY in dataset and mode != KEY:
        raise ValueError(f"config['dataset'][{FPRIMES_KEY!r}] chooses how on-the-fly batches hand over their "
                         f"derivatives: it needs {KEY!r}")
    if mode is None:
        return None
    where = f"config['dataset'] with {mode!r}"
    fprimes = dataset.get(FPRIMES_KEY, None)
    if fprimes not in (None, *FPRIMES):
        raise ValueError(f"config['dataset'][{FPRIMES_KEY!r}] must be one of {FPRIMES}, got {fprimes!r}")
    if flag and mode == STORE_KEY:
        raise ValueError(f"{where}: give either {KEY!r} (frames featurized per batch) or {STORE_KEY!r} "
                         "(batches read from a store), not both")
    for key in LMDB_KEYS:
        if key in dataset:
            raise ValueError(f"{where}: {key!r} is for AMPTorch's LMDB data sets (precomputed fingerprints); "
                             f"give the frames as 'raw_data' or a store as {STORE_KEY!r} instead")
    unknown = sorted(set(dataset) - DATASET_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(DATASET_KEYS)}")
    if mode == KEY and "raw_data" not in dataset:
        raise ValueError(f"{where}: 'raw_data' (the frames, or a file of them) is required")
    if mode == STORE_KEY and "raw_data" in dataset:
        raise ValueError(f"{where}: the frames come from the store; drop 'raw_data'")
    scheme = dataset.get("fp_scheme", "gmpordernorm")
    if not isinstance(scheme, str) or scheme.lower() not in ("gmpordernorm", "gmp", "gaussian"):
        raise ValueError(f"{where}: 'fp_scheme' {scheme!r} is not one fastfp computes; "
                         "use 'gmpordernorm', 'gmp' or 'gaussian'")
    params = dataset.get("fp_params", {} if mode == STORE_KEY else None)
    if not isinstance(params, dict):
        raise ValueError(f"{where}: 'fp_params' must be a dict, got {params!r}")
    forces = config.get("model", {}).get("get_forces", True)
    if forces and params.get("log", False):
        raise ValueError(f"{where}: fp_params 'log' fingerprints have no derivatives, so forces cannot be "
                         "trained (as in AMPTorch); drop 'log' or set config['model']['get_forces'] = False")
    if params.get("prime_threshold", 0) != 0:
        raise ValueError(f"{where}: fp_params 'prime_threshold' = {params['prime_threshold']!r}: fastfp's "
                         "derivatives are exact, nothing is thresholded; drop 'prime_threshold' or set it to 0")
    if "scaling" in dataset:
        try:
            check_scaling(dataset["scaling"])
        except ValueError as exc:
            raise ValueError(f"config['dataset']['scaling']: {exc}") from None
    if mode == STORE_KEY and config.get("optim", {}).get("gpus", 0):
        raise ValueError(f"{where}: config['optim']['gpus'] = {config['optim']['gpus']!r}: training from a store "
                         "contracts forces on the CPU; set 'gpus' to 0, or train on the fly on the GPU")
    training_device(config)
    return mode


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
    def from_images(cls, images, allowed: np.ndarray, *, forces: bool) -> "LabelledFrames":
        """Pack ASE ``Atoms`` with energies (and ``forces``). Raises
        :class:`~fastfp.frames.FrameError` or ``ValueError`` naming the first bad frame."""
        frames = pack_frames(images, allowed)
        energies, labels = labels_of(images, forces=forces)
        return cls(frames, energies, labels, np.asarray(allowed))

    def __len__(self) -> int:
        return self.frames.n_frames

    def select(self, indices) -> tuple[PackedFrames, np.ndarray, np.ndarray | None]:
        """Frames ``indices`` (in that order) packed, with their energies and forces.
        The frames are checked again (:func:`~fastfp.frames.check_frames`): a
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
        check_frames(packed, self.allowed, indices)
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
    progress : show a progress bar while fitting the feature scaler (on a terminal only)
    device : ``"cpu"``, or ``"cuda"``: featurize on the current CUDA GPU (the feature
        scaler's fit too, fingerprints only), batches as torch tensors there (see the
        module's docstring). The GPU's neighbour list is complete: the pairs AMPTorch's
        neighbour search drops (atoms within 1e-7 of a periodic face,
        :func:`~fastfp.neighbors.amptorch_binning_mask`), dropped on the CPU, are kept.
    fprimes : how a batch hands over its derivatives (force training): ``"recomputed"``
        (:class:`~fastfp.amptorch.forces.RecomputedDerivatives`, never stored),
        ``"blocks"`` (:class:`~fastfp.amptorch.forces.DerivativeBlocks`) or ``"auto"``
        (the default: on the CPU blocks for a batch of at most
        :data:`~fastfp.jacobian.PART_ATOMS` atoms whose blocks take at most
        :data:`BLOCKS_BYTES`, recomputed for a larger one; on the GPU blocks)

    Raises :class:`~fastfp.frames.FrameError` or ``ValueError`` naming the first frame
    that cannot be featurized or lacks an energy (forces), ``ValueError`` for another
    ``device`` or ``fprimes``, :class:`~fastfp.gpu.device.DeviceError` if ``"cuda"``
    cannot run.
    """

    def __init__(self, images, descriptor, *, forcetraining=True, scaling=None, scalers=(FeatureScaler, TargetScaler),
                 progress=True, device="cpu", fprimes=None):
        fprimes = fprimes or "auto"
        if fprimes not in FPRIMES:
            raise ValueError(f"fprimes must be one of {FPRIMES}, got {fprimes!r}")
        #: how batches hand over their derivatives (:data:`FPRIMES`)
        self.fprimes = fprimes
        self.frames = LabelledFrames.from_images(list(images), descriptor.numbers, forces=forcetraining)
        self._setup(descriptor, forcetraining, self.frames.energies, np.unique(self.frames.frames.numbers), scaling,
                    scalers, progress, device)

    def _setup(self, descriptor, forcetraining, energies, present, scaling, scalers, progress, device) -> None:
        """The descriptor, the device, and the scalers fitted to ``energies`` and to the
        fingerprints of :meth:`_fingerprint_parts` (atomic numbers ``present``)."""
        if not isinstance(descriptor, AMPTorchInterface):
            raise TypeError(f"on-the-fly training needs a fastfp.amptorch descriptor, got {type(descriptor).__name__}")
        #: AMPTorch's neighbour binning where there is one: on the CPU
        self.amptorch_binning = device == "cpu"
        check_device(device, amptorch_binning=self.amptorch_binning)
        self.descriptor = descriptor
        self.device = device
        self.forcetraining = forcetraining
        feature_class, target_class = scalers
        self.target_scaler = target_class([SimpleNamespace(energy=e) for e in energies.tolist()], forcetraining)
        # AMPTorch's rows are as wide as the widest element in the frame (all frames alike)
        per_element = descriptor.features_per_element()
        self.input_dim = max(per_element[el] for el, z in zip(descriptor.elements, descriptor.numbers) if z in present)
        statistics = FitStatistics()
        with tqdm(total=len(self), desc="fitting feature scaler (fastfp)", disable=None if progress else True) as bar:
            for fps in self._fingerprint_parts():
                statistics.add(self._rows(fps).cpu().numpy(), torch.from_dlpack(fps.numbers).cpu().numpy())
                bar.update(fps.n_frames)
        self.feature_scaler = feature_scaler(feature_class, statistics, forcetraining, scaling or DEFAULT_SCALING,
                                             torch.get_default_dtype())

    def _fingerprint_parts(self):
        """Fingerprints (no derivatives) of all frames, :data:`FIT_ATOMS` atoms at a time
        (:data:`FIT_ATOMS_DEVICE` on the GPU). On the CPU the neighbours of the next part
        are searched on a background thread while the kernels featurize this one
        (:func:`~fastfp.threads.prefetched`)."""
        offsets = self.frames.frames.offsets
        chunk = FIT_ATOMS if self.device == "cpu" else FIT_ATOMS_DEVICE
        parts = []
        start = 0
        while start < len(self):
            stop = min(len(self), max(start + 1, int(np.searchsorted(offsets, offsets[start] + chunk))))
            parts.append(range(start, stop))
            start = stop
        if self.device == "cuda":
            for indices in parts:
                yield self._read_on_device(indices, derivatives=False)[0]
            return

        def searched(indices):
            packed = self.frames.select(indices)[0]
            return packed, self.descriptor.neighbor_pairs(packed, amptorch_binning=self.amptorch_binning)

        with single_threaded_libraries():
            for _, (packed, pairs) in prefetched(searched, parts, 1):
                yield self.descriptor.featurize_pairs(packed, pairs, derivatives=False)

    def _read(self, indices):
        """``(Fingerprints, energies, forces, jacobian)`` of the frames ``indices``,
        featurized here, on :attr:`device`: with force training either the derivative
        blocks in the fingerprints or (:attr:`fprimes` "recomputed", or "auto" for blocks
        above :data:`BLOCKS_BYTES` or more than :data:`~fastfp.jacobian.PART_ATOMS` atoms) a
        :class:`~fastfp.jacobian.Jacobian` of the frames (:meth:`Descriptor.jacobian
        <fastfp.descriptors.base.Descriptor.jacobian>`; on the GPU a
        :class:`~fastfp.gpu.jacobian.DeviceJacobian`), else None."""
        if self.device == "cuda":
            return self._read_on_device(indices, derivatives=self.forcetraining)
        packed, energies, forces = self.frames.select(indices)
        pairs = None
        if self.forcetraining and self.fprimes == "auto" and packed.n_atoms <= PART_ATOMS:
            # blocks while they fit BLOCKS_BYTES; else the pairs serve the Jacobian's one part.
            # Larger batches go to the Jacobian unsearched: their pairs alone could take
            # gigabytes (32 bytes each), and their blocks mostly exceed BLOCKS_BYTES
            with single_threaded_libraries():
                pairs = self.descriptor.neighbor_pairs(packed, amptorch_binning=self.amptorch_binning)
                if len(pairs.j) * self.descriptor.n_features * 24 <= BLOCKS_BYTES:
                    return self.descriptor.featurize_pairs(packed, pairs), energies, forces, None
        if self.forcetraining and self.fprimes != "blocks":
            jacobian = self.descriptor.jacobian(packed, amptorch_binning=self.amptorch_binning, pairs=pairs)
            return jacobian.fingerprints(), energies, forces, jacobian
        fps = self.descriptor.featurize_packed(packed, derivatives=self.forcetraining,
                                               amptorch_binning=self.amptorch_binning)
        return fps, energies, forces, None

    @functools.cached_property
    def _on_device(self):
        """``(array module, DeviceFrames, energies, forces)``: the frames and labels copied
        to the device once (labels as torch tensors there, forces None without force
        training); later changes to the images do not reach them."""
        from ..gpu.device import array_module
        from ..gpu.frames import to_device

        xp = array_module()
        labels = (self.frames.energies, self.frames.forces)
        energies, forces = (None if a is None else torch.from_dlpack(xp.asarray(a)) for a in labels)
        return xp, to_device(xp, self.frames.frames), energies, forces

    def _read_on_device(self, indices, derivatives: bool):
        """:meth:`_read` on the GPU: the frames ``indices`` gathered and featurized
        there, on fastfp's side stream (:func:`~fastfp.gpu.device.side_stream`: the
        loader's thread featurizes the next batch while the training step of the
        current one runs on the default stream); energies and forces gathered there.
        With ``derivatives`` and :attr:`fprimes` "recomputed", the fingerprints come
        without blocks and with the batch's :class:`~fastfp.gpu.jacobian.DeviceJacobian`."""
        from ..gpu.device import side_stream
        from ..gpu.featurize import featurize_frames
        from ..gpu.jacobian import DeviceJacobian

        xp, frames, energies, forces = self._on_device
        jacobian = None
        with side_stream():
            batch, atoms = frames.select(xp, indices)
            if derivatives and self.fprimes == "recomputed":
                jacobian = DeviceJacobian(self.descriptor, batch)
                fps = jacobian.fingerprints()
            else:
                fps = featurize_frames(self.descriptor, batch, derivatives=derivatives,
                                       result_dtype=np.dtype(np.float64))
        frame_index = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=energies.device)
        return fps, energies[frame_index], None if forces is None else forces[torch.from_dlpack(atoms)], jacobian

    def _rows(self, fps) -> torch.Tensor:
        """Unscaled fingerprints (n_atoms, input_dim) of ``fps`` in torch's default dtype,
        on the arrays' device (DLPack: no copy)."""
        rows = torch.from_dlpack(self.descriptor.transform(fps.fingerprints))[:, : self.input_dim]
        return rows.to(torch.get_default_dtype())

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
        (:class:`~fastfp.amptorch.forces.RecomputedDerivatives` or
        :class:`~fastfp.amptorch.forces.DerivativeBlocks`, by :attr:`fprimes`), all scaled.

        Raises :class:`~fastfp.frames.FrameError` naming the index of a frame that
        cannot be featurized."""
        fps, energies, forces, jacobian = self._read(indices)
        fingerprints = self._rows(fps)
        device, dtype = fingerprints.device, torch.get_default_dtype()
        numbers = torch.from_dlpack(fps.numbers)
        fingerprints, scale = scale_fingerprints(self.feature_scaler, fingerprints, numbers)
        offsets = torch.from_dlpack(fps.offsets)
        counts = torch.diff(offsets)
        targets = SimpleNamespace(energy=_tensor(energies, dtype, device),
                                  forces=None if forces is None else _tensor(forces, dtype, device))
        self.target_scaler.norm([targets], disable_tqdm=True)  # AMPTorch's arithmetic, on the whole batch at once
        batch = Batch(fingerprint=fingerprints, atomic_numbers=numbers, energy=targets.energy,
                      batch=torch.repeat_interleave(torch.arange(len(counts), device=device), counts,
                                                    output_size=len(numbers)),
                      ptr=offsets)
        if self.forcetraining:
            batch.forces = targets.forces
            factor = 1 / scale if self.feature_scaler.transform == "standardize" else scale
            if jacobian is not None:
                batch.fprimes = RecomputedDerivatives(jacobian, factor.contiguous())
                return batch
            blocks = (fps.fprime_ptr, fps.fprime_j, fps.fprimes)
            if self.device == "cuda":  # contracted by torch ops where they lie
                blocks = tuple(map(torch.from_dlpack, blocks))
            ptr, j, fprimes = blocks
            batch.fprimes = DerivativeBlocks(ptr, j, fprimes[:, : self.input_dim], factor.contiguous())
        return batch

    def loader_params(self) -> dict:
        """The skorch parameters AtomsTrainer's net takes for this data set (AMPTorch's
        data-set hook): batches made by :meth:`batch` on an :class:`AheadLoader`, in
        AMPTorch's ``ParallelCollater`` form (:func:`collate_for_trainer`)."""
        collate = functools.partial(collate_for_trainer, self)
        return {"iterator_train": AheadLoader, "iterator_valid": AheadLoader,
                "iterator_train__collate_fn": collate, "iterator_valid__collate_fn": collate}


def _tensor(values, dtype, device) -> torch.Tensor:
    """``values`` (a NumPy array, or a tensor on ``device`` gathered for this batch) as a
    new tensor of ``dtype`` on ``device``."""
    if isinstance(values, torch.Tensor):
        return values.to(dtype)
    return torch.tensor(values, dtype=dtype, device=device)


class StoreDataset(OnTheFlyDataset):
    """Frames read from a fastfp store a batch at a time: fingerprints, derivative blocks,
    energies and forces as :func:`fastfp.featurize_to_store <fastfp.store.featurize_to_store>`
    wrote them (``fastfp featurize FRAMES --derivatives --out STORE`` of frames with
    energies and forces), scaled and handed over as :class:`OnTheFlyDataset` hands them
    over. Memory holds one batch (and the energies), whatever the size of the store.

    Parameters
    ----------
    store : an open :class:`~fastfp.store.Store` with labels (and, with
        ``forcetraining``, derivatives)
    descriptor, forcetraining, scaling, scalers, progress : as :class:`OnTheFlyDataset`;
        ``descriptor`` has the store's settings (the AtomsTrainer hook checks that)

    The feature scaler is fitted by one pass over the stored fingerprints (derivatives
    not read). Raises :class:`~fastfp.store.StoreError` for a store without labels or,
    with force training, without derivatives.
    """

    def __init__(self, store, descriptor, *, forcetraining=True, scaling=None, scalers=(FeatureScaler, TargetScaler),
                 progress=True):
        from ..store import StoreError

        if not store.has_labels:
            raise StoreError(f"{store.path}: no energies and forces in the store (its frames had none): training "
                             "needs them; featurize frames with energies and forces")
        if forcetraining and not store.has_derivatives:
            raise StoreError(f"{store.path}: no derivatives in the store: force training needs them "
                             "(fastfp featurize --derivatives), or set config['model']['get_forces'] = False")
        self.store = store
        self.fprimes = "blocks"
        present = np.unique(np.concatenate([fps.numbers for fps in store.chunks(FIT_FRAMES, derivatives=False)]))
        self._setup(descriptor, forcetraining, store.labels(0, len(store))[0], present, scaling, scalers, progress,
                    "cpu")

    def _fingerprint_parts(self):
        return self.store.chunks(FIT_FRAMES, derivatives=False)

    def _read(self, indices):
        """``(Fingerprints, energies, forces, None)`` of the frames ``indices``, read from the store."""
        indices = [int(k) for k in indices]
        parts = [self.store.frames(k, k + 1, self.forcetraining) for k in indices]
        labels = [self.store.labels(k, k + 1) for k in indices]
        return (Fingerprints.concatenate(parts), np.concatenate([e for e, _ in labels]),
                np.concatenate([f for _, f in labels]) if self.forcetraining else None, None)

    def __len__(self) -> int:
        return len(self.store)


# -- loading ---------------------------------------------------------------------------


class AheadLoader(DataLoader):
    """A ``DataLoader`` whose batches are collated on one background thread, up to
    :data:`AHEAD` batches ahead of the one being used (:func:`~fastfp.threads.prefetched`:
    with ``FASTFP_NUM_THREADS=1``, in the calling thread, as all of fastfp's work).

    Indices are drawn and items fetched in the calling thread, in the order and from the
    random streams a plain ``DataLoader`` (``num_workers=0``) uses, so the batches are the
    same. An error while collating is raised where the batch is used; leaving the loop
    early (an error, ``KeyboardInterrupt``) cancels the batches not started and waits for
    the one running.
    """

    def __init__(self, dataset, collate_fn=None, **options):
        if options.get("num_workers", 0):
            raise ValueError("AheadLoader collates on a thread of this process; num_workers must be 0")
        self._collate = collate_fn or default_collate
        # the DataLoader's own iteration hands each batch's items over as fetched
        super().__init__(dataset, collate_fn=_as_fetched, **options)

    def __iter__(self):
        for _, batch in prefetched(self._collate, super().__iter__(), AHEAD):
            yield batch


def _as_fetched(items):
    """:class:`AheadLoader`'s ``collate_fn`` for ``DataLoader``: the items as they are."""
    return items


def collate_for_trainer(dataset: OnTheFlyDataset, items) -> list:
    """AMPTorch's ``ParallelCollater`` output (one device) for ``items`` of ``dataset``:
    ``[[batch], [[energy, forces]]]`` (``[[energy]]`` without force training)."""
    batch = dataset.batch(items)
    targets = [batch.energy, batch.forces] if dataset.forcetraining else [batch.energy]
    return [[batch], [targets]]


# -- AtomsTrainer's data set (fastfp.amptorch.backend.dataset_class) -----------------


def trainer_dataset(images, descriptor_setup, forcetraining=True, save_fps=True, scaling=None, store=None,
                    device="cpu", fprimes=None, **_):
    """What AtomsTrainer's ``AtomsDataset(...)`` call builds: an :class:`OnTheFlyDataset`
    of ``images`` on ``device`` (:func:`training_device`), or with ``store`` a
    :class:`StoreDataset`, with AMPTorch's descriptor setup and scaler classes
    (``save_fps`` has nothing to save here) and ``fprimes`` (``config["dataset"]``'s
    :data:`FPRIMES_KEY`, default by device). Unknown or bad ``fp_params`` raise
    ``ValueError`` naming the key."""
    from amptorch.preprocessing import FeatureScaler as AMPTorchFeatureScaler
    from amptorch.preprocessing import TargetScaler as AMPTorchTargetScaler

    scheme = descriptor_setup[0]
    try:
        descriptor = construct_descriptor(descriptor_setup)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"config['dataset']['fp_params'] ({scheme}): {exc}") from None
    scalers = (AMPTorchFeatureScaler, AMPTorchTargetScaler)
    if store is not None:
        return StoreDataset(store, descriptor, forcetraining=forcetraining, scaling=scaling, scalers=scalers)
    return OnTheFlyDataset(images, descriptor, forcetraining=forcetraining, scaling=scaling, scalers=scalers,
                           device=device, fprimes=fprimes)


def open_training_store(dataset: dict):
    """The store ``dataset[STORE_KEY]`` names, opened, and ``dataset`` (AtomsTrainer's
    ``config["dataset"]``) given what AtomsTrainer reads: the store's descriptor setup
    (``fp_scheme``, ``fp_params``, ``cutoff_params``, ``elements``) where the config has
    none, and an empty ``raw_data``. Descriptor settings the config does give must be the
    store's: :class:`~fastfp.store.StoreError` names those that differ."""
    from ..config import descriptor_setup
    from ..store import StoreError, open_store

    path = dataset[STORE_KEY]
    store = open_store(path)
    if "fp_params" in dataset:
        given = {"fp_scheme": dataset.get("fp_scheme", "gmpordernorm"), "fp_params": dataset["fp_params"],
                 **{k: dataset[k] for k in ("elements", "cutoff_params") if k in dataset}}
        require_same_settings(store.config, given, f"config['dataset'][{STORE_KEY!r}] ({path})",
                              stored_hash=store.config_hash, error=StoreError)
    scheme, params, cutoff_params, elements = descriptor_setup(store.config)
    dataset.update(fp_scheme=scheme, fp_params=params, cutoff_params=cutoff_params, elements=elements, raw_data=[])
    return store


__all__ = ["OnTheFlyDataset", "StoreDataset", "LabelledFrames", "AheadLoader", "check_config", "training_device", "KEY",
           "STORE_KEY", "FPRIMES_KEY"]
