"""fastfp: batched GMP and Gaussian fingerprints with exact sparse derivatives.

Descriptors take AMPTorch's parameter dicts and featurize many frames per call::

    from fastfp import GMPOrderNorm
    desc = GMPOrderNorm({"MCSHs": {"orders": [0, 1, 2, 3], "sigmas": [0.4, 0.8]},
                         "cutoff": 8.0, "atom_gaussians": {...}}, elements=["Cu", "O", "H"])
    fps = desc.featurize(frames)          # fastfp.Fingerprints
    fps.fingerprints, fps.frame(0).coo(0)

:mod:`fastfp.amptorch` has the AMPTorch-compatible classes.
"""

from .fingerprints import Fingerprints
from .descriptors.gaussian import Gaussian
from .descriptors.gmp import GMP, GMPOrderNorm
from .frames import FrameError
from .pseudodensity import PseudodensityError
from .store import StoreError, open_store

__all__ = [
    "Fingerprints",
    "FrameError",
    "GMP",
    "GMPOrderNorm",
    "Gaussian",
    "PseudodensityError",
    "StoreError",
    "open_store",
]
