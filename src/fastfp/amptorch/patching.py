"""Route unpatched AMPTorch's hot paths through fastfp's backend hooks, and back.

AMPTorch with fastfp's patch series calls the hooks of :mod:`fastfp.amptorch.backend`
itself (``config["dataset"]["fp_backend"] = "fastfp"``). For unpatched AMPTorch,
:func:`install` rebinds, inside an imported AMPTorch, the attributes where the series
adds those calls, to the same hooks:

* the descriptor classes ``construct_descriptor`` builds (``amptorch.dataset`` and
  ``amptorch.dataset_lmdb``) to the backend's (:func:`~fastfp.amptorch.backend.descriptor_classes`),
  registered as virtual subclasses of AMPTorch's ``BaseDescriptor``;
* ``AtomsToData.convert_all`` to the descriptor's batched ``images_to_data``
  (fastfp descriptors; others keep AMPTorch's per-image path);
* ``AtomsDataset.process`` to itself inside the backend's
  :func:`~fastfp.amptorch.backend.preprocessing` context (fastfp descriptors);
* ``FeatureScaler.norm`` to :func:`~fastfp.amptorch.backend.norm_features`;
* ``sparse_block_diag`` (used by ``DataCollater``) to
  :func:`~fastfp.amptorch.backend.sparse_block_diag`;
* ``BPNN.forward`` and ``SingleNN.forward`` to
  :func:`~fastfp.amptorch.model.energy_and_forces`, what the patched models call through
  the hook of the batch's collated derivatives (``batch.fprimes.energy_and_forces``),
  and the models' ``atomic_energies``, which the series adds, to
  :func:`~fastfp.amptorch.model.bpnn_atomic_energies` and
  :func:`~fastfp.amptorch.model.singlenn_atomic_energies`;
* ``AtomsTrainer.load_dataset`` to AMPTorch's own after
  :func:`~fastfp.amptorch.backend.check_config`, building the data set of
  :func:`~fastfp.amptorch.backend.dataset_class` where it builds its ``AtomsDataset``
  (on-the-fly training, a store), and ``load_skorch`` to AMPTorch's own plus that data
  set's ``loader_params``.

AMPTorch's classes and their pickled form are unchanged, so checkpoints, normalizers
and LMDBs stay AMPTorch's. :func:`uninstall` restores everything (and removes what
was added).
"""

from __future__ import annotations

import importlib
import importlib.util

from . import backend, descriptors, model

_saved: dict = {}
#: what :func:`install` keeps for an attribute it adds: :func:`uninstall` deletes it
_ABSENT = object()


def _targets():
    """(module, attribute, replacement) for every rebinding."""
    dataset = importlib.import_module("amptorch.dataset")
    dataset_lmdb = importlib.import_module("amptorch.dataset_lmdb")
    preprocessing = importlib.import_module("amptorch.preprocessing")
    amp_model = importlib.import_module("amptorch.model")
    trainer_module = importlib.import_module("amptorch.trainer")
    trainer = trainer_module.AtomsTrainer
    atoms_to_data = preprocessing.AtomsToData
    original_convert_all = _saved.get((atoms_to_data, "convert_all"), atoms_to_data.convert_all)
    original_load_dataset = _saved.get((trainer, "load_dataset"), trainer.load_dataset)
    original_load_skorch = _saved.get((trainer, "load_skorch"), trainer.load_skorch)
    original_process = _saved.get((dataset.AtomsDataset, "process"), dataset.AtomsDataset.process)

    def process(self):
        if not isinstance(self.descriptor, descriptors.AMPTorchInterface):
            return original_process(self)
        with backend.preprocessing():
            return original_process(self)

    def convert_all(self, atoms_collection, disable_tqdm=False):
        if not isinstance(self.descriptor, descriptors.AMPTorchInterface):
            return original_convert_all(self, atoms_collection, disable_tqdm)
        images = atoms_collection.select() if hasattr(atoms_collection, "select") else atoms_collection
        return self.descriptor.images_to_data(images, r_energy=self.r_energy, r_forces=self.r_forces,
                                              fprimes=self.fprimes, disable_tqdm=disable_tqdm)

    def load_dataset(self):
        backend.check_config(self.config)
        make_dataset = backend.dataset_class(self.config)
        if make_dataset is None:
            return original_load_dataset(self)
        atoms_dataset = trainer_module.AtomsDataset
        trainer_module.AtomsDataset = make_dataset
        try:
            return original_load_dataset(self)
        finally:
            trainer_module.AtomsDataset = atoms_dataset

    def load_skorch(self):
        original_load_skorch(self)
        loader_params = getattr(getattr(self, "train_dataset", None), "loader_params", None)
        if loader_params is not None:
            self.net.set_params(**loader_params())

    targets = [(atoms_to_data, "convert_all", convert_all),
               (trainer, "load_dataset", load_dataset),
               (trainer, "load_skorch", load_skorch),
               (dataset.AtomsDataset, "process", process),
               (preprocessing.FeatureScaler, "norm", backend.norm_features),
               (dataset, "sparse_block_diag", backend.sparse_block_diag),
               (amp_model.BPNN, "forward", model.energy_and_forces),
               (amp_model.SingleNN, "forward", model.energy_and_forces),
               (amp_model.BPNN, "atomic_energies", model.bpnn_atomic_energies),
               (amp_model.SingleNN, "atomic_energies", model.singlenn_atomic_energies)]
    for cls in backend.descriptor_classes().values():
        for module in (dataset, dataset_lmdb):
            targets.append((module, cls.__name__, cls))
    return targets


def install() -> None:
    """Route AMPTorch's preprocessing and training hot paths through fastfp.

    Raises ``ImportError`` if AMPTorch is not installed, ``RuntimeError`` for an AMPTorch
    with fastfp's patch series (``amptorch.fp_backends``), which calls the same hooks
    itself with ``config["dataset"]["fp_backend"] = "fastfp"``. Calling it twice is
    harmless.
    """
    if importlib.util.find_spec("amptorch.fp_backends") is not None:
        raise RuntimeError("this AMPTorch has fingerprint backends (fastfp's patch series): set "
                           "config['dataset']['fp_backend'] = 'fastfp' instead of calling fastfp.amptorch.install()")
    base = importlib.import_module("amptorch.descriptor.base_descriptor").BaseDescriptor
    for cls in backend.descriptor_classes().values():
        base.register(cls)
    for owner, name, replacement in _targets():
        _saved.setdefault((owner, name), getattr(owner, name, _ABSENT))
        setattr(owner, name, replacement)


def uninstall() -> None:
    """Put back everything :func:`install` rebound (the ``BaseDescriptor`` registration
    stays; it only makes fastfp's classes pass AMPTorch's ``isinstance`` check)."""
    for (owner, name), original in _saved.items():
        if original is _ABSENT:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    _saved.clear()


def installed() -> bool:
    return bool(_saved)
