"""fastfp as AMPTorch's fingerprint backend ``"fastfp"``: the hooks AMPTorch calls.

AMPTorch with fastfp's patch series (``patches/``) finds this module by name, through
the entry point ``fastfp`` of the group ``amptorch.fp_backends`` (``pyproject.toml``),
when a config says ``config["dataset"]["fp_backend"] = "fastfp"``, and calls:

* :func:`descriptor_classes`: fastfp's ``Gaussian``, ``GMP``, ``GMPOrderNorm``
  (:mod:`fastfp.amptorch.descriptors`), whose ``images_to_data`` AMPTorch's
  ``AtomsToData`` calls to convert frames a chunk at a time
  (:func:`fastfp.amptorch.data.images_to_data`);
* :func:`preprocessing`: the context ``AtomsDataset.process`` runs in, where the data
  set's derivatives become fastfp's pair blocks
  (:mod:`fastfp.amptorch.frame_blocks`);
* :func:`norm_features`: the vectorised ``FeatureScaler.norm``;
* :func:`sparse_block_diag`: the collated derivative matrix, which contracts itself into
  forces in the model (:class:`~fastfp.amptorch.frame_blocks.BlockDiagonal` of the
  data set's blocks, :class:`~fastfp.amptorch.forces.DerivativeMatrix` of COO tensors)
  and runs the model's pass with forces (``energy_and_forces``,
  :func:`fastfp.amptorch.model.energy_and_forces`: a large batch through the network in
  pieces), as the on-the-fly batches' derivatives do;
* :func:`check_config` and :func:`dataset_class`: on-the-fly training
  (``config["dataset"]["on_the_fly"]``, on the CPU or with ``config["optim"]["gpus"] = 1``
  on the GPU) and training from a store (``config["dataset"]["fastfp_store"]``), whose
  data sets bring their loader settings (``loader_params``; :mod:`fastfp.amptorch.onthefly`).

Unpatched AMPTorch reaches the same functions through :func:`fastfp.amptorch.install`,
which rebinds AMPTorch's attributes to callers of these hooks
(:mod:`fastfp.amptorch.patching`): each behaviour has this one source.
"""

from __future__ import annotations

import contextlib
import functools

from ..threads import single_threaded_libraries
from . import collate, descriptors, onthefly, scaling
from .data import blocks_in_data
from .forces import DerivativeMatrix
from .frame_blocks import BlockDiagonal, FrameBlocks

#: the backend's name (``config["dataset"]["fp_backend"]``)
NAME = "fastfp"


def descriptor_classes() -> dict:
    """``{fp_scheme: class}`` of the descriptors AMPTorch's ``construct_descriptor``
    builds with this backend (same constructors as AMPTorch's)."""
    return dict(descriptors.CLASSES)


@contextlib.contextmanager
def preprocessing():
    """Context manager for AMPTorch's ``AtomsDataset.process`` (conversion, scaler fit,
    scaling): the frames' derivatives converted to fastfp's pair blocks
    (:func:`~fastfp.amptorch.data.blocks_in_data`: about a third of the memory of
    AMPTorch's COO, and read by fastfp's force contraction), BLAS and torch's OpenMP held
    to one thread (:func:`~fastfp.threads.single_threaded_libraries`) while fastfp's
    threads work."""
    with blocks_in_data(), single_threaded_libraries():
        yield


def norm_features(feature_scaler, data_list, disable_tqdm=False):
    """AMPTorch's ``FeatureScaler.norm(data_list)``, vectorised
    (:func:`fastfp.amptorch.scaling.norm_features`)."""
    return scaling.norm_features(feature_scaler, data_list, disable_tqdm)


def sparse_block_diag(matrices) -> BlockDiagonal | DerivativeMatrix:
    """The block-diagonal derivative matrix of a batch (AMPTorch's ``sparse_block_diag``),
    which contracts into forces without ``torch.sparse.mm``: of the data set's pair blocks
    (:class:`~fastfp.amptorch.frame_blocks.FrameBlocks`), a
    :class:`~fastfp.amptorch.frame_blocks.BlockDiagonal` (nothing copied); of COO
    tensors (predictions, LMDB data sets), a
    :class:`~fastfp.amptorch.forces.DerivativeMatrix` (vectorised:
    :func:`fastfp.amptorch.collate.sparse_block_diag`)."""
    if isinstance(matrices[0], FrameBlocks):
        return BlockDiagonal(tuple(matrices))
    return DerivativeMatrix(collate.sparse_block_diag(matrices))


def check_config(config: dict) -> None:
    """Raise ``ValueError`` naming the key of AtomsTrainer's ``config`` that fastfp cannot
    honour (:func:`fastfp.amptorch.onthefly.check_config`); called before AtomsTrainer
    writes anything."""
    onthefly.check_config(config)


def dataset_class(config: dict):
    """What AtomsTrainer builds instead of ``AtomsDataset`` for ``config`` (called with
    ``AtomsDataset``'s keyword arguments), or None for ``AtomsDataset`` itself:
    an :class:`~fastfp.amptorch.onthefly.OnTheFlyDataset` with ``on_the_fly`` (on the GPU
    with ``config["optim"]["gpus"] = 1``), a
    :class:`~fastfp.amptorch.onthefly.StoreDataset` with ``fastfp_store``. For a store,
    ``config["dataset"]`` gets the store's descriptor settings and an empty ``raw_data``
    (:func:`~fastfp.amptorch.onthefly.open_training_store`)."""
    mode = onthefly.check_config(config)
    if mode is None:
        return None
    store = onthefly.open_training_store(config["dataset"]) if mode == onthefly.STORE_KEY else None
    return functools.partial(onthefly.trainer_dataset, store=store, device=onthefly.training_device(config),
                             fprimes=config["dataset"].get(onthefly.FPRIMES_KEY))
