"""Directories of shards: consecutive frames split over files that independent tasks write.

The fingerprint store (:mod:`fastfp.store`) and sharded AMPTorch LMDB datasets
(:mod:`fastfp.amptorch.lmdb`) are both such a directory::

    out/
      manifest.json       what the shards hold (format, descriptor config, settings,
                          source frames, frame count, shard size) and "complete"
      shard-00000.h5      frames 0 .. S-1
      shard-00001.h5      frames S .. 2S-1
      ...                 (S = shard_frames; the last shard may hold fewer)

Protocol. The manifest is written first, with ``"complete": false``. Each shard is
written under a temporary name in the directory and renamed when whole
(:class:`~fastfp.atomic.AtomicPath`), so a shard file under its final name is complete;
a killed task leaves at most a temporary file, which the next run removes. Once every
shard is present, the manifest is rewritten with ``"complete": true``. Readers refuse a
directory whose manifest is not complete.

Resume. Rerunning into an existing directory with the same descriptor config (compared
with :func:`fastfp.config.require_same_settings`), settings and source frames computes only
the missing shards; anything else differing is refused, naming the keys, unless the
caller asks to overwrite. A path that exists and is not this kind of fastfp output (a
frames file, a config, an unrelated directory) is never written to or removed.

Running. :func:`sharded_run` is the one driver of such a run: it starts (or resumes)
the directory, connects to where the tasks run (:mod:`fastfp.cluster`), runs tasks over
shards with a progress bar (:meth:`ShardTasks.map`) and cleans up however the run ends.
Each task gets a :class:`ShardJob` (the frames and the descriptor config, small enough to
send to a worker), which writers extend with their settings.

One run writes a directory at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from .atomic import SUFFIX as TMP_SUFFIX, AtomicPath
from .cluster import STOP, connect, run_tasks
from .config import build_descriptor, canonical_json, read_json_object, require_same_settings
from .framefile import FrameFile

MANIFEST = "manifest.json"
#: manifest keys that must be equal to resume (besides the descriptor config): the frames,
#: then the writer's settings
FRAMES_KEYS = ("source", "n_frames")
SETTINGS_KEYS = ("settings", "shard_frames")


@lru_cache(maxsize=8)
def shard_bounds(n_frames: int, shard_frames: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` frame ranges of the shards of ``n_frames`` frames (cached:
    do not modify)."""
    return [(a, min(a + shard_frames, n_frames)) for a in range(0, n_frames, shard_frames)]


def shard_name(k: int, n_shards: int, suffix: str) -> str:
    """File name of shard ``k`` of ``n_shards``: ``shard-00007.h5`` (zero-padded to at
    least 5 digits, so that names sort in frame order)."""
    return f"shard-{k:0{max(5, len(str(n_shards - 1)))}d}{suffix}"


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, name + ".")
        elif a != b:
            out.append(name)
    return out


def read_manifest(path) -> dict | None:
    """The manifest of the directory ``path``, or None if it has none. Raises ``ValueError``
    for a manifest that cannot be read or parsed."""
    file = Path(path) / MANIFEST
    if not file.exists():
        return None
    return read_json_object(file, "manifest")


class ShardedDir:
    """A directory of shards of format ``format`` (the manifest's ``"format"``), shard
    files ending in ``suffix``; problems raise ``error`` (a ``ValueError`` subclass)
    with a message naming the path.

    Writing: :meth:`check` (before any work), :meth:`start` (manifest, resume or
    overwrite; returns the shards to write), :meth:`shard_path` for each task,
    :meth:`finish` (manifest complete); :meth:`remove_temporaries` in a ``finally``.
    """

    def __init__(self, path, format: str, suffix: str, error=ValueError):
        self.path = Path(path)
        self.format = format
        self.suffix = suffix
        self.error = error
        self.manifest: dict | None = None
        self._updated = False  # entries added to the manifest since start()

    # -- checks before any work ----------------------------------------------------
    def _existing_manifest(self) -> dict | None:
        """The manifest of an existing output of this format; None where nothing is there
        (or an empty directory). Raises ``error`` for anything else at the path."""
        path = self.path
        if not path.exists():
            return None
        if not path.is_dir():
            raise self.error(f"{path} exists and is not a {self.format} directory; "
                             "it is left untouched (choose another output path)")
        try:
            manifest = read_manifest(path)
        except ValueError as exc:
            raise self.error(f"{path} is not a readable {self.format} directory ({exc}); it is left untouched") from None
        if manifest is None:
            if any(path.iterdir()):
                raise self.error(f"{path} is a directory that is not a {self.format} (no {MANIFEST}); "
                                 "it is left untouched (choose another output path)")
            return None
        if manifest.get("format") != self.format:
            raise self.error(f"{path} is a {manifest.get('format')!r} directory, not a {self.format}; "
                             "it is left untouched")
        return manifest

    def check(self) -> None:
        """Raise ``error`` unless the path is free, an empty directory or a
        ``format`` directory, and its location can be written (probed with a temporary
        file). Touches nothing that is there."""
        self._existing_manifest()
        where = self.path if self.path.is_dir() else self.path.parent
        if not where.is_dir():
            raise self.error(f"{self.path}: directory {str(where)!r} does not exist")
        try:
            fd, probe = tempfile.mkstemp(dir=where, prefix=f".{self.path.name}.", suffix=TMP_SUFFIX)
        except OSError as exc:
            raise self.error(f"{self.path}: cannot write in {str(where)!r} ({exc.strerror or exc})") from None
        os.close(fd)
        os.unlink(probe)

    # -- writing -----------------------------------------------------------------------
    def n_shards(self) -> int:
        return len(shard_bounds(self.manifest["n_frames"], self.manifest["shard_frames"]))

    def bounds(self) -> list[tuple[int, int]]:
        return shard_bounds(self.manifest["n_frames"], self.manifest["shard_frames"])

    def shard_path(self, k: int) -> Path:
        return self.path / shard_name(k, self.n_shards(), self.suffix)

    def _write_manifest(self) -> None:
        with AtomicPath(self.path / MANIFEST) as tmp:
            tmp.write_text(json.dumps(self.manifest, indent=1, sort_keys=True) + "\n")

    def start(self, manifest: dict, *, overwrite: bool = False, is_complete=lambda path, k: path.is_file()) -> list[int]:
        """Begin writing ``manifest`` (a dict with ``config``, ``config_hash``,
        :data:`FRAMES_KEYS` and :data:`SETTINGS_KEYS`; ``format`` and ``complete`` are set here).

        Where an output of this format exists: with ``overwrite`` its manifest, shards and
        temporaries are removed first; otherwise it is resumed if its frames, settings and
        config match (``error`` naming what differs if not, :meth:`_require_resumable`), keeping
        its shards (and its manifest's other entries, such as fitted scalers). Returns the
        indices of the shards to write: those for which ``is_complete(path, k)`` is false.
        """
        old = self._existing_manifest()
        manifest = dict(manifest, format=self.format, complete=False)
        if old is not None and overwrite:
            self.manifest = old
            self._remove_contents()
            old = None
        if old is not None:
            self._require_resumable(old, manifest)
            manifest = {**manifest, **old, "complete": False}
        self.path.mkdir(exist_ok=True)
        self.manifest = manifest
        self.remove_temporaries()
        self._write_manifest()
        return [k for k in range(self.n_shards()) if not is_complete(self.shard_path(k), k)]

    def _require_resumable(self, old: dict, new: dict) -> None:
        """Raise ``error`` naming the first of these that differ between the existing
        manifest ``old`` and ``new``: the frames, the writer's settings, the descriptor
        settings (compared last: a config without elements takes the frames' elements,
        so other frames may also mean other descriptor settings)."""
        where = f"{self.path}: existing {self.format}"
        hint = "; rerun with the same frames and settings to resume it, or overwrite it (--overwrite)"

        def differing(keys):
            return [name for key in keys for name in _differences({key: old.get(key)}, {key: new.get(key)})]

        if differing(FRAMES_KEYS):
            then, now = (f"{m.get('source', {}).get('frames')!r} ({m.get('n_frames')} frames)" for m in (old, new))
            raise self.error(f"{where} was written from other frames (differing: {', '.join(differing(FRAMES_KEYS))}; "
                             f"it holds {then}, not {now}){hint}")
        if differing(SETTINGS_KEYS):
            raise self.error(f"{where} was written with other settings "
                             f"(differing: {', '.join(differing(SETTINGS_KEYS))}){hint}")
        try:
            require_same_settings(old.get("config", {}), new["config"], where, stored_hash=old.get("config_hash"),
                                  error=self.error)
        except ValueError as exc:
            raise self.error(f"{exc}{hint}") from None

    def update(self, **entries) -> None:
        """Add ``entries`` to the manifest and rewrite it (atomically)."""
        self.manifest.update(entries)
        self._updated = True
        self._write_manifest()

    def holds_results(self) -> bool:
        """Whether the directory holds anything a resume would use: a shard, or manifest
        entries added since :meth:`start` (such as fitted statistics)."""
        return self._updated or any(self.path.glob(f"shard-*{self.suffix}"))

    def finish(self, **entries) -> None:
        """Mark the output complete (with ``entries`` added to the manifest); raises
        ``error`` if a shard file is missing."""
        missing = [k for k in range(self.n_shards()) if not self.shard_path(k).is_file()]
        if missing:
            raise self.error(f"{self.path}: {len(missing)} shard(s) missing ({self.shard_path(missing[0]).name}, ...)")
        self.update(**entries, complete=True)

    def remove_temporaries(self) -> None:
        """Remove temporary files (``.*.tmp``) that killed writers left in the directory."""
        if self.path.is_dir():
            for p in self.path.glob(f".*{TMP_SUFFIX}"):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass

    def remove(self) -> None:
        """Remove this output: its manifest, shards and temporaries, then the directory if
        that leaves it empty."""
        if (self.path / MANIFEST).is_file():
            self._remove_contents()
        try:
            self.path.rmdir()
        except OSError:
            pass

    def _remove_contents(self) -> None:
        """Remove the manifest, the shards and temporaries (only files this format names)."""
        self.remove_temporaries()
        for p in self.path.glob(f"shard-*{self.suffix}"):
            p.unlink()
        (self.path / MANIFEST).unlink()


# -- running ---------------------------------------------------------------------------------


def frames_source(frames, cluster) -> dict:
    """The manifest's ``"source"`` of ``frames``: for a :class:`~fastfp.framefile.FrameFile`
    its path and selection, format, size and content hash (:meth:`~fastfp.framefile.FrameFile.digest`),
    which a resume compares; ``{"frames": "in memory"}`` for a sequence of frames. Raises
    ``ValueError`` for frames in memory with a ``cluster`` (each worker reads its own
    frames, from a file), ``TypeError`` for frames that are not a sequence (an iterator)."""
    if isinstance(frames, FrameFile):
        return {"frames": frames.text, "format": frames.format, **frames.digest()}
    if cluster is not None:
        raise ValueError("running on a cluster needs the frames in a file (a FrameFile), which each worker reads")
    if not (hasattr(frames, "__getitem__") and hasattr(frames, "__len__")):
        raise TypeError("frames must be a FrameFile or a sequence (a list, an ASE Trajectory, ...): "
                        "they are read by position")
    return {"frames": "in memory"}


@lru_cache(maxsize=4)
def _descriptor(config_json: str, amptorch: bool):
    return build_descriptor(json.loads(config_json), amptorch=amptorch)


@dataclass(frozen=True)
class ShardJob:
    """What every task of a run needs, small enough to send to each worker: the frames and
    the resolved descriptor config (:func:`fastfp.config.resolve_config`). Writers
    subclass it with their settings."""

    frames: object  # a FrameFile (each task reads its own frames) or, in this process only, a sequence
    config: dict

    #: build :mod:`fastfp.amptorch`'s descriptor (AMPTorch's interface) rather than fastfp's
    amptorch: ClassVar[bool] = False

    def descriptor(self):
        """The descriptor of :attr:`config`, built once per process (per config)."""
        return _descriptor(canonical_json(self.config), self.amptorch)

    def read(self, start: int, stop: int) -> list:
        """Frames ``start:stop`` (of the selection)."""
        if isinstance(self.frames, FrameFile):
            return self.frames.read(start, stop)
        return list(self.frames[start:stop])


class ShardTasks:
    """What :func:`sharded_run` yields: ``todo``, the shards :meth:`ShardedDir.start` found
    missing, and :meth:`map` to run tasks over shards where the run's cluster says."""

    def __init__(self, out: ShardedDir, todo: list[int], client, progress: bool):
        self.out = out
        self.todo = todo
        self.client = client
        self.progress = progress

    def map(self, func, shards: list[int], args, *, name: str, desc: str):
        """Run ``func(*args(k))`` for each shard ``k`` of ``shards``, one task each
        (:func:`fastfp.cluster.run_tasks`, Dask keys ``name-...``); yields ``(k, result)``
        as tasks finish, a tqdm bar (``desc``, in frames, the other shards' frames counted
        as done) following them when the run shows progress."""
        from tqdm.auto import tqdm

        bounds = self.out.bounds()
        n_frames = bounds[-1][1]
        left = sum(bounds[k][1] - bounds[k][0] for k in shards)
        with tqdm(total=n_frames, initial=n_frames - left, unit="frame", desc=desc, disable=not self.progress,
                  dynamic_ncols=True) as bar:
            for i, result in run_tasks(func, [args(k) for k in shards], client=self.client, name=name):
                k = shards[i]
                bar.update(bounds[k][1] - bounds[k][0])
                yield k, result


@contextlib.contextmanager
def sharded_run(out: ShardedDir, manifest: dict, *, cluster=None, overwrite: bool = False,
                is_complete=lambda path, k: path.is_file(), progress: bool = False):
    """Write the shards of ``out`` (checked by :meth:`ShardedDir.check` before any work):
    :meth:`ShardedDir.start` with ``manifest`` (resume, or ``overwrite``), then
    :func:`fastfp.cluster.connect` to ``cluster``; yields :class:`ShardTasks`. The caller
    runs its tasks in the ``with`` block and calls :meth:`ShardedDir.finish` after it.

    However the block ends, temporaries are removed and a cluster started here is
    closed. A directory this run created is removed again where it holds nothing to
    resume: after a ``ValueError`` (bad frames or config), or when the run ends before
    any shard or manifest entry was kept (a failed connection, an early interrupt).
    Otherwise the complete shards and the (incomplete) manifest stay for a resume. An
    interrupted run (:data:`fastfp.cluster.STOP` set, as the command line does on
    Ctrl-C and SIGTERM) is never taken for bad input, whatever exception the
    interruption surfaced as.
    """
    created = not out.path.exists()
    todo = out.start(manifest, overwrite=overwrite, is_complete=is_complete)
    try:
        with connect(cluster) as client:
            yield ShardTasks(out, todo, client, progress)
    except BaseException as exc:
        bad_input = isinstance(exc, ValueError) and not STOP.is_set()
        if created and (bad_input or not out.holds_results()):
            out.remove()
        raise
    finally:
        out.remove_temporaries()
