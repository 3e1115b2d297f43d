"""The exceptions fastfp raises for bad input or a machine that cannot run a request.

Each message names what is wrong and where (the frame, file, key path or store), so that
it can be shown to a user as it is. All are exported at the top (``fastfp.FrameError``,
...). The ``ValueError`` subclasses are bad input; ``except ValueError`` catches them all.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A descriptor config or parameter dict with an unknown key, a value of the wrong type
    or out of range (:mod:`fastfp.descriptors.params`); the message names the key path,
    what was given and what is expected."""


class FrameError(ValueError):
    """A frame that cannot be featurized; the message names the frame and the problem."""


class FrameFileError(ValueError):
    """A frames file that is missing, unreadable, holds no selected frames or has a bad
    ``@SLICE``; the message names it."""


class PseudodensityError(ValueError):
    """A missing or malformed pseudodensity; the message names the element and file."""


class StoreError(ValueError):
    """A missing, corrupt, incomplete or mismatched store; the message names the path."""


class DeviceError(RuntimeError):
    """``device="cuda"`` cannot run here; the message says what is missing."""


class DeviceMemoryError(MemoryError):
    """A batch whose arrays do not fit in the GPU's free memory; the message gives the sizes."""
