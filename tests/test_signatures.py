"""Options after the frames (and the few required arguments) are keyword-only, in the
public calls and so in every call of them."""

import inspect

import pytest
from ase.build import molecule

from conftest import write_pseudodensities
from fastfp import GMPOrderNorm, frames, store
from fastfp.amptorch.descriptors import AMPTorchInterface
from fastfp.descriptors.base import Descriptor

#: (callable, the number of its positional parameters)
CALLS = [
    (Descriptor.featurize, 2),  # self, frames
    (Descriptor.featurize_packed, 2),  # self, packed
    (Descriptor.neighbor_pairs, 2),  # self, packed
    (Descriptor.featurize_pairs, 3),  # self, packed, pairs
    (AMPTorchInterface.featurized_chunks, 2),  # self, images
    (frames.pack_frames, 2),  # frames, allowed
    (frames.chunks, 2),  # frames, size
    (frames.labels_of, 1),  # frames
    (store.featurize_to_store, 3),  # frames, config, path
]


def _torch_calls():
    pytest.importorskip("torch")
    pytest.importorskip("torch_geometric")
    pytest.importorskip("lmdb")
    from fastfp.amptorch import lmdb, onthefly

    return [
        (onthefly.OnTheFlyDataset.__init__, 3),  # self, images, descriptor
        (onthefly.StoreDataset.__init__, 3),  # self, store, descriptor
        (onthefly.LabelledFrames.from_images.__func__, 3),  # cls, images, allowed
        (lmdb.write_lmdb, 3),  # frames, config, path
        (lmdb.write_lmdb_shards, 3),
    ]


def _check(calls):
    for func, n in calls:
        kinds = [p.kind for p in inspect.signature(func).parameters.values()]
        assert kinds[:n] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * n, func.__qualname__
        assert all(k in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD) for k in kinds[n:]), \
            func.__qualname__


def test_options_are_keyword_only():
    _check(CALLS)


def test_options_of_the_torch_calls_are_keyword_only():
    _check(_torch_calls())


def test_a_positional_option_is_refused(tmp_path):
    paths = write_pseudodensities(tmp_path, {"H": [(1.0, 1.0)], "O": [(2.0, 0.5)]})
    desc = GMPOrderNorm({"MCSHs": {"orders": [0], "sigmas": [0.5]}, "cutoff": 3.0, "atom_gaussians": paths}, ["H", "O"])
    with pytest.raises(TypeError, match="positional"):
        desc.featurize([molecule("H2O")], False)
    assert not desc.featurize([molecule("H2O")], derivatives=False).has_derivatives


def test_each_dtype_and_the_chunk_size_have_one_name():
    """``result_dtype`` (featurize: the returned arrays, GPU), ``fprimes_dtype`` (a
    store's derivative blocks), ``tensor_dtype`` (an LMDB's torch tensors); frames per
    chunk are ``chunk_frames`` everywhere. No call takes a bare ``dtype`` or ``chunk_size``."""
    names = {func: set(inspect.signature(func).parameters) for func, _ in CALLS + _torch_calls()}
    from fastfp.amptorch import lmdb

    assert "result_dtype" in names[Descriptor.featurize] and "result_dtype" in names[Descriptor.featurize_packed]
    assert {"fprimes_dtype", "chunk_frames"} <= names[store.featurize_to_store]
    assert "fprimes_dtype" in inspect.signature(store.StoreWriter).parameters
    for func in (lmdb.write_lmdb, lmdb.write_lmdb_shards):
        assert {"tensor_dtype", "chunk_frames"} <= names[func]
    assert not any({"dtype", "chunk_size"} & params for params in names.values())
