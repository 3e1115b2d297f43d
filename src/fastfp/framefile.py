"""Frames of an ASE-readable file, read lazily, whole or a part at a time.

A :class:`FrameFile` names a file and, optionally, ASE's frame selection
(``frames.traj@:8000``, ``frames.traj@-100:``, ``frames.xyz@::2``). It is what
featurization reads from and, being small and picklable, what is sent to the workers of
a cluster: each reads its own frames with :meth:`FrameFile.read` (``ase.io.Trajectory``
indexing for ``.traj`` files; ``ase.io.iread`` with a slice, which skips the frames
before it, for other formats).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import FrameFileError


#: ASE's frame selections, for messages
SELECTIONS = "an index or a slice such as @7, @-1, @:1000, @-100: or @::2"


def _parse(text: str):
    """``(path, index)`` of ``PATH[@SELECTION]`` (ASE's ``parse_filename``; index None
    without a selection). Raises :class:`FrameFileError` for a selection that is not an
    index or a slice with a nonzero step."""
    import warnings

    from ase.io.formats import parse_filename

    if os.path.isfile(text):  # a file whose name has an "@" in it
        return text, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ASE warns, then returns the selection as text
        try:
            path, index = parse_filename(text)
        except (TypeError, ValueError):  # "a.traj@1:2:3:4"
            path, index = text.rpartition("@")[0], text.rpartition("@")[2]
    if isinstance(index, str) or (isinstance(index, slice) and index.step == 0):
        selection = text[len(path) + 1:]
        raise FrameFileError(f"frames {text!r}: bad frame selection {selection!r}; expected {SELECTIONS}")
    return path, index


def _as_slice(r: range) -> slice:
    """The slice that selects ``r`` (non-empty) from a sequence."""
    stop = r.stop if r.stop >= 0 else None
    return slice(r.start, stop, r.step)


class FrameFile:
    """The frames ``text`` names: a path, optionally ``PATH@SELECTION`` (ASE's syntax).

    Parameters
    ----------
    text : path, or path and selection (``data.traj@:1000``)
    format : ASE format name, if not guessed from the file name

    Raises :class:`FrameFileError` if the file does not exist or the selection is not
    ASE's (an index or a slice with a nonzero step). Iterating reads the selected
    frames lazily (``ase.io.iread``); errors while reading raise :class:`FrameFileError`
    naming the file and the frame.
    """

    def __init__(self, text, format: str | None = None):
        path, index = _parse(str(text))
        self.path = Path(path).absolute()
        self.index = slice(None) if index is None else index
        self.selection = str(text)[len(str(path)) + 1:] if index is not None else ""
        self.format = format
        self._n_file = None
        if not self.path.is_file():
            raise FrameFileError(f"frames file {str(path)!r} " + ("is not a file" if self.path.exists() else "not found"))

    def __repr__(self) -> str:
        return f"FrameFile({self.text!r})"

    @property
    def text(self) -> str:
        """Absolute path, with the selection if any (``/data/frames.traj@:1000``)."""
        return str(self.path) + (f"@{self.selection}" if self.selection else "")

    def _wrap(self, exc: Exception, where: str) -> FrameFileError:
        return FrameFileError(f"cannot read frames from {str(self.path)!r}{where}: {type(exc).__name__}: {exc}")

    def _frames_in_file(self) -> int:
        """Frames in the whole file (counted once: cheap for ``.traj``, a full read otherwise)."""
        if self._n_file is None:
            import ase.io

            try:
                if self.path.suffix == ".traj":
                    from ase.io.trajectory import Trajectory

                    with Trajectory(self.path) as traj:
                        self._n_file = len(traj)
                else:
                    self._n_file = sum(1 for _ in ase.io.iread(self.path, index=":", format=self.format))
            except (KeyboardInterrupt, GeneratorExit):
                raise
            except Exception as exc:  # ASE raises many kinds for unreadable or unknown files
                raise self._wrap(exc, "") from None
        return self._n_file

    def _positions(self) -> range:
        """Positions in the file of the selected frames."""
        n = self._frames_in_file()
        if isinstance(self.index, slice):
            return range(*self.index.indices(n))
        k = int(self.index)
        k = k + n if k < 0 else k
        if not 0 <= k < n:
            raise FrameFileError(f"frame {self.index} of {str(self.path)!r} out of range ({n} frames)")
        return range(k, k + 1)

    def __len__(self) -> int:
        """Number of selected frames (counting them reads the whole file, except ``.traj``)."""
        return len(self._positions())

    def read(self, start: int, stop: int) -> list:
        """Selected frames ``start:stop`` (positions in the selection) as ASE ``Atoms``."""
        import ase.io

        positions = self._positions()[start:stop]
        if len(positions) == 0:
            return []
        try:
            if self.path.suffix == ".traj" and self.format in (None, "traj"):
                from ase.io.trajectory import Trajectory

                with Trajectory(self.path) as traj:
                    return [traj[k] for k in positions]
            return list(ase.io.iread(self.path, index=_as_slice(positions), format=self.format))
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            raise self._wrap(exc, f" (frames {start}..{stop - 1} of the selection)") from None

    def __iter__(self):
        import ase.io

        k = 0
        try:
            for atoms in ase.io.iread(self.path, index=self.index, format=self.format):
                yield atoms
                k += 1
        except (FrameFileError, KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            raise self._wrap(exc, f" at frame {k}" if k else "") from None
        if k == 0:
            raise FrameFileError(f"no frames in {str(self.path)!r} (selection {self.selection or ':'!r})")

    def same_file(self, path) -> bool:
        """Whether ``path`` is this frames file (also through links)."""
        try:
            return os.path.samefile(self.path, path)
        except OSError:
            return False

    def digest(self) -> dict:
        """Size and SHA-256 of the file's content, to tell later whether the frames changed
        (a copy, a move or ``touch`` do not change them; an edit does)."""
        sha = hashlib.sha256()
        with open(self.path, "rb") as fh:
            while block := fh.read(1 << 20):
                sha.update(block)
        return {"bytes": self.path.stat().st_size, "sha256": sha.hexdigest()}
