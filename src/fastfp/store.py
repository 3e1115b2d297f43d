"""On-disk store of fingerprints and their derivative blocks (HDF5).

A store holds one :class:`~fastfp.fingerprints.Fingerprints` for any number of frames, written
in chunks of frames and read back a frame or a slice of frames at a time::

    with StoreWriter("fp.h5", config, n_features=20, derivatives=True) as w:
        for chunk in chunks_of_frames:
            w.append(descriptor.featurize(chunk))
    store = open_store("fp.h5")
    store[7], store[10:20], len(store), store.config

Why HDF5 (h5py): one self-describing file (easy to move, atomically replace, and check
for completeness), chunked datasets that grow with ``resize`` as frames are appended, and
random access by slice that reads only the chunks a frame touches, so reading and
writing stay memory bounded. h5py and libhdf5 are mature, widely packaged and keep
their on-disk format stable. Zarr writes a directory of many chunk files (no atomic
single-file replace, many inodes for millions of derivative blocks); LMDB is a key-value
store of opaque pickled values (what AMPTorch uses for its own datasets) with no typed
arrays, slices or metadata, and needs its map size chosen up front.

Layout (format version 1), with A atoms, B derivative blocks, F features, N frames;
indices are global over the whole store:

- ``fingerprints`` (A, F) float64, ``numbers`` (A,) int64, ``offsets`` (N+1,) int64;
- with derivatives: ``fprime_ptr`` (A+1,) int64, ``fprime_j`` (B,) int64,
  ``fprimes`` (B, F, 3) float64 (see :class:`~fastfp.fingerprints.Fingerprints`);
- attributes: ``format`` ("fastfp-store"), ``format_version``, ``complete`` (set when
  the writer closes successfully), ``config`` (canonical JSON of the descriptor
  config), ``config_hash``, ``n_features``, ``has_derivatives``, ``metadata`` (JSON).

Writes are atomic: a temporary file in the target's directory is filled, marked
complete, flushed and ``os.replace``-d onto the target only on success, so a failed or
killed write never leaves a partial store at the target and never damages an old one.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np

from .atomic import AtomicPath
from .fingerprints import Fingerprints
from .config import build_descriptor, canonical_json, config_hash, require_same_settings
from .frames import chunks

FORMAT = "fastfp-store"
FORMAT_VERSION = 1
_INDEX = ("fingerprints", "numbers", "offsets")
_DERIV = ("fprime_ptr", "fprime_j", "fprimes")


class StoreError(ValueError):
    """A missing, corrupt, incomplete or mismatched store; the message names the path."""


class StoreWriter:
    """Write fingerprints to a new store at ``path``, atomically.

    Parameters
    ----------
    path : target file; replaced only when the writer closes without error
    descriptor_config : the (preferably resolved, :func:`fastfp.config.resolve_config`)
        config that made the fingerprints; recorded with its hash
    n_features : width F of the fingerprint rows
    derivatives : whether derivative blocks are stored (every append must match)
    metadata : optional JSON-serialisable dict recorded in the ``metadata`` attribute
    compression : h5py compression filter for the float datasets (None, "lzf", "gzip")
    chunk_bytes : target size of one HDF5 chunk

    Use as a context manager; an exception inside the ``with`` block removes the
    temporary file and leaves ``path`` as it was. Outside ``with``, call :meth:`close`
    (commit) or :meth:`abort`.
    """

    def __init__(self, path, descriptor_config: dict, n_features: int, derivatives: bool,
                 *, metadata: dict | None = None, compression: str | None = None,
                 chunk_bytes: int = 1 << 20):
        self.path = Path(path)
        self.n_features = int(n_features)
        if self.n_features <= 0:
            raise ValueError(f"n_features must be positive, got {n_features}")
        self.derivatives = bool(derivatives)
        config_json = canonical_json(descriptor_config)
        meta_json = json.dumps(metadata or {}, sort_keys=True)
        try:
            self._target = AtomicPath(self.path)
        except FileNotFoundError as exc:
            raise StoreError(str(exc)) from None
        self.tmp_path = self._target.tmp
        self._closed = False
        self._file = None
        try:
            self._file = h5py.File(self.tmp_path, "x")
            f = self._file
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["complete"] = False
            f.attrs["config"] = config_json
            f.attrs["config_hash"] = config_hash(descriptor_config)
            f.attrs["n_features"] = self.n_features
            f.attrs["has_derivatives"] = self.derivatives
            f.attrs["metadata"] = meta_json
            F = self.n_features
            rows = max(1, chunk_bytes // (8 * F))
            ints = max(1, chunk_bytes // 8)
            kw = dict(compression=compression) if compression else {}
            f.create_dataset("fingerprints", (0, F), np.float64, maxshape=(None, F), chunks=(rows, F), **kw)
            f.create_dataset("numbers", (0,), np.int64, maxshape=(None,), chunks=(ints,))
            f.create_dataset("offsets", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(ints,))
            if self.derivatives:
                f.create_dataset("fprime_ptr", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(ints,))
                f.create_dataset("fprime_j", (0,), np.int64, maxshape=(None,), chunks=(ints,))
                brows = max(1, chunk_bytes // (24 * F))
                f.create_dataset("fprimes", (0, F, 3), np.float64, maxshape=(None, F, 3),
                                 chunks=(brows, F, 3), **kw)
        except BaseException:
            self.abort()
            raise
        self.n_frames = 0
        self.n_atoms = 0
        self.n_blocks = 0

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @staticmethod
    def _grow(ds, data: np.ndarray) -> None:
        n = ds.shape[0]
        ds.resize(n + len(data), axis=0)
        if len(data):
            ds[n:] = data

    def append(self, fps: Fingerprints) -> None:
        """Append the frames of ``fps`` (indices local to ``fps``) after those written."""
        if self._closed:
            raise StoreError(f"{self.path}: writer is closed")
        if fps.n_features != self.n_features:
            raise ValueError(f"{self.path}: fingerprints have {fps.n_features} features, store has {self.n_features}")
        if fps.has_derivatives != self.derivatives:
            raise ValueError(
                f"{self.path}: store {'needs' if self.derivatives else 'has no room for'} derivatives, "
                f"fingerprints {'have' if fps.has_derivatives else 'lack'} them"
            )
        n_at = len(fps.numbers)
        if len(fps.offsets) < 1 or fps.offsets[0] != 0 or fps.offsets[-1] != n_at or fps.fingerprints.shape[0] != n_at:
            raise ValueError(f"{self.path}: inconsistent fingerprints (offsets do not match the atoms)")
        f = self._file
        self._grow(f["fingerprints"], np.asarray(fps.fingerprints, dtype=np.float64))
        self._grow(f["numbers"], np.asarray(fps.numbers, dtype=np.int64))
        self._grow(f["offsets"], np.asarray(fps.offsets[1:], dtype=np.int64) + self.n_atoms)
        if self.derivatives:
            n_bl = len(fps.fprime_j)
            if fps.fprime_ptr[0] != 0 or fps.fprime_ptr[-1] != n_bl or len(fps.fprime_ptr) != n_at + 1:
                raise ValueError(f"{self.path}: inconsistent derivative blocks (fprime_ptr)")
            self._grow(f["fprime_ptr"], np.asarray(fps.fprime_ptr[1:], dtype=np.int64) + self.n_blocks)
            self._grow(f["fprime_j"], np.asarray(fps.fprime_j, dtype=np.int64) + self.n_atoms)
            self._grow(f["fprimes"], np.asarray(fps.fprimes, dtype=np.float64))
            self.n_blocks += n_bl
        self.n_atoms += n_at
        self.n_frames += fps.n_frames

    def close(self) -> None:
        """Mark the store complete and move it to ``path`` (atomic replace)."""
        if self._closed:
            return
        try:
            f = self._file
            f.attrs["n_frames"] = self.n_frames
            f.attrs["n_atoms"] = self.n_atoms
            f.attrs["n_blocks"] = self.n_blocks
            f.attrs["complete"] = True
            f.close()
            self._target.commit()
            self._closed = True
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Discard what was written; ``path`` is left untouched."""
        self._closed = True
        f = self._file
        if f is not None:
            try:
                f.close()
            except Exception:
                pass
        self._target.discard()


class Store:
    """A store opened for reading (see :func:`open_store`).

    ``len(store)`` frames; ``store[k]`` one frame and ``store[a:b]`` frames ``a..b-1``
    as :class:`~fastfp.fingerprints.Fingerprints` with indices re-based to 0; iteration yields
    one-frame :class:`~fastfp.fingerprints.Fingerprints`. Only the slices of the requested frames
    are read. Picklable (re-opens by path), and safe to use after ``fork``.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._file = None
        self._open()

    # -- opening and validation -------------------------------------------------
    def _fail(self, problem: str):
        raise StoreError(f"{self.path}: {problem}")

    def _open(self) -> None:
        path = self.path
        if not path.exists():
            self._fail("no such store (file not found)")
        if not path.is_file():
            self._fail("not a file")
        try:
            is_h5 = h5py.is_hdf5(path)
        except OSError as exc:
            self._fail(f"cannot read: {exc}")
        if not is_h5:
            self._fail("not a fastfp store (not an HDF5 file)")
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            self._fail(f"corrupt or truncated HDF5 file ({exc})")
        try:
            self._validate(f)
        except BaseException:
            f.close()
            raise
        self._file = f
        self._pid = os.getpid()

    def _validate(self, f) -> None:
        try:
            attrs = dict(f.attrs)
        except (OSError, RuntimeError) as exc:
            self._fail(f"corrupt HDF5 file, cannot read its attributes ({exc})")
        fmt = attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != FORMAT:
            self._fail(f"not a fastfp store (format attribute {fmt!r}, expected {FORMAT!r})")
        version = attrs.get("format_version")
        if version is None or int(version) != FORMAT_VERSION:
            self._fail(f"store format version {version!r} is not supported (this fastfp reads version {FORMAT_VERSION})")
        if not bool(attrs.get("complete", False)):
            self._fail("incomplete store: its writer did not finish (interrupted or failed); re-create it")
        try:
            self.config = json.loads(attrs["config"])
            self.config_hash = str(attrs["config_hash"])
            self.n_features = int(attrs["n_features"])
            self.has_derivatives = bool(attrs["has_derivatives"])
            self.metadata = json.loads(attrs.get("metadata", "{}"))
        except (KeyError, ValueError, TypeError) as exc:
            self._fail(f"corrupt store attributes ({type(exc).__name__}: {exc})")
        names = _INDEX + (_DERIV if self.has_derivatives else ())
        missing = [n for n in names if n not in f]
        if missing:
            self._fail(f"corrupt store: missing dataset(s) {missing}")
        F = self.n_features
        try:
            fp, nums, off = f["fingerprints"], f["numbers"], f["offsets"]
            if fp.ndim != 2 or fp.shape[1] != F or nums.ndim != 1 or off.ndim != 1 or off.shape[0] < 1:
                self._fail("corrupt store: dataset shapes do not match")
            self._offsets = off[:].astype(np.int64)
            A = fp.shape[0]
            if (self._offsets[0] != 0 or self._offsets[-1] != A or nums.shape[0] != A
                    or np.any(np.diff(self._offsets) < 0)):
                self._fail("corrupt store: frame offsets do not match the atoms")
            if self.has_derivatives:
                ptr, jj, fpr = f["fprime_ptr"], f["fprime_j"], f["fprimes"]
                if ptr.shape != (A + 1,) or jj.ndim != 1 or fpr.shape[1:] != (F, 3) or fpr.shape[0] != jj.shape[0]:
                    self._fail("corrupt store: derivative dataset shapes do not match")
                if int(ptr[0]) != 0 or int(ptr[A]) != jj.shape[0]:
                    self._fail("corrupt store: fprime_ptr does not match the derivative blocks")
            n = attrs.get("n_frames")
            if n is not None and int(n) != len(self._offsets) - 1:
                self._fail(f"corrupt store: {len(self._offsets) - 1} frames, attribute says {int(n)}")
        except (OSError, RuntimeError, KeyError) as exc:
            self._fail(f"corrupt store, cannot read its index ({exc})")

    def _h5(self):
        if self._file is None or self._pid != os.getpid():
            self._file = None
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.path = state["path"]
        self._file = None
        self._open()

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Store({str(self.path)!r}, frames={len(self)}, atoms={self.n_atoms}, "
                f"features={self.n_features}, derivatives={self.has_derivatives})")

    # -- reading ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._offsets) - 1

    @property
    def n_frames(self) -> int:
        return len(self)

    @property
    def n_atoms(self) -> int:
        return int(self._offsets[-1])

    @property
    def offsets(self) -> np.ndarray:
        """(n_frames + 1,) atom offsets of the frames (a copy)."""
        return self._offsets.copy()

    def frames(self, start: int, stop: int) -> Fingerprints:
        """Frames ``start:stop`` (0 <= start <= stop <= len) as one :class:`Fingerprints`."""
        n = len(self)
        if not 0 <= start <= stop <= n:
            raise IndexError(f"frames {start}:{stop} out of range for a store of {n} frames")
        a0, a1 = int(self._offsets[start]), int(self._offsets[stop])
        try:
            f = self._h5()
            derivs = {}
            if self.has_derivatives:
                ptr = f["fprime_ptr"][a0 : a1 + 1]
                b0, b1 = int(ptr[0]), int(ptr[-1])
                derivs = dict(
                    fprime_ptr=ptr - b0,
                    fprime_j=f["fprime_j"][b0:b1] - a0,
                    fprimes=f["fprimes"][b0:b1],
                )
            return Fingerprints(
                fingerprints=f["fingerprints"][a0:a1],
                offsets=self._offsets[start : stop + 1] - a0,
                numbers=f["numbers"][a0:a1],
                **derivs,
            )
        except (OSError, RuntimeError) as exc:
            raise StoreError(f"{self.path}: corrupt store, cannot read frames {start}:{stop} ({exc})") from None

    def __getitem__(self, key) -> Fingerprints:
        n = len(self)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                raise ValueError("store slices must have step 1")
            return self.frames(start, max(start, stop))
        try:
            k = int(key)
        except TypeError:
            raise TypeError(f"store indices must be integers or slices, not {type(key).__name__}") from None
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"frame {key} out of range for a store of {n} frames")
        return self.frames(k, k + 1)

    def __iter__(self) -> Iterator[Fingerprints]:
        for k in range(len(self)):
            yield self.frames(k, k + 1)

    def chunks(self, size: int = 64) -> Iterator[Fingerprints]:
        """Consecutive batches of up to ``size`` frames (fewer reads than frame by frame)."""
        for start in range(0, len(self), size):
            yield self.frames(start, min(start + size, len(self)))

    def read_all(self) -> Fingerprints:
        """Every frame in one :class:`Fingerprints` (loads the whole store into memory)."""
        return self.frames(0, len(self))

    # -- provenance ---------------------------------------------------------------
    def require_config(self, config, base_dir=None) -> None:
        """Raise :class:`StoreError` naming the differing settings unless this store was
        written with the descriptor settings of ``config`` (a dict or a JSON path;
        pseudodensity files compared by content). A config without ``elements`` takes
        the store's."""
        require_same_settings(self.config, config, str(self.path), base_dir=base_dir, stored_hash=self.config_hash,
                              error=StoreError)


def open_store(path) -> Store:
    """Open the store at ``path`` for reading; raises :class:`StoreError` if it is
    missing, not a fastfp store, corrupt, incomplete, or of an unsupported version."""
    return Store(path)


# -- streaming featurization ---------------------------------------------------------

_worker_descriptor = None


def _init_worker(resolved: dict) -> None:
    global _worker_descriptor
    _worker_descriptor = build_descriptor(resolved)


def _featurize_chunk(frames, first_index: int, derivatives: bool) -> Fingerprints:
    return _worker_descriptor.featurize(frames, derivatives=derivatives, first_index=first_index)


def _light(atoms):
    """Only what featurization reads (numbers, positions, cell, pbc): cheap to pickle."""
    from ase import Atoms

    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=atoms.pbc)


def featurize_to_store(frames: Iterable, config: dict, path, *, derivatives: bool = True,
                       workers: int = 1, chunk_size: int = 32, total: int | None = None,
                       progress: bool = False, metadata: dict | None = None,
                       compression: str | None = None) -> dict:
    """Featurize ``frames`` (an iterable of ASE ``Atoms``, consumed lazily) into a new
    store at ``path``, ``chunk_size`` frames at a time.

    ``config`` is a config in canonical form (:func:`fastfp.config.resolve_config`).
    With ``workers > 1`` chunks are featurized by a process pool, results written in
    order, with at most ``2 * workers`` chunks in flight, so memory stays bounded for any
    number of frames. Errors (e.g. :class:`~fastfp.frames.FrameError`, naming the frame
    by its position in ``frames``) propagate; then nothing is left at ``path`` and an
    existing store there is untouched. Returns counts and the elapsed seconds.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    t0 = time.perf_counter()
    descriptor = build_descriptor(config)
    meta = {"features_per_element": descriptor.features_per_element()}
    meta.update(metadata or {})


    from tqdm import tqdm

    bar = tqdm(total=total, unit="frame", desc="featurize", disable=not progress, dynamic_ncols=True)
    try:
        with StoreWriter(path, config, descriptor.n_features, derivatives, metadata=meta,
                         compression=compression) as writer:
            def write(fps):
                writer.append(fps)
                bar.update(fps.n_frames)

            if workers == 1:
                for first, chunk in chunks(frames, chunk_size, _light):
                    write(descriptor.featurize(chunk, derivatives=derivatives, first_index=first))
            else:
                import multiprocessing as mp

                ctx = mp.get_context("spawn")
                with ctx.Pool(workers, initializer=_init_worker, initargs=(config,)) as pool:
                    pending = deque()
                    for first, chunk in chunks(frames, chunk_size, _light):
                        pending.append(pool.apply_async(_featurize_chunk, (chunk, first, derivatives)))
                        if len(pending) >= 2 * workers:
                            write(pending.popleft().get())
                    while pending:
                        write(pending.popleft().get())
            summary = dict(n_frames=writer.n_frames, n_atoms=writer.n_atoms, n_blocks=writer.n_blocks,
                           n_features=descriptor.n_features)
    finally:
        bar.close()
    summary["seconds"] = time.perf_counter() - t0
    return summary
