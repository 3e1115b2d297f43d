"""Feature and target scaling with AMPTorch's semantics, vectorised.

AMPTorch's ``FeatureScaler.norm`` (``amptorch/preprocessing/utils.py``) scales each
derivative entry in a Python loop; :func:`norm_features` does the same arithmetic with
one gather per frame. It works on AMPTorch's own scaler objects (their attributes
``transform``, ``elementwise``, ``forcetraining``, ``unique``, ``scales`` or ``scale``),
so :func:`fastfp.amptorch.install` can swap it in without changing checkpoints, and on
:class:`FeatureScaler` here, which fits the same statistics without AMPTorch.
"""

from __future__ import annotations

import torch


def _scale_tables(scaler, atomic_numbers: torch.Tensor, n_features: int):
    """Per-atom (n_atoms, n_features) scale and offset of ``scaler``."""
    if not scaler.elementwise:
        scale = scaler.scale["scale"].expand(len(atomic_numbers), n_features)
        return scale, scaler.scale["offset"].expand(len(atomic_numbers), n_features)
    known = torch.as_tensor(scaler.unique)
    unseen = torch.unique(atomic_numbers[~torch.isin(atomic_numbers, known)])
    if len(unseen):
        raise ValueError(f"FeatureScaler: no scaling fitted for atomic number(s) {unseen.tolist()}")
    position = torch.searchsorted(known, atomic_numbers)
    scales = torch.stack([scaler.scales[z]["scale"] for z in scaler.unique])
    offsets = torch.stack([scaler.scales[z]["offset"] for z in scaler.unique])
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
    """
    for data in data_list:
        data.fingerprint, scale = scale_fingerprints(scaler, data.fingerprint, data.atomic_numbers)
        if scaler.forcetraining:
            indices = data.fprimes._indices()
            # rows are atom * n_features + feature: the row's factor is the flat table's entry
            # (index_select: 100x faster than advanced indexing here, torch 2.13 CPU)
            factor = scale.reshape(-1).index_select(0, indices[0])
            values = data.fprimes._values()
            values = values / factor if scaler.transform == "standardize" else values * factor
            data.fprimes = torch.sparse_coo_tensor(indices, values, data.fprimes.size(), check_invariants=False)
    return data_list


class FingerprintStatistics:
    """What AMPTorch's ``FeatureScaler`` fits, accumulated batch by batch: per element
    (``elementwise``) or over all atoms, the count, minimum, maximum, mean and standard
    deviation (``unbiased=False``) of each feature, batches merged as in Chan, Golub and
    LeVeque, "Algorithms for computing the sample variance" (1979). Minimum and maximum
    are exact; from one batch, mean and deviation are ``torch.mean`` and ``torch.std``
    (so AMPTorch's numbers exactly), from several they agree with them to rounding.
    """

    def __init__(self, elementwise: bool):
        self.elementwise = elementwise
        self.groups: dict = {}  # atomic number (or None) -> [count, min, max, mean, std]

    def add(self, fingerprints: torch.Tensor, atomic_numbers: torch.Tensor) -> None:
        """Take in the rows ``fingerprints`` (n_atoms, n_features) of atoms ``atomic_numbers``."""
        if self.elementwise:
            for z in torch.unique(atomic_numbers).tolist():
                self._merge(z, fingerprints[atomic_numbers == z])
        else:
            self._merge(None, fingerprints)

    def _merge(self, key, rows: torch.Tensor) -> None:
        n = rows.shape[0]
        low, high = torch.min(rows, dim=0).values, torch.max(rows, dim=0).values
        mean, std = torch.mean(rows, dim=0), torch.std(rows, dim=0, unbiased=False)
        if key in self.groups:
            count0, low0, high0, mean0, std0 = self.groups[key]
            total = count0 + n
            delta = mean - mean0
            m2 = std0**2 * count0 + std**2 * n + delta**2 * (count0 * n / total)
            low, high = torch.minimum(low0, low), torch.maximum(high0, high)
            n, mean, std = total, mean0 + delta * (n / total), torch.sqrt(m2 / total)
        self.groups[key] = [n, low, high, mean, std]

    def fit(self, scaler, forcetraining: bool, scaling: dict):
        """Give ``scaler`` (an AMPTorch or fastfp ``FeatureScaler``, possibly made with
        ``__new__``) the attributes AMPTorch's ``FeatureScaler.__init__`` sets for these
        rows; returns it. Raises ``ValueError`` for a bad ``scaling`` or no rows."""
        transform = scaling["type"]
        if transform not in ("normalize", "standardize"):
            raise ValueError(f"scaling 'type' must be 'normalize' or 'standardize', got {transform!r}")
        if transform == "normalize" and "range" not in scaling:
            raise ValueError("scaling: 'normalize' needs a 'range'")
        if not self.groups:
            raise ValueError("no fingerprints to fit the feature scaler to")
        scaler.transform = transform
        scaler.forcetraining = forcetraining
        scaler.elementwise = self.elementwise
        scaler.threshold = scaling.get("threshold", 1e-6)
        if self.elementwise:
            scaler.unique = sorted(self.groups)
            scaler.scales = {z: self._scale(self.groups[z], scaler.threshold, scaling) for z in scaler.unique}
        else:
            scaler.scale = self._scale(self.groups[None], scaler.threshold, scaling)
        return scaler

    @staticmethod
    def _scale(group, threshold, scaling) -> dict:
        """AMPTorch's ``{"offset", "scale"}`` of one group (``preprocessing/utils.py``)."""
        _, low, high, mean, std = group
        if scaling["type"] == "standardize":
            std = std.clone()
            std[std < threshold] = 1
            return {"offset": mean, "scale": std}
        span = high - low
        span[span < threshold] = 1
        scale = (scaling["range"][1] - scaling["range"][0]) / span
        return {"offset": scaling["range"][0] - low * scale, "scale": scale}


class FeatureScaler:
    """AMPTorch's ``FeatureScaler`` (same fit, attributes and ``norm``), for use without
    AMPTorch. ``scaling``: ``{"type": "normalize", "range": (a, b)}`` or
    ``{"type": "standardize"}``, optional ``"elementwise"`` (True) and ``"threshold"``
    (1e-6: smaller ranges or deviations are set to 1)."""

    def __init__(self, data_list, forcetraining, scaling):
        statistics = FingerprintStatistics(scaling.get("elementwise", True))
        statistics.add(torch.cat([d.fingerprint for d in data_list]), torch.cat([d.atomic_numbers for d in data_list]))
        statistics.fit(self, forcetraining, scaling)

    norm = norm_features


class TargetScaler:
    """AMPTorch's ``TargetScaler``: energies standardised by their mean and (unbiased)
    standard deviation over the data set, forces divided by the same deviation (eV, eV/Å).
    A single frame or zero spread gives mean 0, deviation 1."""

    def __init__(self, data_list, forcetraining):
        self.forcetraining = forcetraining
        energies = torch.tensor([d.energy for d in data_list])
        self.target_mean = torch.mean(energies, dim=0)
        self.target_std = torch.std(energies, dim=0)
        if torch.isnan(self.target_std) or self.target_std == 0:
            self.target_mean = 0
            self.target_std = 1

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
