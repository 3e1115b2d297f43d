"""On-disk store of fingerprints and their derivative blocks: a directory of HDF5 shards.

A store holds one :class:`~fastfp.fingerprints.Fingerprints` for any number of frames,
split into shards of consecutive frames, each written whole by one task (in this
process, or by the workers of a Dask cluster, :mod:`fastfp.cluster`), and read back as
one sequence of frames::

    featurize_to_store(FrameFile("frames.traj"), config, "fp.store", cluster="local:2")
    store = open_store("fp.store")
    len(store), store[7], store[10:20], store.chunks(64), store.coo(7), store.config

Layout (format version 2)::

    fp.store/
      manifest.json       format, complete, config (resolved) and config_hash,
                          n_features, settings (derivatives, fprimes_dtype,
                          compression), source (frames file, selection, size, SHA-256),
                          n_frames, shard_frames, metadata; once complete also
                          shards.atoms, shards.blocks and shards.labels (per shard)
      shard-00000.h5      frames 0 .. shard_frames-1
      ...

The directory protocol (manifest first, each shard renamed into place when whole,
``complete`` last, resume computing only missing shards, refusal of other settings) is
:mod:`fastfp.shards`'. A single shard file is itself a store of one shard
(:class:`StoreWriter` writes one; :func:`open_store` opens a file or a directory), and
stores written by earlier fastfp (one HDF5 file, format version 1) are such files.

One shard (HDF5), with A atoms, B derivative blocks, F features, N frames, indices
global within the shard:

- ``fingerprints`` (A, F) float64, ``numbers`` (A,) int64, ``offsets`` (N+1,) int64;
- with derivatives: ``fprime_ptr`` (A+1,) int64, ``fprime_j`` (B,) int64,
  ``fprimes`` (B, F, 3) float64 or float32 (see :class:`~fastfp.fingerprints.Fingerprints`);
- with labels (when every frame of the shard has an energy and forces, read as AMPTorch
  reads them: :func:`~fastfp.frames.labels_of`): ``energies`` (N,) float64, eV, and
  ``forces`` (A, 3) float64, eV/Å: what training from the store needs;
- attributes: ``format`` ("fastfp-store"), ``format_version``, ``complete``, ``config``
  (canonical JSON), ``config_hash``, ``n_features``, ``has_derivatives``,
  ``fprimes_dtype``, ``has_labels``, ``metadata`` (JSON), ``n_frames``, ``n_atoms``,
  ``n_blocks``.

Derivative blocks in float32 (``fprimes_dtype="float32"``, ``--fprimes-dtype float32``) halve the
store (about 92% of it is derivative blocks). Each value is rounded to the nearest
float32: relative error at most 2**-24 (6.0e-8) for values above float32's smallest
normal number (1.2e-38); smaller values (far tails of the Gaussians) keep an absolute
error below 1e-45. Measured on 300 frames of the water/Cu(111) workload
(``fastfp.harness.workloads``, 28,111 atoms, 146 million derivative values) with
GMPOrderNorm orders 0-3 x 5 sigmas, cutoff 8 Å (``examples/gmpordernorm_oc20.json``):
largest relative error of a value 5.96e-8, of a block (largest error over the block's
largest value) 5.96e-8; 3,435 values below 1.2e-38, absolute error at most 7.0e-46.
Forces contracted from the blocks (``F_j = -sum_i w_i . dG_i/dr_j``, random per-element
weights ``w``) differ from float64's by at most 4.3e-8 of the frame's largest force
(median relative error of a component 1.9e-8). Fingerprints stay float64. Reading
returns float64 either way.

Why HDF5 shards (h5py): a shard is one self-describing file, written by one task
without coordinating with any other writer, atomically renamed into place when whole,
so "complete" is simply "present" (no marker to keep in step with many files), and
rewriting a lost shard replaces one file. Chunked datasets grow as frames are
appended and are read back by slices that touch only the chunks they need, so writing
and reading stay memory bounded. libhdf5 and h5py are mature, shipped as wheels and on
every HPC system, and keep their on-disk format stable. Zarr v3 stores each chunk of
each array as its own file (or packs them with its sharding codec into shared
objects): a shard of frames would be many files and inodes, which parallel filesystems
handle badly at OC20's millions of frames, completeness would need a marker kept in
step with them, and zarr-python 3's API and codecs are younger; its strengths
(concurrent writes to one array, object storage) are not needed when each task owns a
file. LMDB (AMPTorch's own datasets, :mod:`fastfp.amptorch.lmdb`) holds opaque pickled
values with no typed arrays, slices or metadata, and needs its map size chosen up front.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from .atomic import AtomicPath
from .config import build_descriptor, canonical_json, config_hash, require_same_settings
from .descriptors.base import check_device
from .errors import StoreError
from .fingerprints import Fingerprints
from .frames import chunks, labels_of
from .shards import ShardedDir, ShardJob, frames_source, read_manifest, sharded_run

FORMAT = "fastfp-store"
FORMAT_VERSION = 2
#: shard format versions this fastfp reads (1: single-file stores of earlier fastfp, float64)
READABLE_VERSIONS = (1, 2)
#: frames per shard (``--shard-frames``)
DEFAULT_SHARD_FRAMES = 500
#: dtypes the derivative blocks may be stored in
FPRIMES_DTYPES = ("float64", "float32")
_INDEX = ("fingerprints", "numbers", "offsets")
_DERIV = ("fprime_ptr", "fprime_j", "fprimes")
_LABELS = ("energies", "forces")
#: shards a reader keeps open at once
MAX_OPEN_SHARDS = 8


def _fprimes_dtype(dtype) -> str:
    name = np.dtype(dtype).name
    if name not in FPRIMES_DTYPES:
        raise ValueError(f"derivative blocks are stored as {' or '.join(FPRIMES_DTYPES)}, not {name}")
    return name


class StoreWriter:
    """Write fingerprints to a new single-file store (one shard) at ``path``, atomically.

    Parameters
    ----------
    path : target file; replaced only when the writer closes without error
    descriptor_config : the (preferably resolved, :func:`fastfp.config.resolve_config`)
        config that made the fingerprints; recorded with its hash
    n_features : width F of the fingerprint rows
    derivatives : whether derivative blocks are stored (every append must match)
    fprimes_dtype : "float64" (default) or "float32", the derivative blocks' stored type
    labels : None, or ``(energies (N,) eV, forces (A, 3) eV/Å)`` of all the frames to be
        appended, stored with them (checked against what was appended on close)
    metadata : optional JSON-serialisable dict recorded in the ``metadata`` attribute
    compression : h5py compression filter for the float datasets (None, "lzf", "gzip")
    chunk_bytes : target size of one HDF5 chunk

    Use as a context manager; an exception inside the ``with`` block removes the
    temporary file and leaves ``path`` as it was. Outside ``with``, call :meth:`close`
    (commit) or :meth:`abort`.
    """

    def __init__(self, path, descriptor_config: dict, n_features: int, derivatives: bool,
                 *, fprimes_dtype="float64", labels=None, metadata: dict | None = None,
                 compression: str | None = None, chunk_bytes: int = 1 << 20):
        self.path = Path(path)
        self.n_features = int(n_features)
        if self.n_features <= 0:
            raise ValueError(f"n_features must be positive, got {n_features}")
        self.derivatives = bool(derivatives)
        self.fprimes_dtype = _fprimes_dtype(fprimes_dtype)
        self.labels = None if labels is None else tuple(np.asarray(x, dtype=np.float64) for x in labels)
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
            # no chunk cache: each chunk is placed in the file when written, not when its
            # dataset happens to be closed (garbage collection), so a shard's bytes do not
            # depend on the process that writes it (a serial run and Dask workers agree)
            self._file = h5py.File(self.tmp_path, "x", rdcc_nbytes=0)
            f = self._file
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["complete"] = False
            f.attrs["config"] = config_json
            f.attrs["config_hash"] = config_hash(descriptor_config)
            f.attrs["n_features"] = self.n_features
            f.attrs["has_derivatives"] = self.derivatives
            f.attrs["fprimes_dtype"] = self.fprimes_dtype
            f.attrs["has_labels"] = self.labels is not None
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
                brows = max(1, chunk_bytes // (np.dtype(self.fprimes_dtype).itemsize * 3 * F))
                f.create_dataset("fprimes", (0, F, 3), self.fprimes_dtype, maxshape=(None, F, 3),
                                 chunks=(brows, F, 3), **kw)
            if self.labels is not None:  # whole, written once: the file's layout does not depend on the appends
                f.create_dataset("energies", data=self.labels[0])
                f.create_dataset("forces", data=self.labels[1])
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
            self._grow(f["fprimes"], np.asarray(fps.fprimes, dtype=self.fprimes_dtype))
            self.n_blocks += n_bl
        self.n_atoms += n_at
        self.n_frames += fps.n_frames

    def close(self) -> None:
        """Mark the store complete and move it to ``path`` (atomic replace)."""
        if self._closed:
            return
        try:
            if self.labels is not None and (self.labels[0].shape != (self.n_frames,)
                                            or self.labels[1].shape != (self.n_atoms, 3)):
                raise ValueError(f"{self.path}: labels for {len(self.labels[0])} frames and {len(self.labels[1])} "
                                 f"atoms, but {self.n_frames} frames and {self.n_atoms} atoms were appended")
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


# -- reading ----------------------------------------------------------------------------


class _Shard:
    """One shard file opened for reading, validated (against ``expect``, the attributes
    the manifest promises, where given)."""

    def __init__(self, path: Path, expect: dict | None = None):
        self.path = path
        if not path.exists():
            self._fail("no such store (file not found)" if expect is None else "shard file missing")
        if not path.is_file():
            self._fail("not a file")
        try:
            is_h5 = h5py.is_hdf5(path)
        except OSError as exc:
            self._fail(f"cannot read: {exc}")
        if not is_h5:
            self._fail("not a fastfp store (not an HDF5 file)")
        try:
            self.file = h5py.File(path, "r")
        except OSError as exc:
            self._fail(f"corrupt or truncated HDF5 file ({exc})")
        try:
            self._validate(self.file, expect or {})
        except BaseException:
            self.file.close()
            raise

    def _fail(self, problem: str):
        raise StoreError(f"{self.path}: {problem}")

    def _validate(self, f, expect: dict) -> None:
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
        if version is None or int(version) not in READABLE_VERSIONS:
            self._fail(f"store format version {version!r} is not supported (this fastfp reads {READABLE_VERSIONS})")
        if not bool(attrs.get("complete", False)):
            self._fail("incomplete store: its writer did not finish (interrupted or failed); re-create it")
        try:
            self.config = json.loads(attrs["config"])
            self.config_hash = str(attrs["config_hash"])
            self.n_features = int(attrs["n_features"])
            self.has_derivatives = bool(attrs["has_derivatives"])
            self.fprimes_dtype = str(attrs.get("fprimes_dtype", "float64"))
            self.has_labels = bool(attrs.get("has_labels", False))
            self.metadata = json.loads(attrs.get("metadata", "{}"))
        except (KeyError, ValueError, TypeError) as exc:
            self._fail(f"corrupt store attributes ({type(exc).__name__}: {exc})")
        names = _INDEX + (_DERIV if self.has_derivatives else ()) + (_LABELS if self.has_labels else ())
        missing = [n for n in names if n not in f]
        if missing:
            self._fail(f"corrupt store: missing dataset(s) {missing}")
        F = self.n_features
        try:
            fp, nums, off = f["fingerprints"], f["numbers"], f["offsets"]
            if fp.ndim != 2 or fp.shape[1] != F or nums.ndim != 1 or off.ndim != 1 or off.shape[0] < 1:
                self._fail("corrupt store: dataset shapes do not match")
            self.offsets = off[:].astype(np.int64)
            A = fp.shape[0]
            if (self.offsets[0] != 0 or self.offsets[-1] != A or nums.shape[0] != A
                    or np.any(np.diff(self.offsets) < 0)):
                self._fail("corrupt store: frame offsets do not match the atoms")
            self.n_blocks = 0
            if self.has_derivatives:
                ptr, jj, fpr = f["fprime_ptr"], f["fprime_j"], f["fprimes"]
                if ptr.shape != (A + 1,) or jj.ndim != 1 or fpr.shape[1:] != (F, 3) or fpr.shape[0] != jj.shape[0]:
                    self._fail("corrupt store: derivative dataset shapes do not match")
                if int(ptr[0]) != 0 or int(ptr[A]) != jj.shape[0]:
                    self._fail("corrupt store: fprime_ptr does not match the derivative blocks")
                self.n_blocks = jj.shape[0]
            if self.has_labels and (f["energies"].shape != (len(self.offsets) - 1,) or f["forces"].shape != (A, 3)):
                self._fail("corrupt store: label dataset shapes do not match")
            n = attrs.get("n_frames")
            if n is not None and int(n) != len(self.offsets) - 1:
                self._fail(f"corrupt store: {len(self.offsets) - 1} frames, attribute says {int(n)}")
        except (OSError, RuntimeError, KeyError) as exc:
            self._fail(f"corrupt store, cannot read its index ({exc})")
        found = dict(n_frames=len(self.offsets) - 1, config_hash=self.config_hash, n_features=F,
                     has_derivatives=self.has_derivatives, fprimes_dtype=self.fprimes_dtype)
        wrong = [k for k, v in expect.items() if found[k] != v]
        if wrong:
            self._fail(f"shard does not belong to its store (differing: {', '.join(wrong)})")

    def frames(self, start: int, stop: int, derivatives: bool = True) -> Fingerprints:
        """Frames ``start:stop`` of this shard, indices re-based to 0, fprimes as float64
        (not read with ``derivatives=False``)."""
        a0, a1 = int(self.offsets[start]), int(self.offsets[stop])
        f = self.file
        try:
            derivs = {}
            if self.has_derivatives and derivatives:
                ptr = f["fprime_ptr"][a0 : a1 + 1]
                b0, b1 = int(ptr[0]), int(ptr[-1])
                derivs = dict(fprime_ptr=ptr - b0, fprime_j=f["fprime_j"][b0:b1] - a0,
                              fprimes=f["fprimes"].astype(np.float64)[b0:b1])
            return Fingerprints(fingerprints=f["fingerprints"][a0:a1], offsets=self.offsets[start : stop + 1] - a0,
                                numbers=f["numbers"][a0:a1], **derivs)
        except (OSError, RuntimeError) as exc:
            raise StoreError(f"{self.path}: corrupt store, cannot read frames {start}:{stop} ({exc})") from None

    def labels(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Energies (eV) and forces (eV/Å) of frames ``start:stop`` of this shard."""
        a0, a1 = int(self.offsets[start]), int(self.offsets[stop])
        try:
            return self.file["energies"][start:stop], self.file["forces"][a0:a1]
        except (OSError, RuntimeError) as exc:
            raise StoreError(f"{self.path}: corrupt store, cannot read labels {start}:{stop} ({exc})") from None

    def close(self) -> None:
        self.file.close()


class Store:
    """A store opened for reading (see :func:`open_store`): a directory of shards, or a
    single shard file.

    ``len(store)`` frames; ``store[k]`` one frame and ``store[a:b]`` frames ``a..b-1``
    as :class:`~fastfp.fingerprints.Fingerprints` with indices re-based to 0 and
    derivative blocks as float64 (whatever ``fprimes_dtype`` they are stored in);
    iteration yields one-frame :class:`~fastfp.fingerprints.Fingerprints`. Only the slices
    of the requested frames are read, from the shards that hold them (at most
    :data:`MAX_OPEN_SHARDS` kept open). For streaming, :meth:`chunks` yields consecutive
    batches of a frame range, and :attr:`shard_bounds` gives the frame ranges of the
    shards (a reader per shard reads sequentially within one file). Picklable (re-opens
    by path), and safe to use after ``fork``.

    Attributes: ``path``, ``config`` (resolved descriptor config), ``config_hash``,
    ``n_features``, ``has_derivatives``, ``fprimes_dtype``, ``has_labels`` (energies and
    forces of every frame, :meth:`labels`), ``metadata``, ``source``
    (the frames it was made from: ``{"frames": path@selection, ...}``; None for a single
    file), ``n_atoms``, ``shard_bounds``.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._open()

    def _fail(self, problem: str):
        raise StoreError(f"{self.path}: {problem}")

    def _open(self) -> None:
        self._pid = os.getpid()
        self._shards: dict[int, _Shard] = {}
        if self.path.is_dir():
            self._open_directory()
        else:
            shard = _Shard(self.path)
            self._files = [self.path]
            self._expect = [None]
            self._shards[0] = shard
            for key in ("config", "config_hash", "n_features", "has_derivatives", "fprimes_dtype", "has_labels",
                        "metadata"):
                setattr(self, key, getattr(shard, key))
            self.source = None
            self.shard_bounds = [(0, len(shard.offsets) - 1)]
            self.n_atoms = int(shard.offsets[-1])
        self._starts = np.array([a for a, _ in self.shard_bounds] + [len(self)], dtype=np.int64)

    def _open_directory(self) -> None:
        out = ShardedDir(self.path, FORMAT, ".h5", StoreError)
        try:
            manifest = read_manifest(self.path)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        if manifest is None:
            self._fail("not a fastfp store (a directory without a manifest.json)")
        if manifest.get("format") != FORMAT:
            self._fail(f"not a fastfp store (format {manifest.get('format')!r}, expected {FORMAT!r})")
        if manifest.get("format_version") != FORMAT_VERSION:
            self._fail(f"store format version {manifest.get('format_version')!r} is not supported "
                       f"(this fastfp reads {FORMAT_VERSION})")
        if not manifest.get("complete"):
            self._fail("incomplete store: its writer did not finish (interrupted or failed); "
                       "rerun the same command to resume it")
        try:
            self.config = manifest["config"]
            self.config_hash = manifest["config_hash"]
            self.n_features = int(manifest["n_features"])
            settings = manifest["settings"]
            self.has_derivatives = bool(settings["derivatives"])
            self.fprimes_dtype = settings["fprimes_dtype"]
            self.metadata = manifest.get("metadata", {})
            self.source = manifest["source"]
            out.manifest = manifest
            self.shard_bounds = out.bounds()
            atoms = [int(a) for a in manifest["shards"]["atoms"]]
            self.has_labels = all(manifest["shards"].get("labels", [False]))
        except (KeyError, TypeError, ValueError) as exc:
            self._fail(f"corrupt manifest ({type(exc).__name__}: {exc})")
        if len(atoms) != len(self.shard_bounds):
            self._fail(f"corrupt manifest: {len(atoms)} shard sizes for {len(self.shard_bounds)} shards")
        self.n_atoms = sum(atoms)
        self._files = [out.shard_path(k) for k in range(len(self.shard_bounds))]
        missing = [p.name for p in self._files if not p.is_file()]
        if missing:
            self._fail(f"{len(missing)} shard file(s) missing ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})")
        self._expect = [dict(n_frames=b - a, config_hash=self.config_hash, n_features=self.n_features,
                             has_derivatives=self.has_derivatives, fprimes_dtype=self.fprimes_dtype)
                        for a, b in self.shard_bounds]

    def _shard(self, k: int) -> _Shard:
        if self._pid != os.getpid():  # forked: the parent's HDF5 handles are not ours to use
            self._shards = {}
            self._pid = os.getpid()
        shard = self._shards.pop(k, None) or _Shard(self._files[k], self._expect[k])
        self._shards[k] = shard  # most recently used last
        while len(self._shards) > MAX_OPEN_SHARDS:
            self._shards.pop(next(iter(self._shards))).close()
        return shard

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.path = state["path"]
        self._open()

    def close(self) -> None:
        if self._pid == os.getpid():
            for shard in self._shards.values():
                shard.close()
        self._shards = {}

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Store({str(self.path)!r}, frames={len(self)}, atoms={self.n_atoms}, shards={len(self.shard_bounds)}, "
                f"features={self.n_features}, derivatives={self.has_derivatives})")

    # -- reading ------------------------------------------------------------------
    def __len__(self) -> int:
        return self.shard_bounds[-1][1] if self.shard_bounds else 0

    @property
    def n_frames(self) -> int:
        return len(self)

    def _parts(self, start: int, stop: int):
        """``(shard, first, stop)`` within each shard holding frames ``start:stop``, each
        shard opened when its turn comes (read it then: at most :data:`MAX_OPEN_SHARDS`
        stay open)."""
        n = len(self)
        if not 0 <= start <= stop <= n:
            raise IndexError(f"frames {start}:{stop} out of range for a store of {n} frames")
        if start == stop:
            yield self._shard(0), 0, 0
            return
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        last = int(np.searchsorted(self._starts, stop, side="left")) - 1
        for k in range(first, last + 1):
            a, b = self.shard_bounds[k]
            yield self._shard(k), max(start, a) - a, min(stop, b) - a

    def frames(self, start: int, stop: int, derivatives: bool = True) -> Fingerprints:
        """Frames ``start:stop`` (0 <= start <= stop <= len) as one :class:`Fingerprints`;
        with ``derivatives=False`` the derivative blocks are not read."""
        return Fingerprints.concatenate([shard.frames(a, b, derivatives) for shard, a, b in self._parts(start, stop)])

    def labels(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """``(energies (n,) eV, forces (n_atoms, 3) eV/Å)`` of frames ``start:stop``.
        Raises :class:`StoreError` when the store holds no labels (its frames had none)."""
        if not self.has_labels:
            self._fail("the store holds no energies and forces (its frames had none when it was written)")
        parts = [shard.labels(a, b) for shard, a, b in self._parts(start, stop)]
        return np.concatenate([e for e, _ in parts]), np.concatenate([f for _, f in parts])

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

    def chunks(self, size: int = 64, start: int = 0, stop: int | None = None,
               derivatives: bool = True) -> Iterator[Fingerprints]:
        """Consecutive batches of up to ``size`` frames of frames ``start:stop`` (default
        all): memory holds one batch at a time. ``derivatives=False``: fingerprints only."""
        stop = len(self) if stop is None else stop
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"frames {start}:{stop} out of range for a store of {len(self)} frames")
        for a in range(start, stop, size):
            yield self.frames(a, min(a + size, stop), derivatives)

    def read_all(self) -> Fingerprints:
        """Every frame in one :class:`Fingerprints` (loads the whole store into memory)."""
        return self.frames(0, len(self))

    def coo(self, k: int, threshold: float = 0.0, atom_order=None):
        """Derivatives of frame ``k`` in AMPTorch's COO layout: ``(row, col, val, size)``
        as :meth:`fastfp.fingerprints.Fingerprints.coo` gives them."""
        return self[k].coo(0, threshold, atom_order)

    # -- provenance ---------------------------------------------------------------
    def require_config(self, config, base_dir=None) -> None:
        """Raise :class:`StoreError` naming the differing settings unless this store was
        written with the descriptor settings of ``config`` (a dict or a JSON path;
        pseudodensity files compared by content). A config without ``elements`` takes
        the store's."""
        require_same_settings(self.config, config, str(self.path), base_dir=base_dir, stored_hash=self.config_hash,
                              error=StoreError)


def open_store(path) -> Store:
    """Open the store at ``path`` (a store directory, or a single shard file) for
    reading; raises :class:`StoreError` if it is missing, not a fastfp store, corrupt,
    incomplete, or of an unsupported version."""
    if not Path(path).exists():
        raise StoreError(f"{path}: no such store (not found)")
    return Store(path)


# -- featurizing into a store --------------------------------------------------------------


@dataclass(frozen=True)
class _Job(ShardJob):
    """What every shard task needs (small: sent to each worker)."""

    derivatives: bool
    fprimes_dtype: str
    chunk_frames: int
    compression: str | None
    device: str


def _light(atoms):
    """Only what featurization reads (numbers, positions, cell, pbc)."""
    from ase import Atoms

    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=atoms.pbc)


def _peak_rss() -> int:
    """Peak resident memory of this process so far, bytes (Linux: ``ru_maxrss`` in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _labels(frames, start: int):
    """``(energies, forces)`` of ``frames`` (numbered from ``start``), or None if one lacks them."""
    try:
        return labels_of(frames, first_index=start)
    except ValueError:
        return None


def featurize_shard(job: _Job, path, start: int, stop: int) -> dict:
    """Task: featurize frames ``start:stop`` of ``job.frames`` into the shard file
    ``path`` (atomically), with their energies and forces when every frame has them.
    Returns its ``n_atoms``, ``n_blocks``, ``bytes`` and ``labels``, and the ``pid`` and
    ``peak_rss`` (bytes) of the process that ran it."""
    descriptor = job.descriptor()
    frames = job.read(start, stop)
    labels = _labels(frames, start)
    with StoreWriter(path, job.config, descriptor.n_features, job.derivatives, fprimes_dtype=job.fprimes_dtype,
                     labels=labels, metadata={"frames": [start, stop]}, compression=job.compression) as writer:
        for first, chunk in chunks(frames, job.chunk_frames, convert=_light):
            fps = descriptor.featurize(chunk, derivatives=job.derivatives, first_index=start + first, device=job.device)
            writer.append(fps.to_numpy())
    return dict(n_atoms=writer.n_atoms, n_blocks=writer.n_blocks, bytes=Path(path).stat().st_size,
                labels=labels is not None, pid=os.getpid(), peak_rss=_peak_rss())


def featurize_to_store(frames, config: dict, path, *, derivatives: bool = True, fprimes_dtype="float64",
                       shard_frames: int = DEFAULT_SHARD_FRAMES, chunk_frames: int = 32, cluster=None,
                       overwrite: bool = False, progress: bool = False, metadata: dict | None = None,
                       compression: str | None = None, device: str = "cpu") -> dict:
    """Featurize ``frames`` into the store directory ``path``, one shard of
    ``shard_frames`` consecutive frames per task, ``chunk_frames`` frames at a time.

    Parameters
    ----------
    frames : a :class:`~fastfp.framefile.FrameFile` (each task reads its own frames), or
        a sequence of ASE ``Atoms`` (only without ``cluster``)
    config : descriptor config in canonical form (:func:`fastfp.config.resolve_config`)
    derivatives : store the derivative blocks too
    fprimes_dtype : "float64" or "float32": the derivative blocks' stored type (see the module
        docstring for the error float32 introduces)
    cluster : where the tasks run (:mod:`fastfp.cluster`): None (this process, threaded
        kernels), "local:N", "tcp://HOST:PORT", "slurm[:JOBS]" or a ``distributed.Client``
    overwrite : replace an existing store at ``path`` (never anything else)
    progress : a tqdm progress bar (frames)
    metadata : JSON-serialisable dict recorded in the manifest
    compression : h5py compression of the float datasets (None, "lzf", "gzip")
    device : "cpu" or "cuda": where each task featurizes (:meth:`Descriptor.featurize
        <fastfp.descriptors.base.Descriptor.featurize>`; "cuda": the current CUDA GPU of
        the process that runs it). A store written on the GPU holds the CPU's
        fingerprints and derivative blocks within rounding (1e-10 relative), each
        centre's blocks ordered by the atom they differentiate by.

    An existing store at ``path`` with the same config, settings and frames is resumed:
    only its missing shards are computed. Other settings raise :class:`StoreError`
    naming them (unless ``overwrite``); a path that is not a fastfp store raises
    :class:`StoreError` and is left untouched. A ``device`` that cannot run raises
    ``ValueError`` or :class:`~fastfp.gpu.device.DeviceError` before anything is written
    (in this process; on a cluster, from the first task). Errors of the frames (e.g.
    :class:`~fastfp.frames.FrameError`, naming the frame by its position in ``frames``)
    propagate, and a store this call created is removed. An interruption
    (``KeyboardInterrupt``) or a lost cluster leaves the complete shards and the
    (incomplete) manifest, for a later resume, and no temporary files; a store this call
    created is removed if nothing was kept in it (a failed connection, say). The run is
    :func:`fastfp.shards.sharded_run`'s.

    Returns counts (``n_frames``, ``n_atoms``, ``n_blocks``, ``n_features``, ``bytes``,
    ``shards``), ``computed`` (indices of the shards computed by this call),
    ``peak_rss`` ({process id: peak resident bytes} of the processes that ran them) and
    the elapsed ``seconds``.
    """
    t0 = time.perf_counter()
    for name, value in (("chunk_frames", chunk_frames), ("shard_frames", shard_frames)):
        if int(value) < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    fprimes_dtype = _fprimes_dtype(fprimes_dtype)
    check_device(device)
    if device == "cuda" and cluster is None:
        from .gpu.device import array_module

        array_module()  # DeviceError here, before the store is made
    out = ShardedDir(path, FORMAT, ".h5", StoreError)
    out.check()
    source = frames_source(frames, cluster)
    n_frames = len(frames)
    if n_frames == 0:
        raise ValueError("no frames given")
    descriptor = build_descriptor(config)
    manifest = {
        "format_version": FORMAT_VERSION, "config": config, "config_hash": config_hash(config),
        "n_features": descriptor.n_features,
        "settings": {"derivatives": bool(derivatives), "fprimes_dtype": fprimes_dtype, "compression": compression},
        "source": source, "n_frames": n_frames, "shard_frames": int(shard_frames),
        "metadata": {"features_per_element": descriptor.features_per_element(), **(metadata or {})},
    }
    expect = dict(config_hash=manifest["config_hash"], n_features=descriptor.n_features,
                  has_derivatives=bool(derivatives), fprimes_dtype=fprimes_dtype)

    def shard_info(p: Path, k: int) -> dict | None:
        a, b = out.bounds()[k]
        try:
            shard = _Shard(p, dict(expect, n_frames=b - a))
        except StoreError:
            return None
        shard.close()
        return dict(n_atoms=int(shard.offsets[-1]), n_blocks=shard.n_blocks, bytes=p.stat().st_size,
                    labels=shard.has_labels)

    job = _Job(frames, config, bool(derivatives), fprimes_dtype, int(chunk_frames), compression, device)
    info = {}
    with sharded_run(out, manifest, cluster=cluster, overwrite=overwrite,
                     is_complete=lambda p, k: shard_info(p, k) is not None, progress=progress) as run:
        todo = run.todo
        for k, result in run.map(featurize_shard, todo, lambda k: (job, out.shard_path(k), *out.bounds()[k]),
                                 name="fastfp-featurize", desc="fastfp featurize"):
            info[k] = result
    bounds = out.bounds()
    for k in range(len(bounds)):
        if k not in info:
            info[k] = shard_info(out.shard_path(k), k)
            if info[k] is None:
                raise StoreError(f"{out.shard_path(k)}: shard missing or damaged after the run; rerun to recompute it")
    shards = [info[k] for k in range(len(bounds))]
    peak_rss = {}
    for k in todo:
        peak_rss[info[k]["pid"]] = max(peak_rss.get(info[k]["pid"], 0), info[k]["peak_rss"])
    out.finish(shards={"atoms": [s["n_atoms"] for s in shards], "blocks": [s["n_blocks"] for s in shards],
                       "labels": [s["labels"] for s in shards]})
    return dict(n_frames=n_frames, n_atoms=sum(s["n_atoms"] for s in shards),
                n_blocks=sum(s["n_blocks"] for s in shards), n_features=descriptor.n_features,
                bytes=sum(s["bytes"] for s in shards), shards=len(shards), computed=sorted(todo),
                peak_rss=peak_rss, seconds=time.perf_counter() - t0)
