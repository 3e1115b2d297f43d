"""Feature and target scaling with AMPTorch's semantics, vectorised.

AMPTorch's ``FeatureScaler.norm`` (``amptorch/preprocessing/utils.py``) scales each
derivative entry in a Python loop; :func:`norm_features` does the same arithmetic in one
compiled pass per frame. It works on AMPTorch's own scaler objects (their attributes
``transform``, ``elementwise``, ``forcetraining``, ``unique``, ``scales`` or ``scale``),
so :func:`fastfp.amptorch.install` can swap it in without changing checkpoints, and on
:class:`FeatureScaler` here, which fits the same statistics without AMPTorch.

:class:`FitStatistics` gathers what both scalers fit (per element: count, minimum,
maximum, mean and sum of squared deviations of each feature; the same of the energies)
from parts of a data set, in any number of processes, merged with the pairwise update
of Chan, Golub & LeVeque (1979); :func:`feature_scaler` and :func:`target_scaler` then
build AMPTorch's (or fastfp's) scaler objects from it, with the attributes AMPTorch's
``__init__`` sets. "normalize" is exactly AMPTorch's fit (minima and maxima do not depend
on the order of the data); "standardize" and the target scaler agree with AMPTorch's
``torch.mean``/``torch.std`` to rounding (about 1e-16 relative in float64).
"""

from __future__ import annotations

import numpy as np
import torch

from ..kernels.blocks import scale_block_rows, scale_coo_rows
from ..threads import run_balanced
from .frame_blocks import FrameBlocks

#: AMPTorch's default feature scaling (``AtomsTrainer``'s ``config["dataset"]["scaling"]``)
DEFAULT_SCALING = {"type": "normalize", "range": (0, 1), "elementwise": True}
SCALING_KEYS = {"type", "range", "elementwise", "threshold"}


def check_scaling(scaling) -> dict:
    """A copy of ``scaling`` (AMPTorch's scaling dict), checked; ``None`` gives
    :data:`DEFAULT_SCALING`. Raises ``ValueError`` naming the problem."""
    if scaling is None:
        return dict(DEFAULT_SCALING)
    if not isinstance(scaling, dict):
        raise ValueError(f"scaling must be a dict like {DEFAULT_SCALING}, got {scaling!r}")
    unknown = sorted(set(scaling) - SCALING_KEYS)
    if unknown:
        raise ValueError(f"scaling: unknown key(s) {unknown}; known keys: {sorted(SCALING_KEYS)}")
    kind = scaling.get("type")
    if kind not in ("normalize", "standardize"):
        raise ValueError(f"scaling: 'type' must be 'normalize' or 'standardize', got {kind!r}")
    out = dict(scaling)
    if kind == "normalize":
        rng = scaling.get("range")
        if (not isinstance(rng, (list, tuple)) or len(rng) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng) or rng[0] >= rng[1]):
            raise ValueError(f"scaling: 'normalize' needs a 'range' [low, high] with low < high, got {rng!r}")
        out["range"] = (rng[0], rng[1])
    if "elementwise" in out and not isinstance(out["elementwise"], bool):
        raise ValueError(f"scaling: 'elementwise' must be true or false, got {out['elementwise']!r}")
    if "threshold" in out and (isinstance(out["threshold"], bool) or not isinstance(out["threshold"], (int, float))):
        raise ValueError(f"scaling: 'threshold' must be a number, got {out['threshold']!r}")
    return out


def _scale_tables(scaler, atomic_numbers: torch.Tensor, n_features: int):
    """Per-atom (n_atoms, n_features) scale and offset of ``scaler``, on the device of
    ``atomic_numbers`` (the scaler's own tensors stay where they are)."""
    device = atomic_numbers.device
    if not scaler.elementwise:
        scale = scaler.scale["scale"].to(device).expand(len(atomic_numbers), n_features)
        return scale, scaler.scale["offset"].to(device).expand(len(atomic_numbers), n_features)
    known = torch.as_tensor(scaler.unique, device=device)
    unseen = torch.unique(atomic_numbers[~torch.isin(atomic_numbers, known)])
    if len(unseen):
        raise ValueError(f"FeatureScaler: no scaling fitted for atomic number(s) {unseen.tolist()}")
    position = torch.searchsorted(known, atomic_numbers)
    scales = torch.stack([scaler.scales[z]["scale"] for z in scaler.unique]).to(device)
    offsets = torch.stack([scaler.scales[z]["offset"] for z in scaler.unique]).to(device)
    return scales.index_select(0, position), offsets.index_select(0, position)


def scale_fingerprints(scaler, fingerprints: torch.Tensor, atomic_numbers: torch.Tensor):
    """``(scaled fingerprints, scale)``, both (n_atoms, n_features): normalize
    ``fp * scale + offset``, standardize ``(fp - offset) / scale``, with ``scaler``'s
    per-atom scale and offset (AMPTorch's ``FeatureScaler.norm``). Raises ``ValueError``
    for an element the scaler was not fitted on."""
    scale, offset = _scale_tables(scaler, atomic_numbers, fingerprints.shape[1])
    if scaler.transform == "standardize":
        return (fingerprints - offset) / scale, scale
    return fingerprints * scale + offset, scale


def norm_features(scaler, data_list, disable_tqdm=False):
    """Scale fingerprints and derivative values of ``data_list`` in place, as AMPTorch's
    ``FeatureScaler.norm``: normalize ``fp * scale + offset`` (derivatives ``* scale``),
    standardize ``(fp - offset) / scale`` (derivatives ``/ scale``). Returns ``data_list``.
    The fingerprints of frames of one width are scaled together (each frame then gets
    its own copy); the derivative values, COO tensors or pair blocks
    (:class:`~fastfp.amptorch.frame_blocks.FrameBlocks`), are scaled where they are,
    frames split over :func:`~fastfp.threads.num_threads` threads.
    """
    frame_scales = [None] * len(data_list)
    by_width = {}
    for k, data in enumerate(data_list):
        by_width.setdefault(data.fingerprint.shape[1], []).append(k)
    for members in by_width.values():
        group = [data_list[k] for k in members]
        sizes = [data.fingerprint.shape[0] for data in group]
        scaled, scale = scale_fingerprints(scaler, torch.cat([data.fingerprint for data in group]),
                                           torch.cat([data.atomic_numbers for data in group]))
        for data, fingerprint in zip(group, scaled.split(sizes)):
            data.fingerprint = fingerprint.clone()  # not a view that would keep (and pickle) all frames
        if scaler.forcetraining:
            for k, frame_scale in zip(members, scale.split(sizes)):
                frame_scales[k] = frame_scale.numpy()  # (n_atoms, width): row atom * width + feature
    if scaler.forcetraining:
        divide = scaler.transform == "standardize"
        fprimes = [data.fprimes for data in data_list]

        def scale_frames(start, stop):
            for k in range(start, stop):
                if isinstance(fprimes[k], FrameBlocks):
                    scale_block_rows(fprimes[k].fprime_ptr, fprimes[k].fprimes_t, frame_scales[k], divide)
                else:
                    scale_coo_rows(fprimes[k]._values().numpy(), fprimes[k]._indices()[0].numpy(),
                                   frame_scales[k].reshape(-1), divide)

        run_balanced(scale_frames, np.cumsum([0] + [_entries(m) for m in fprimes]))
    return data_list


def _entries(fprimes) -> int:
    """The stored values of a frame's derivatives (COO tensor or FrameBlocks)."""
    return fprimes.fprimes_t.size if isinstance(fprimes, FrameBlocks) else fprimes._nnz()


class FitStatistics:
    """What the feature and target scalers fit, gathered from parts of a data set.

    ``elements``: {atomic number: (count, min, max, mean, m2)} with per-feature (F,)
    float64 arrays (m2: sum of squared deviations from the mean); ``energy``: (count,
    mean, m2) of the energies (eV). Merge the parts in a fixed order for reproducible
    "standardize" results. JSON round trip: :meth:`to_json`, :meth:`from_json`.
    """

    def __init__(self):
        self.n_features: int | None = None
        self.elements: dict[int, tuple] = {}
        self.energy = (0, 0.0, 0.0)

    @staticmethod
    def _combine(a, b):
        """(count, mean, m2) of two parts together."""
        (na, ma, sa), (nb, mb, sb) = a, b
        if na == 0:
            return b
        if nb == 0:
            return a
        n = na + nb
        delta = mb - ma
        return n, ma + delta * (nb / n), sa + sb + delta * delta * (na * nb / n)

    def _check_width(self, width: int) -> None:
        if self.n_features is not None and width != self.n_features:
            raise ValueError(f"fingerprint widths differ between frames ({sorted({width, self.n_features})}; "
                             "elements with different numbers of features), which AMPTorch's FeatureScaler "
                             "cannot scale together")
        self.n_features = width

    def _merge_element(self, z: int, part: tuple) -> None:
        old = self.elements.get(z)
        if old is None:
            self.elements[z] = part
            return
        n, mean, m2 = self._combine((old[0], old[3], old[4]), (part[0], part[3], part[4]))
        self.elements[z] = (n, np.minimum(old[1], part[1]), np.maximum(old[2], part[2]), mean, m2)

    def add(self, fingerprints, numbers, energies=()) -> "FitStatistics":
        """Add atoms (``fingerprints`` (N, F), ``numbers`` (N,)) and ``energies`` (eV)."""
        fingerprints = np.asarray(fingerprints, dtype=np.float64)
        numbers = np.asarray(numbers)
        if len(numbers):
            self._check_width(fingerprints.shape[1])
        for z in np.unique(numbers).tolist():
            x = fingerprints[numbers == z]
            mean = x.mean(axis=0)
            self._merge_element(int(z), (len(x), x.min(axis=0), x.max(axis=0), mean, ((x - mean) ** 2).sum(axis=0)))
        e = np.asarray(energies, dtype=np.float64)
        if len(e):
            self.energy = self._combine(self.energy, (len(e), float(e.mean()), float(((e - e.mean()) ** 2).sum())))
        return self

    def merge(self, other: "FitStatistics") -> "FitStatistics":
        """Add the data of ``other`` (after this one's) to this one; returns self."""
        if other.n_features is not None:
            self._check_width(other.n_features)
        for z in sorted(other.elements):
            self._merge_element(z, other.elements[z])
        self.energy = self._combine(self.energy, other.energy)
        return self

    def to_json(self) -> dict:
        return {"n_features": self.n_features, "energy": list(self.energy),
                "elements": {str(z): [int(c)] + [np.asarray(a).tolist() for a in rest]
                             for z, (c, *rest) in sorted(self.elements.items())}}

    @classmethod
    def from_json(cls, data: dict) -> "FitStatistics":
        stats = cls()
        stats.n_features = data["n_features"]
        stats.energy = tuple(data["energy"])
        stats.elements = {int(z): (v[0], *(np.asarray(a, dtype=np.float64) for a in v[1:]))
                          for z, v in data["elements"].items()}
        return stats


def _fit(part: tuple, scaling: dict, threshold: float, dtype) -> dict:
    """AMPTorch's per-group fit (``FeatureScaler.__init__``) from (count, min, max, mean, m2)."""
    count, fpmin, fpmax, mean, m2 = part
    if scaling["type"] == "standardize":
        std = torch.tensor(np.sqrt(m2 / count), dtype=dtype)
        std[std < threshold] = 1
        return {"offset": torch.tensor(mean, dtype=dtype), "scale": std}
    low, high = scaling["range"]
    fpmin = torch.tensor(fpmin, dtype=dtype)
    span = torch.tensor(fpmax, dtype=dtype) - fpmin
    span[span < threshold] = 1
    scale = (high - low) / span
    return {"offset": low - fpmin * scale, "scale": scale}


def _fill_feature_scaler(scaler, stats: FitStatistics, forcetraining, scaling, dtype) -> None:
    scaling = check_scaling(scaling)
    scaler.transform = scaling["type"]
    scaler.forcetraining = forcetraining
    scaler.elementwise = scaling.get("elementwise", True)
    scaler.threshold = scaling.get("threshold", 1e-6)
    if not stats.elements:
        raise ValueError("no atoms to fit the feature scaler on")
    if scaler.elementwise:
        scaler.unique = sorted(stats.elements)
        scaler.scales = {z: _fit(stats.elements[z], scaling, scaler.threshold, dtype) for z in scaler.unique}
    else:
        whole = FitStatistics()
        for z in sorted(stats.elements):
            whole._merge_element(0, stats.elements[z])
        scaler.scale = _fit(whole.elements[0], scaling, scaler.threshold, dtype)


def feature_scaler(cls, stats: FitStatistics, forcetraining: bool, scaling: dict, dtype=torch.float64):
    """A fitted ``cls`` (AMPTorch's ``FeatureScaler`` or :class:`FeatureScaler`) from
    ``stats``, with the attributes AMPTorch's ``__init__`` sets, tensors of ``dtype``."""
    scaler = cls.__new__(cls)
    _fill_feature_scaler(scaler, stats, forcetraining, scaling, dtype)
    return scaler


def _fill_target_scaler(scaler, stats: FitStatistics, forcetraining, dtype) -> None:
    scaler.forcetraining = forcetraining
    n, mean, m2 = stats.energy
    if n < 2 or m2 == 0:  # AMPTorch: a NaN or zero deviation gives mean 0, deviation 1
        scaler.target_mean, scaler.target_std = 0, 1
    else:
        scaler.target_mean = torch.tensor(mean, dtype=dtype)
        scaler.target_std = torch.tensor(np.sqrt(m2 / (n - 1)), dtype=dtype)


def target_scaler(cls, stats: FitStatistics, forcetraining: bool, dtype=torch.float64):
    """A fitted ``cls`` (AMPTorch's ``TargetScaler`` or :class:`TargetScaler`) from ``stats``."""
    scaler = cls.__new__(cls)
    _fill_target_scaler(scaler, stats, forcetraining, dtype)
    return scaler


class FeatureScaler:
    """AMPTorch's ``FeatureScaler`` (same fit, attributes, ``norm`` and ``==``), for use
    without AMPTorch. ``scaling``: ``{"type": "normalize", "range": (a, b)}`` or
    ``{"type": "standardize"}``, optional ``"elementwise"`` (True) and ``"threshold"``
    (1e-6: smaller ranges or deviations are set to 1)."""

    def __init__(self, data_list, forcetraining, scaling):
        stats = FitStatistics()
        dtype = torch.get_default_dtype()
        for d in data_list:
            stats.add(d.fingerprint.numpy(), d.atomic_numbers.numpy())
            dtype = d.fingerprint.dtype
        _fill_feature_scaler(self, stats, forcetraining, scaling, dtype)

    def _tables(self) -> dict:
        return self.scales if self.elementwise else {None: self.scale}

    def __eq__(self, other):
        if not isinstance(other, FeatureScaler):
            return NotImplemented
        if (self.transform, self.elementwise) != (other.transform, other.elementwise):
            return False
        mine, theirs = self._tables(), other._tables()
        return mine.keys() == theirs.keys() and all(
            mine[z].keys() == theirs[z].keys() and all(torch.equal(mine[z][k], theirs[z][k]) for k in mine[z])
            for z in mine)

    norm = norm_features


class TargetScaler:
    """AMPTorch's ``TargetScaler``: energies standardised by their mean and (unbiased)
    standard deviation over the data set, forces divided by the same deviation (eV, eV/Å).
    A single frame or zero spread gives mean 0, deviation 1."""

    def __init__(self, data_list, forcetraining):
        energies = [float(d.energy) for d in data_list]
        _fill_target_scaler(self, FitStatistics().add(np.zeros((0, 0)), np.zeros(0), energies), forcetraining,
                            torch.get_default_dtype())

    def __eq__(self, other):
        if not isinstance(other, TargetScaler):
            return NotImplemented
        return bool(self.target_mean == other.target_mean and self.target_std == other.target_std)

    def norm(self, data_list, disable_tqdm=False):
        for data in data_list:
            data.energy = (data.energy - self.target_mean) / self.target_std
            if self.forcetraining:
                data.forces /= self.target_std
        return data_list

    def denorm(self, tensor, pred="energy"):
        if pred == "energy":
            return tensor * self.target_std + self.target_mean
        return tensor * self.target_std
