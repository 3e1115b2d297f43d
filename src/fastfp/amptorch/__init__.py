"""fastfp as a drop-in for AMPTorch.

Importing this module changes nothing in AMPTorch; :func:`install` routes AMPTorch's
preprocessing and training hot paths through fastfp and :func:`uninstall` undoes it::

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
