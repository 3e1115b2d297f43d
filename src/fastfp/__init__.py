"""fastfp: batched GMP and Gaussian fingerprints with exact sparse derivatives.

Descriptors take AMPTorch's parameter dicts and featurize many frames per call::

    from fastfp import GMPOrderNorm
    desc = GMPOrderNorm({"MCSHs": {"orders": [0, 1, 2, 3], "sigmas": [0.4, 0.8]},
                         "cutoff": 8.0, "atom_gaussians": {...}}, elements=["Cu", "O", "H"])
    fps = desc.featurize(frames)          # fastfp.Fingerprints
    fps.fingerprints, fps.frame(0).coo(0)

A store holds the fingerprints of a frames file on disk, written in shards (on a Dask
cluster if asked) and read back as one sequence::

    config = fastfp.resolve_config("config.json", elements=["Cu", "O", "H"])
    fastfp.featurize_to_store(fastfp.FrameFile("frames.traj@:1000"), config, "fp.store")
    store = fastfp.open_store("fp.store")

The names below are the public face; every exception fastfp raises for bad input or an
unusable device is one of its errors (:mod:`fastfp.errors`). :mod:`fastfp.amptorch` has
the AMPTorch-compatible classes, the drop-in and AMPTorch's LMDB datasets.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from .config import build_descriptor, resolve_config
from .descriptors.gaussian import Gaussian
from .descriptors.gmp import GMP, GMPOrderNorm
from .errors import (ConfigError, DeviceError, DeviceMemoryError, FrameError, FrameFileError, PseudodensityError,
                     StoreError)
from .fingerprints import Fingerprints
from .framefile import FrameFile
from .store import featurize_to_store, open_store

try:
    __version__ = _version("fastfp")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "unknown"

__all__ = [
    # descriptors and their result
    "GMPOrderNorm",
    "GMP",
    "Gaussian",
    "Fingerprints",
    # configs (AMPTorch's descriptor_setup as a dict or JSON file)
    "resolve_config",
    "build_descriptor",
    # stores
    "FrameFile",
    "featurize_to_store",
    "open_store",
    # errors
    "ConfigError",
    "FrameError",
    "FrameFileError",
    "PseudodensityError",
    "StoreError",
    "DeviceError",
    "DeviceMemoryError",
]
