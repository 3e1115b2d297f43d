"""Route AMPTorch's hot paths through fastfp, and back.

:func:`install` rebinds, inside an imported AMPTorch:

* the descriptor classes ``construct_descriptor`` builds (``amptorch.dataset`` and
  ``amptorch.dataset_lmdb``) to :mod:`fastfp.amptorch`'s, registered as virtual
  subclasses of AMPTorch's ``BaseDescriptor``;
* ``AtomsToData.convert_all`` to the batched :func:`~fastfp.amptorch.data.images_to_data`
  (for fastfp descriptors; others keep AMPTorch's per-image path);
* ``AtomsDataset.process`` to itself with BLAS and torch's OpenMP threads held to one
  (:func:`~fastfp.threads.single_threaded_libraries`) for fastfp descriptors: fastfp's
  threads featurize, and torch's, woken by the scaler fit's small tensor operations,
  would wait for their cores;
* ``FeatureScaler.norm`` to the vectorised :func:`~fastfp.amptorch.scaling.norm_features`;
* ``sparse_block_diag`` (used by ``DataCollater``) to
  :func:`~fastfp.amptorch.collate.sparse_block_diag`;
* ``BPNN.forward`` and ``SingleNN.forward`` to :mod:`fastfp.amptorch.model`'s;
* ``AtomsTrainer.load_dataset`` and ``load_skorch`` to AMPTorch's own, plus on-the-fly
  training when ``config["dataset"]["on_the_fly"]`` is true (:mod:`fastfp.amptorch.onthefly`).

AMPTorch's classes and their pickled form are unchanged, so checkpoints, normalizers
and LMDBs stay AMPTorch's. :func:`uninstall` restores everything.
"""

from __future__ import annotations

import importlib

from ..threads import single_threaded_libraries
from . import collate, data, descriptors, model, onthefly, scaling

_saved: dict = {}


def _targets():
    """(module, attribute, replacement) for every rebinding."""
    dataset = importlib.import_module("amptorch.dataset")
    dataset_lmdb = importlib.import_module("amptorch.dataset_lmdb")
    preprocessing = importlib.import_module("amptorch.preprocessing")
    amp_model = importlib.import_module("amptorch.model")
    trainer = importlib.import_module("amptorch.trainer").AtomsTrainer
    atoms_to_data = preprocessing.AtomsToData
    original_convert_all = _saved.get((atoms_to_data, "convert_all"), atoms_to_data.convert_all)
    original_load_dataset = _saved.get((trainer, "load_dataset"), trainer.load_dataset)
    original_load_skorch = _saved.get((trainer, "load_skorch"), trainer.load_skorch)
    original_process = _saved.get((dataset.AtomsDataset, "process"), dataset.AtomsDataset.process)

    def process(self):
        if not isinstance(self.descriptor, descriptors.AMPTorchInterface):
            return original_process(self)
        with single_threaded_libraries():  # the scaler fit and scaling too
            return original_process(self)

    def convert_all(self, atoms_collection, disable_tqdm=False):
        if not isinstance(self.descriptor, descriptors.AMPTorchInterface):
            return original_convert_all(self, atoms_collection, disable_tqdm)
        images = atoms_collection.select() if hasattr(atoms_collection, "select") else atoms_collection
        return data.images_to_data(
            self.descriptor, list(images), self.r_energy, self.r_forces, self.fprimes, disable_tqdm
        )

    def load_dataset(self):
        return onthefly.load_dataset(self, original_load_dataset)

    def load_skorch(self):
        return onthefly.load_skorch(self, original_load_skorch)

    targets = [(atoms_to_data, "convert_all", convert_all),
               (trainer, "load_dataset", load_dataset),
               (trainer, "load_skorch", load_skorch),
               (dataset.AtomsDataset, "process", process),
               (preprocessing.FeatureScaler, "norm", scaling.norm_features),
               (dataset, "sparse_block_diag", collate.sparse_block_diag),
               (amp_model.BPNN, "forward", model.bpnn_forward),
               (amp_model.SingleNN, "forward", model.singlenn_forward)]
    for module in (dataset, dataset_lmdb):
        for name in ("GMPOrderNorm", "GMP", "Gaussian"):
            targets.append((module, name, getattr(descriptors, name)))
    return targets


def install() -> None:
    """Route AMPTorch's preprocessing and training hot paths through fastfp.

    Raises ``ImportError`` if AMPTorch is not installed. Calling it twice is harmless.
    """
    base = importlib.import_module("amptorch.descriptor.base_descriptor").BaseDescriptor
    for cls in (descriptors.GMPOrderNorm, descriptors.GMP, descriptors.Gaussian):
        base.register(cls)
    for owner, name, replacement in _targets():
        _saved.setdefault((owner, name), getattr(owner, name))
        setattr(owner, name, replacement)


def uninstall() -> None:
    """Put back everything :func:`install` rebound (the ``BaseDescriptor`` registration
    stays; it only makes fastfp's classes pass AMPTorch's ``isinstance`` check)."""
    for (owner, name), original in _saved.items():
        setattr(owner, name, original)
    _saved.clear()


def installed() -> bool:
    return bool(_saved)
