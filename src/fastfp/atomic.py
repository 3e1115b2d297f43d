"""Writing output files safely: atomic replacement of a file (written under a temporary
name beside it, moved over it only when complete), and checking an output folder before
any work.

Every file fastfp writes (stores, AMPTorch LMDBs, the cached workload) goes through
:class:`AtomicPath`, so that a failed, interrupted or killed write never leaves a partial
file at the target and never damages what was there::

    with AtomicPath("out.h5") as tmp:      # tmp: a fresh name in the same directory
        write_everything_to(tmp)
    # on success: tmp fsync-ed and os.replace-d onto out.h5 (and the rename made durable);
    # on any exception, KeyboardInterrupt included: tmp removed, out.h5 untouched

The temporary name is ``.<name>.<pid>-<random>.tmp`` in the target's directory (the same
filesystem, so ``os.replace`` is atomic); nothing is created under it until the caller
writes there, so the file gets the usual umask permissions.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

#: how temporary names end (``.gitignore`` and the tests look for it)
SUFFIX = ".tmp"


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicPath:
    """A temporary path that replaces ``path`` on :meth:`commit` (see the module docstring).

    Parameters
    ----------
    path : the target file
    durable : fsync the file before and its directory after the rename (default True)

    Raises ``FileNotFoundError`` if the target's directory does not exist.
    """

    def __init__(self, path, durable: bool = True):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path}: directory {str(self.path.parent)!r} does not exist")
        self.tmp = self.path.parent / f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        self.durable = durable
        self.done = False

    def commit(self) -> Path:
        """Move the temporary file onto the target; returns the target."""
        if self.durable:
            _fsync(self.tmp)
        os.replace(self.tmp, self.path)
        self.done = True
        if self.durable:
            try:
                _fsync(self.path.parent)
            except OSError:  # some filesystems cannot fsync a directory
                pass
        return self.path

    def discard(self) -> None:
        """Remove the temporary file (if any); the target is left as it was."""
        self.done = True
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()


def check_writable_dir(directory, what: str = "output directory") -> Path:
    """Create ``directory`` if needed and check that files can be written in it, so
    that a command fails before its work rather than after; returns it as a ``Path``.
    Raises ``NotADirectoryError`` or ``PermissionError`` (``OSError``) naming ``what``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"{what} {str(directory)!r} exists and is not a directory") from None
    except OSError as exc:
        raise PermissionError(f"{what} {str(directory)!r} cannot be created: {exc.strerror or exc}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-test-", suffix=SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PermissionError(f"{what} {str(directory)!r} is not writable: {exc.strerror or exc}") from None
    return directory
