"""AMPTorch-format LMDB datasets, written streaming with bounded memory, in one file or
as a directory of shards written by Dask workers.

:func:`write_lmdb` writes one LMDB file, :func:`write_lmdb_shards` a directory of them
(one per shard of consecutive frames, :mod:`fastfp.shards`, on a cluster if asked,
:mod:`fastfp.cluster`); each file is what AMPTorch's ``AtomsLMDBDataset``
(``amptorch/dataset_lmdb.py``) reads, and it reads a list of them as one data set, so
that ``AtomsTrainer`` trains from ``config["dataset"]["lmdb_path"] = [path]`` or
``= lmdb_paths(directory)``. Each file holds:

- ``"0"`` .. ``"n-1"``: one pickled torch_geometric ``Data`` per frame of the file, as
  AMPTorch's ``AtomsToData.convert`` builds it (``fingerprint``, ``atomic_numbers``,
  ``num_nodes``, ``energy``, and with force training ``forces`` and the sparse COO
  ``fprimes``), scaled by the feature and target scalers as in AMPTorch's
  ``examples/3_lmdb`` writer and in its ``AtomsDataset``;
- ``"feature_scaler"``, ``"target_scaler"``: the scalers, fitted on the whole data set
  (every shard holds the same ones: ``AtomsLMDBDataset`` checks that they are equal);
- ``"length"`` (int, frames in this file), ``"elements"`` (list of symbols);
- ``"descriptor_setup"``: ``(fp_scheme, fp_params, cutoff_params, elements)``, the tuple
  AMPTorch's ``get_descriptor`` turns back into a descriptor (and ``AtomsTrainer.predict``
  uses to featurize new frames). The pseudodensity paths in it are absolute.

No other key is written. Every value is pickled with ``pickle.dumps(obj, protocol=-1)``,
as AMPTorch's writer does.

Scalers. Where AMPTorch can be imported, its own ``FeatureScaler`` and ``TargetScaler``
classes are stored, so reading the LMDB needs AMPTorch (as any AMPTorch LMDB does) and
not fastfp. Without AMPTorch, :class:`fastfp.amptorch.scaling.FeatureScaler` and
``TargetScaler`` are used (same fit, same arithmetic, same attributes, ``norm`` and
``==``); the pickled scalers then refer to ``fastfp.amptorch.scaling``, so the process
reading the LMDB must be able to import fastfp. ``amptorch_scalers=`` forces either
choice.

Two passes. Pass 1 featurizes without derivatives, shard by shard (in parallel on a
cluster), and keeps only the statistics the scalers fit
(:class:`~fastfp.amptorch.scaling.FitStatistics`: per element and feature, minimum,
maximum, mean, squared deviations; the energies' mean and deviation), merged in shard
order; the scalers are built from them ("normalize" exactly as AMPTorch fits it,
"standardize" to rounding). Pass 2 featurizes each shard ``chunk_frames`` frames at a
time with derivatives, builds, scales and pickles their ``Data`` and commits them in
one transaction, so memory holds one chunk's derivatives at a time. Torch runs
single-threaded meanwhile (its OpenMP threads and numba's slow each other down).
A sharded directory records the statistics in its manifest once pass 1 is done, so a
resumed run goes straight to the missing shards of pass 2.

Size. The file holds every frame's derivatives in AMPTorch's COO layout, 24 bytes per
nonzero (int64 row and column, float64 value): GMPOrderNorm orders 0-3 x 5 sigmas with
an 8 Å cutoff takes about 7.5 MiB per 94-atom metal-slab frame (~116 GiB for 16,000
frames), so check the disk before writing large sets.

Atomicity. Each LMDB is built in a temporary file beside its path (same directory, so
the final ``os.replace`` is atomic), opened with ``subdir=False`` and ``lock=False`` (it
is private to the writer, so no ``-lock`` file is made); on any error, including
``KeyboardInterrupt``, the temporary file is removed and the path is left as it was.
The map size starts small and doubles whenever a chunk does not fit.

Needs ``torch``, ``torch_geometric`` and ``lmdb`` (the ``torch`` extra); not AMPTorch.
"""

from __future__ import annotations

import contextlib
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import AtomicPath
from ..config import (build_descriptor, config_from_setup, config_hash, descriptor_setup, load_config,
                      require_same_settings, resolve_config)
from ..frames import chunks, elements_of, labels_of
from ..shards import ShardedDir, ShardJob, frames_source, read_manifest, sharded_run
from .data import fingerprints_to_data
from .scaling import FitStatistics, check_scaling, feature_scaler, norm_features, target_scaler

#: the metadata keys AMPTorch's AtomsLMDBDataset reads (besides "0".."n-1")
META_KEYS = ("feature_scaler", "target_scaler", "length", "elements", "descriptor_setup")
#: map size the LMDB starts with; doubled whenever a chunk does not fit
INITIAL_MAP_SIZE = 1 << 30
#: frames featurized with derivatives, scaled and committed together (pass 2)
DEFAULT_CHUNK_FRAMES = 16
#: frames per LMDB file of a sharded directory (``fastfp lmdb --shard-frames``)
DEFAULT_SHARD_FRAMES = 500
#: the ``format`` of a sharded directory's manifest
FORMAT = "fastfp-lmdb"
#: the stored tensors' dtypes, by name
TENSOR_DTYPES = {"float64": torch.float64, "float32": torch.float32}


# -- helpers ---------------------------------------------------------------------------


def _scaler_classes(amptorch_scalers):
    """``(FeatureScaler, TargetScaler, origin)``: AMPTorch's where importable (or when
    asked), else fastfp's."""
    if amptorch_scalers is None or amptorch_scalers:
        try:
            from amptorch.preprocessing.utils import FeatureScaler, TargetScaler

            return FeatureScaler, TargetScaler, "amptorch"
        except Exception as exc:  # ImportError, or an AMPTorch that fails to import here
            if amptorch_scalers:
                raise ImportError(f"amptorch_scalers=True but AMPTorch's scalers cannot be imported: {exc}") from exc
    from .scaling import FeatureScaler, TargetScaler

    return FeatureScaler, TargetScaler, "fastfp"


@contextlib.contextmanager
def _torch_settings(dtype):
    """Torch's default dtype set to ``dtype`` and one thread: torch's OpenMP threads and
    numba's (the kernels') spin against each other; the elementwise torch work here is
    fastest on one thread (3x faster on 2 cores)."""
    old, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(dtype)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
        torch.set_num_threads(threads)


def _as_atoms(item):
    return item if hasattr(item, "positions") else item.toatoms()  # ase.db rows


def _put_all(env, items: dict) -> None:
    """Put ``items`` ({key: object}) pickled, one at a time, in one transaction, growing
    the map (doubling) until they fit. Values are pickled as they are put, so only one
    pickle exists at a time besides LMDB's copy in the transaction."""
    import lmdb

    while True:
        try:
            with env.begin(write=True) as txn:
                for key, obj in items.items():
                    txn.put(key.encode("ascii"), pickle.dumps(obj, protocol=-1))
            return
        except lmdb.MapFullError:
            env.set_mapsize(2 * env.info()["map_size"])


# -- the two passes, one shard (task) at a time ------------------------------------------------


@dataclass(frozen=True)
class _Job(ShardJob):
    """What every task needs (small: sent to each worker); frames in memory may be ase.db rows."""

    derivatives: bool
    tensor_dtype: str
    chunk_frames: int

    amptorch = True

    def chunks(self, start: int, stop: int):
        """``(index of the first frame, [Atoms, ...])`` over frames ``start:stop``."""
        for first, chunk in chunks(self.read(start, stop), self.chunk_frames, convert=_as_atoms):
            yield start + first, chunk


def fit_shard(job: _Job, start: int, stop: int, report=None) -> FitStatistics:
    """Task of pass 1: the scalers' statistics of frames ``start:stop`` (fingerprints
    without derivatives, energies); checks every frame's energy (and forces).
    ``report(n)`` (in this process only) is called after each chunk of n frames."""
    descriptor = job.descriptor()
    stats = FitStatistics()
    for first, chunk in job.chunks(start, stop):
        energies, _ = labels_of(chunk, first_index=first, forces=job.derivatives)
        fps = descriptor.featurize(chunk, derivatives=False, first_index=first, amptorch_binning=True)
        rows = [descriptors for _, descriptors, _, _ in descriptor.frame_outputs(fps, False)]
        if len({r.shape[1] for r in rows}) > 1:
            raise ValueError(f"frames {first}..{first + len(chunk) - 1}: fingerprint widths differ between frames "
                             f"({sorted({r.shape[1] for r in rows})}; elements with different numbers of features), "
                             "which AMPTorch's FeatureScaler cannot scale together")
        stats.add(np.concatenate(rows), fps.numbers, energies)
        if report is not None:
            report(len(chunk))
    return stats


def write_shard(job: _Job, path, start: int, stop: int, scalers: tuple, report=None) -> int:
    """Task of pass 2: frames ``start:stop`` featurized with derivatives, as scaled
    ``Data``, with the metadata keys, in a new LMDB file at ``path`` (atomically).
    ``scalers``: the fitted (feature scaler, target scaler). Returns the file's bytes.
    ``report`` as in :func:`fit_shard`."""
    import lmdb

    descriptor = job.descriptor()
    features, targets = scalers
    with _torch_settings(TENSOR_DTYPES[job.tensor_dtype]), AtomicPath(path) as tmp:
        # no fsync per commit (sync=False): the OS writes back while the next chunk is
        # computed; env.sync(True) before the rename makes the whole file durable
        env = lmdb.open(str(tmp), map_size=INITIAL_MAP_SIZE, subdir=False, lock=False, meminit=False,
                        readahead=False, sync=False, metasync=False)
        try:
            for first, chunk in job.chunks(start, stop):
                fps = descriptor.featurize(chunk, derivatives=job.derivatives, first_index=first, amptorch_binning=True)
                data = fingerprints_to_data(descriptor, chunk, fps, True, job.derivatives, job.derivatives)
                del fps
                norm_features(features, data)
                targets.norm(data, disable_tqdm=True)
                _put_all(env, {str(first - start + k): d for k, d in enumerate(data)})
                del data
                if report is not None:
                    report(len(chunk))
            _put_all(env, {"feature_scaler": features, "target_scaler": targets, "length": stop - start,
                           "elements": list(job.config["elements"]),
                           "descriptor_setup": descriptor_setup(job.config)})
            env.sync(True)
        finally:
            env.close()
    return Path(path).stat().st_size


def _prepare(frames, config, scaling, derivatives, tensor_dtype, chunk_frames, base_dir, amptorch_scalers, cluster):
    """Checked arguments: ``(job, source, scaling, scaler classes and origin)``."""
    if int(chunk_frames) < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
    tensor_dtype = {torch.float64: "float64", torch.float32: "float32"}.get(tensor_dtype, tensor_dtype)
    if tensor_dtype not in TENSOR_DTYPES:
        raise ValueError(f"tensor_dtype must be float64 or float32, got {tensor_dtype!r}")
    source = frames_source(frames, cluster)
    if len(frames) == 0:
        raise ValueError("no frames given")
    scaling = check_scaling(scaling)
    raw, file_dir = load_config(config)
    resolved = resolve_config(raw, base_dir=base_dir if base_dir is not None else file_dir,
                              elements=None if "elements" in raw else elements_of(frames))
    build_descriptor(resolved)  # a bad config fails here, before any task
    job = _Job(frames, resolved, bool(derivatives), tensor_dtype, int(chunk_frames))
    return job, source, scaling, _scaler_classes(amptorch_scalers)


def _scalers(job, stats, scaling, classes):
    FeatureScaler, TargetScaler, _ = classes
    dtype = TENSOR_DTYPES[job.tensor_dtype]
    return (feature_scaler(FeatureScaler, stats, job.derivatives, scaling, dtype),
            target_scaler(TargetScaler, stats, job.derivatives, dtype))


# -- writing ---------------------------------------------------------------------------


def write_lmdb(frames, config, path, *, scaling=None, progress=True, chunk_frames=DEFAULT_CHUNK_FRAMES,
               base_dir=None, derivatives=True, amptorch_scalers=None, tensor_dtype=torch.float64) -> dict:
    """Featurize ``frames`` and write them as one AMPTorch LMDB file at ``path``, in this
    process (:func:`write_lmdb_shards` writes a directory of them, on a cluster if asked).

    Parameters
    ----------
    frames : a :class:`~fastfp.framefile.FrameFile`, or a sequence of ASE ``Atoms`` (or
        ``ase.db`` rows) with energies and, with ``derivatives``, forces (read with
        ``apply_constraint=False``, as AMPTorch does); read twice (see the module docstring).
    config : fastfp/AMPTorch descriptor config, a dict or a JSON file path
        (:mod:`fastfp.config`); without ``elements`` the elements of the frames, sorted
        (AMPTorch's ``np.unique``), are used.
    path : the LMDB file to write (``subdir=False`` layout); replaced atomically.
    scaling : AMPTorch's feature-scaling dict (default :data:`~fastfp.amptorch.scaling.DEFAULT_SCALING`,
        ``AtomsTrainer``'s default).
    progress : show tqdm progress bars (one per pass).
    chunk_frames : frames featurized at a time (both passes; in pass 2 with derivatives,
        scaled and committed in one transaction); memory grows with it, not with the
        number of frames.
    base_dir : directory that relative pseudodensity paths in ``config`` resolve against
        (default: the config file's directory, else the working directory).
    derivatives : store ``forces`` and the derivative matrices ``fprimes``, for force
        training (AMPTorch's ``forcetraining``, ``config["model"]["get_forces"]``).
    amptorch_scalers : ``None`` (AMPTorch's scaler classes where importable, else
        fastfp's), ``True`` (AMPTorch's, or ``ImportError``) or ``False`` (fastfp's).
    tensor_dtype : torch dtype (or "float64", "float32") of the stored tensors (default
        float64, AMPTorch's usual ``torch.DoubleTensor``); torch's default dtype is set to it
        while writing.

    Returns a summary dict (``n_frames``, ``n_atoms``, ``n_features``, ``bytes``,
    ``seconds``, ``scalers``: "amptorch" or "fastfp"). Raises ``ValueError`` for a bad
    config or scaling, a frame without energy (or forces) naming it, or a frame that
    cannot be featurized (:class:`~fastfp.frames.FrameError`); then nothing is left at
    ``path`` and an existing file there is untouched.
    """
    t0 = time.perf_counter()
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"{path}: directory {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; an AMPTorch LMDB is a single file (subdir=False)")
    job, _, scaling, classes = _prepare(frames, config, scaling, derivatives, tensor_dtype, chunk_frames, base_dir,
                                        amptorch_scalers, None)
    from tqdm.auto import tqdm

    n = len(job.frames)
    with tqdm(total=n, unit="frame", desc="fastfp lmdb 1/2: fitting scalers", disable=not progress) as bar:
        stats = fit_shard(job, 0, n, bar.update)
    with tqdm(total=n, unit="frame", desc="fastfp lmdb 2/2: writing", disable=not progress) as bar:
        size = write_shard(job, path, 0, n, _scalers(job, stats, scaling, classes), bar.update)
    return dict(n_frames=n, n_atoms=int(sum(e[0] for e in stats.elements.values())), n_features=stats.n_features,
                bytes=size, seconds=time.perf_counter() - t0, scalers=classes[2])


def write_lmdb_shards(frames, config, path, *, scaling=None, derivatives=True, tensor_dtype=torch.float64,
                      shard_frames=DEFAULT_SHARD_FRAMES, chunk_frames=DEFAULT_CHUNK_FRAMES, cluster=None,
                      overwrite=False, progress=False, base_dir=None, amptorch_scalers=None) -> dict:
    """Featurize ``frames`` into a directory of AMPTorch LMDB files at ``path``, one per
    shard of ``shard_frames`` consecutive frames, each written by one task: in this
    process (``cluster`` None) or on a Dask cluster (:mod:`fastfp.cluster`: "local:N",
    "tcp://HOST:PORT", "slurm[:JOBS]" or a ``distributed.Client``; then ``frames`` must be
    a :class:`~fastfp.framefile.FrameFile`, which each worker reads). Both passes run as
    shard tasks; the scalers are fitted on the whole set between them.

    Other arguments as :func:`write_lmdb`; ``overwrite`` replaces an existing directory
    of this kind (never anything else). An existing one with the same config, settings
    and frames is resumed (only missing files are written; pass 1 is skipped if it had
    finished); other settings raise ``ValueError`` naming them. Errors of the frames
    propagate, and a directory this call created is removed; an interruption leaves the
    complete files and the manifest for a later resume, and no temporary files (a
    directory this call created and kept nothing in is removed). The run is
    :func:`fastfp.shards.sharded_run`'s.

    Returns a summary dict as :func:`write_lmdb`'s, plus ``shards``, ``computed``
    (indices of the files written by this call) and ``fitted`` (whether pass 1 ran). :func:`lmdb_paths` lists the files for
    ``config["dataset"]["lmdb_path"]``.
    """
    t0 = time.perf_counter()
    if int(shard_frames) < 1:
        raise ValueError(f"shard_frames must be at least 1, got {shard_frames}")
    out = ShardedDir(path, FORMAT, ".lmdb")
    out.check()
    job, source, scaling, classes = _prepare(frames, config, scaling, derivatives, tensor_dtype, chunk_frames,
                                             base_dir, amptorch_scalers, cluster)
    n_frames = len(job.frames)
    manifest = {"config": job.config, "config_hash": config_hash(job.config), "source": source,
                "settings": {"derivatives": job.derivatives, "tensor_dtype": job.tensor_dtype,
                             "scaling": _plain(scaling), "scalers": classes[2]},
                "n_frames": n_frames, "shard_frames": int(shard_frames)}

    def complete(p: Path, k: int) -> bool:
        a, b = out.bounds()[k]
        try:
            return read_lmdb_setup(p)["length"] == b - a
        except ValueError:
            return False

    with sharded_run(out, manifest, cluster=cluster, overwrite=overwrite, is_complete=complete,
                     progress=progress) as run:
        bounds = out.bounds()
        fitted = "statistics" not in out.manifest
        if fitted:
            shards = list(range(len(bounds)))
            parts = dict(run.map(fit_shard, shards, lambda k: (job, *bounds[k]), name="fastfp-lmdb-fit",
                                 desc="fastfp lmdb 1/2: fitting scalers"))
            stats = FitStatistics()
            for k in shards:  # in shard order: the same result however tasks finished
                stats.merge(parts[k])
            out.update(statistics=stats.to_json())
        stats = FitStatistics.from_json(out.manifest["statistics"])
        scalers = _scalers(job, stats, scaling, classes)
        for _ in run.map(write_shard, run.todo, lambda k: (job, out.shard_path(k), *bounds[k], scalers),
                         name="fastfp-lmdb-write", desc="fastfp lmdb 2/2: writing"):
            pass
    out.finish()
    return dict(n_frames=n_frames, n_atoms=int(sum(e[0] for e in stats.elements.values())),
                n_features=stats.n_features, bytes=sum(out.shard_path(k).stat().st_size for k in range(len(bounds))),
                seconds=time.perf_counter() - t0, scalers=classes[2], shards=len(bounds), computed=sorted(run.todo),
                fitted=fitted)


def _plain(scaling: dict) -> dict:
    """The scaling dict as JSON keeps it (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in scaling.items()}


def lmdb_paths(path) -> list[str]:
    """The LMDB files of the complete directory ``path`` written by
    :func:`write_lmdb_shards`, in frame order: AMPTorch's ``config["dataset"]["lmdb_path"]``.
    Raises ``ValueError`` for a directory that is not one, or is incomplete."""
    manifest = read_manifest(path)
    if manifest is None or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} directory (written by write_lmdb_shards / fastfp lmdb)")
    if not manifest.get("complete"):
        raise ValueError(f"{path}: incomplete (interrupted); rerun the same command to resume it")
    out = ShardedDir(path, FORMAT, ".lmdb")
    out.manifest = manifest
    paths = [out.shard_path(k) for k in range(out.n_shards())]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"{path}: {len(missing)} LMDB file(s) missing ({', '.join(missing[:3])}); "
                         "rerun the same command to write them again")
    return [str(p) for p in paths]


# -- reading and checking --------------------------------------------------------------


def _open_readonly(path):
    import lmdb

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such LMDB file" if not path.exists() else f"{path}: not a file")
    try:
        return lmdb.open(str(path), subdir=False, readonly=True, lock=False, readahead=False, meminit=False,
                         max_readers=1)
    except lmdb.Error as exc:
        raise ValueError(f"{path}: not a readable LMDB file ({exc})") from None


def read_lmdb_setup(path) -> dict:
    """``{"descriptor_setup": (fp_scheme, fp_params, cutoff_params, elements),
    "length": int, "elements": list}`` stored in the AMPTorch LMDB at ``path`` (the
    scalers are not unpickled, so neither AMPTorch nor fastfp's scalers are needed).
    Raises ``ValueError`` for a missing file or one without these keys."""
    env = _open_readonly(path)
    try:
        with env.begin() as txn:
            values = {key: txn.get(key.encode("ascii")) for key in ("descriptor_setup", "length", "elements")}
    finally:
        env.close()
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise ValueError(f"{path}: not an AMPTorch LMDB dataset (no key(s) {missing})")
    out = {k: pickle.loads(v) for k, v in values.items()}
    return out


def require_same_setup(path, config, base_dir=None) -> None:
    """Raise ``ValueError`` naming the differing settings unless the LMDB at ``path`` was
    written with the descriptor settings of ``config`` (a dict or a JSON path;
    pseudodensity files compare by content; a config without ``elements`` takes the
    LMDB's)."""
    stored = config_from_setup(read_lmdb_setup(path)["descriptor_setup"])
    require_same_settings(stored, config, f"{path}: LMDB", base_dir=base_dir)


__all__ = ["write_lmdb", "write_lmdb_shards", "lmdb_paths", "read_lmdb_setup", "require_same_setup", "META_KEYS"]
