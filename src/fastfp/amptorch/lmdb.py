"""AMPTorch-format LMDB datasets, written streaming with bounded memory.

:func:`write_lmdb` writes what AMPTorch's ``AtomsLMDBDataset`` (``amptorch/
dataset_lmdb.py``) reads, so that ``AtomsTrainer`` trains from it with
``config["dataset"]["lmdb_path"] = [path]``:

- ``"0"`` .. ``"n-1"``: one pickled torch_geometric ``Data`` per frame, as AMPTorch's
  ``AtomsToData.convert`` builds it (``fingerprint``, ``atomic_numbers``, ``num_nodes``,
  ``energy``, and with force training ``forces`` and the sparse COO ``fprimes``), scaled
  by the feature and target scalers as in AMPTorch's ``examples/3_lmdb`` writer and in
  its ``AtomsDataset``;
- ``"feature_scaler"``, ``"target_scaler"``: the fitted scaler objects;
- ``"length"`` (int), ``"elements"`` (list of symbols);
- ``"descriptor_setup"``: ``(fp_scheme, fp_params, cutoff_params, elements)``, the tuple
  AMPTorch's ``get_descriptor`` turns back into a descriptor (and ``AtomsTrainer.predict``
  uses to featurize new frames). The pseudodensity paths in it are absolute.

No other key is written. Every value is pickled with ``pickle.dumps(obj, protocol=-1)``,
as AMPTorch's writer does.

Scalers. Where AMPTorch can be imported, its own ``FeatureScaler`` and ``TargetScaler``
classes are fitted and stored, so reading the LMDB needs AMPTorch (as any AMPTorch
LMDB does) and not fastfp. Without AMPTorch, :class:`fastfp.amptorch.scaling.FeatureScaler` and
``TargetScaler`` are used (same fit, same arithmetic, same attributes and ``norm``); the
pickled scalers then refer to ``fastfp.amptorch.scaling``, so the process reading the
LMDB must be able to import fastfp. ``amptorch_scalers=`` forces either choice.

Streaming. Frames are read twice (three times when the config has no ``elements``: a
first scan collects them), so ``frames`` must be re-iterable (a list, an ASE
``Trajectory``, the CLI's lazily read file, ...): pass 1 featurizes without
derivatives and keeps only fingerprints, atomic numbers and energies, enough to fit both
scalers on the whole set exactly as AMPTorch does; pass 2 featurizes ``chunk_frames``
frames at a time with derivatives, builds, scales and pickles their ``Data`` and commits
them in one transaction, so memory holds one chunk's derivatives at a time. Torch
runs single-threaded meanwhile (its OpenMP threads and numba's slow each other down).

Size. The file holds every frame's derivatives in AMPTorch's COO layout, 24 bytes per
nonzero (int64 row and column, float64 value): GMPOrderNorm orders 0-3 x 5 sigmas with
an 8 Å cutoff takes about 7.5 MiB per 94-atom metal-slab frame (~116 GiB for 16,000
frames), so check the disk before writing large sets.

Atomicity. The LMDB is built in a temporary file beside ``path`` (same directory, so the
final ``os.replace`` is atomic), opened with ``subdir=False`` and ``lock=False`` (it is
private to the writer, so no ``-lock`` file is made); on any error, including
``KeyboardInterrupt``, the temporary file is removed and ``path`` is left as it was.
The map size starts small and doubles whenever a chunk does not fit.

Needs ``torch``, ``torch_geometric`` and ``lmdb`` (the ``torch`` extra); not AMPTorch.
"""

from __future__ import annotations

import contextlib
import pickle
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ..atomic import AtomicPath
from ..config import (build_descriptor, config_from_setup, descriptor_setup, load_config, require_same_settings,
                      resolve_config)
from ..frames import chunks, elements_of
from .data import fingerprints_to_data
from .scaling import check_scaling, norm_features

#: the metadata keys AMPTorch's AtomsLMDBDataset reads (besides "0".."n-1")
META_KEYS = ("feature_scaler", "target_scaler", "length", "elements", "descriptor_setup")
#: map size the LMDB starts with; doubled whenever a chunk does not fit
INITIAL_MAP_SIZE = 1 << 30
#: frames featurized with derivatives, scaled and committed together (pass 2)
DEFAULT_CHUNK_FRAMES = 16


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
def _default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _as_atoms(item):
    return item if hasattr(item, "positions") else item.toatoms()  # ase.db rows


def _energy(atoms, index: int) -> float:
    try:
        energy = atoms.get_potential_energy(apply_constraint=False)
    except Exception as exc:  # no calculator, or a calculator without an energy
        raise ValueError(f"frame {index}: no energy ({type(exc).__name__}: {exc}); "
                         "AMPTorch's LMDB needs an energy for every frame") from None
    if energy is None or not np.isfinite(energy):
        raise ValueError(f"frame {index}: energy is {energy!r}; AMPTorch's LMDB needs a finite energy for every frame")
    return float(energy)


def _check_forces(atoms, index: int) -> None:
    try:
        forces = atoms.get_forces(apply_constraint=False)
    except Exception as exc:
        raise ValueError(f"frame {index}: no forces ({type(exc).__name__}: {exc}); "
                         "force training needs forces for every frame (or pass derivatives=False)") from None
    if forces is None or np.shape(forces) != (len(atoms), 3) or not np.isfinite(forces).all():
        raise ValueError(f"frame {index}: forces missing or not finite")


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


# -- writing ---------------------------------------------------------------------------


def write_lmdb(frames, config, path, scaling=None, progress=True, chunk_frames=DEFAULT_CHUNK_FRAMES, *,
               base_dir=None, derivatives=True, amptorch_scalers=None, dtype=torch.float64,
               total=None) -> dict:
    """Featurize ``frames`` and write them as an AMPTorch LMDB dataset at ``path``.

    Parameters
    ----------
    frames : re-iterable of ASE ``Atoms`` (or ``ase.db`` rows) with energies and, with
        ``derivatives``, forces (read with ``apply_constraint=False``, as AMPTorch does);
        iterated twice (see the module docstring).
    config : fastfp/AMPTorch descriptor config, a dict or a JSON file path
        (:mod:`fastfp.config`); without ``elements`` the elements of the frames, sorted
        (AMPTorch's ``np.unique``), are used.
    path : the LMDB file to write (``subdir=False`` layout); replaced atomically.
    scaling : AMPTorch's feature-scaling dict (default :data:`DEFAULT_SCALING`,
        ``AtomsTrainer``'s default).
    progress : show tqdm progress bars (one per pass).
    chunk_frames : frames featurized at a time (both passes; in pass 2 with derivatives,
        scaled and committed in one transaction); memory grows with it, not with the
        number of frames (only pass 1's fingerprints, ~n_atoms * n_features * 8 bytes,
        are kept for the whole set).
    base_dir : directory that relative pseudodensity paths in ``config`` resolve against
        (default: the config file's directory, else the working directory).
    derivatives : store ``forces`` and the derivative matrices ``fprimes``, for force
        training (AMPTorch's ``forcetraining``, ``config["model"]["get_forces"]``).
    amptorch_scalers : ``None`` (AMPTorch's scaler classes where importable, else
        fastfp's), ``True`` (AMPTorch's, or ``ImportError``) or ``False`` (fastfp's).
    dtype : torch dtype of the stored tensors (default float64, AMPTorch's usual
        ``torch.DoubleTensor``); the default dtype is set to it while writing.
    total : number of frames, for the first progress bar (default ``len(frames)`` if any).

    Returns a summary dict (``n_frames``, ``n_atoms``, ``n_features``, ``bytes``,
    ``seconds``, ``scalers``: "amptorch" or "fastfp"). Raises ``ValueError`` for a bad
    config or scaling, a frame without energy (or forces) naming it, a frame that cannot
    be featurized (:class:`~fastfp.frames.FrameError`), or frames that changed between
    the passes; then nothing is left at ``path`` and an existing file there is untouched.
    """
    t0 = time.perf_counter()
    chunk_frames = int(chunk_frames)
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"{path}: directory {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; an AMPTorch LMDB is a single file (subdir=False)")
    if iter(frames) is frames:
        raise TypeError("frames must be re-iterable (a list, an ASE Trajectory, ...): write_lmdb reads them twice")
    scaling = check_scaling(scaling)
    raw, file_dir = load_config(config)
    resolved = resolve_config(raw, base_dir=base_dir if base_dir is not None else file_dir,
                              elements=None if "elements" in raw else elements_of(frames))
    descriptor = build_descriptor(resolved, amptorch=True)
    FeatureScaler, TargetScaler, origin = _scaler_classes(amptorch_scalers)
    if total is None and hasattr(frames, "__len__"):
        total = len(frames)

    # torch's OpenMP threads and numba's (the kernels') spin against each other; the
    # elementwise torch work here is fastest on one thread (3x faster on 2 cores)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _default_dtype(dtype):
            fit = _fit_scalers(frames, descriptor, scaling, derivatives, dtype, chunk_frames, total, progress,
                               FeatureScaler, TargetScaler)
            meta = {
                "feature_scaler": fit["feature_scaler"],
                "target_scaler": fit["target_scaler"],
                "length": fit["n_frames"],
                "elements": list(resolved["elements"]),
                "descriptor_setup": descriptor_setup(resolved),
            }
            _write_atomically(path, frames, descriptor, fit, meta, derivatives, chunk_frames, progress)
    finally:
        torch.set_num_threads(threads)
    return dict(n_frames=fit["n_frames"], n_atoms=int(sum(fit["n_atoms"])), n_features=fit["n_features"],
                bytes=path.stat().st_size, seconds=time.perf_counter() - t0, scalers=origin)


def _fit_scalers(frames, descriptor, scaling, derivatives, dtype, chunk_frames, total, progress,
                 FeatureScaler, TargetScaler) -> dict:
    """Pass 1: fingerprints without derivatives and energies of all frames -> both
    scalers, fitted as AMPTorch fits them on the whole data set. The scalers see one
    object per chunk of frames (its fingerprints and atomic numbers concatenated, which
    is what AMPTorch's FeatureScaler concatenates too) and one per frame (energy)."""
    from tqdm.auto import tqdm

    fit_chunks, energies, n_atoms = [], [], []
    with tqdm(total=total, unit="frame", desc="fastfp lmdb 1/2: fitting scalers", disable=not progress,
              dynamic_ncols=True) as bar:
        for first, chunk in chunks(frames, chunk_frames, _as_atoms):
            for k, atoms in enumerate(chunk):
                energies.append(SimpleNamespace(energy=_energy(atoms, first + k)))
                if derivatives:
                    _check_forces(atoms, first + k)
                n_atoms.append(len(atoms))
            fps = descriptor.featurize(chunk, derivatives=False, first_index=first)
            rows = [descriptors for _, descriptors, _, _ in descriptor.frame_outputs(fps, False)]
            widths = {r.shape[1] for r in rows} | {c.fingerprint.shape[1] for c in fit_chunks[-1:]}
            if len(widths) > 1:
                raise ValueError(
                    f"frames {first}..{first + len(chunk) - 1}: fingerprint widths differ between frames "
                    f"({sorted(widths)}; elements with different numbers of features), which AMPTorch's "
                    "FeatureScaler cannot scale together")
            fit_chunks.append(SimpleNamespace(fingerprint=torch.tensor(np.concatenate(rows), dtype=dtype),
                                              atomic_numbers=torch.as_tensor(fps.numbers, dtype=torch.long)))
            bar.update(len(chunk))
    if not energies:
        raise ValueError("no frames given")
    return dict(feature_scaler=FeatureScaler(fit_chunks, derivatives, scaling),
                target_scaler=TargetScaler(energies, derivatives),
                n_frames=len(energies), n_atoms=np.asarray(n_atoms), n_features=int(fit_chunks[0].fingerprint.shape[1]))


def _write_atomically(path: Path, frames, descriptor, fit, meta, derivatives, chunk_frames, progress) -> None:
    """Pass 2: featurize with derivatives, build, scale and pickle each chunk's ``Data``
    and commit it, in a temporary LMDB moved to ``path`` when complete."""
    import lmdb
    from tqdm.auto import tqdm

    feature_scaler, target_scaler, n_frames, n_atoms = (fit["feature_scaler"], fit["target_scaler"],
                                                        fit["n_frames"], fit["n_atoms"])
    with AtomicPath(path) as tmp:
        # no fsync per commit (sync=False): the OS writes back while the next chunk is
        # computed; env.sync(True) before the rename makes the whole file durable
        env = lmdb.open(str(tmp), map_size=INITIAL_MAP_SIZE, subdir=False, lock=False, meminit=False,
                        readahead=False, sync=False, metasync=False)
        try:
            done = 0
            with tqdm(total=n_frames, unit="frame", desc="fastfp lmdb 2/2: writing", disable=not progress,
                      dynamic_ncols=True) as bar:
                for first, chunk in chunks(frames, chunk_frames, _as_atoms):
                    if first + len(chunk) > n_frames or any(len(a) != n_atoms[first + k] for k, a in enumerate(chunk)):
                        raise ValueError(f"frames changed between the two passes over them (at frames "
                                         f"{first}..{first + len(chunk) - 1}); pass a list or a file")
                    fps = descriptor.featurize(chunk, derivatives=derivatives, first_index=first)
                    data = fingerprints_to_data(descriptor, chunk, fps, True, derivatives, derivatives)
                    del fps
                    norm_features(feature_scaler, data)
                    target_scaler.norm(data, disable_tqdm=True)
                    _put_all(env, {str(first + k): d for k, d in enumerate(data)})
                    del data
                    done = first + len(chunk)
                    bar.update(len(chunk))
            if done != n_frames:
                raise ValueError(f"frames changed between the two passes over them ({n_frames} frames, then {done}); "
                                 "pass a list or a file")
            _put_all(env, {key: meta[key] for key in META_KEYS})
            env.sync(True)
        finally:
            env.close()


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


__all__ = ["write_lmdb", "read_lmdb_setup", "require_same_setup", "META_KEYS"]
