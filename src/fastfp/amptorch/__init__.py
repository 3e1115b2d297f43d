"""fastfp as a drop-in for AMPTorch.

AMPTorch with fastfp's patch series (``patches/``) selects fastfp as its fingerprint
backend by name, :mod:`fastfp.amptorch.backend`, whose hooks it calls itself::

    config["dataset"]["fp_backend"] = "fastfp"
    AtomsTrainer(config).train()     # same results, faster

For unpatched AMPTorch, :func:`install` routes its preprocessing and training hot paths
through the same hooks and :func:`uninstall` undoes it; importing this module changes
nothing in AMPTorch::

    import fastfp.amptorch
    fastfp.amptorch.install()
    AtomsTrainer(config).train()     # unchanged script, same results, faster

The descriptor classes take AMPTorch's parameters and return AMPTorch's data layout,
without AMPTorch installed. :func:`write_lmdb`, :func:`write_lmdb_shards` and
:func:`lmdb_paths` write and list AMPTorch's LMDB datasets
(:mod:`fastfp.amptorch.lmdb`)::

    config["dataset"]["lmdb_path"] = fastfp.amptorch.lmdb_paths("data.lmdb")

The torch-based parts (install, scaling, forces, LMDB) need the ``torch`` extra; they
are imported when first used.
"""

from .descriptors import GMP, Gaussian, GMPOrderNorm

#: names of :mod:`fastfp.amptorch.lmdb`, which imports torch, torch_geometric and lmdb
_LMDB = ("write_lmdb", "write_lmdb_shards", "lmdb_paths")


def install() -> None:
    """See :func:`fastfp.amptorch.patching.install`."""
    from .patching import install as _install

    _install()


def uninstall() -> None:
    """See :func:`fastfp.amptorch.patching.uninstall`."""
    from .patching import uninstall as _uninstall

    _uninstall()


def __getattr__(name):
    if name in _LMDB:
        from . import lmdb

        return getattr(lmdb, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GMP", "GMPOrderNorm", "Gaussian", "install", "uninstall", *_LMDB]
