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
without AMPTorch installed. The torch-based parts (install, scaling, forces, LMDB)
need the ``torch`` extra.
"""

from .descriptors import GMP, Gaussian, GMPOrderNorm


def install() -> None:
    """See :func:`fastfp.amptorch.patching.install`."""
    from .patching import install as _install

    _install()


def uninstall() -> None:
    """See :func:`fastfp.amptorch.patching.uninstall`."""
    from .patching import uninstall as _uninstall

    _uninstall()


__all__ = ["GMP", "GMPOrderNorm", "Gaussian", "install", "uninstall"]
