"""Feature and target scaling with AMPTorch's semantics, vectorised.

AMPTorch's ``FeatureScaler.norm`` (``amptorch/preprocessing/utils.py``) scales each
derivative entry in a Python loop; :func:`norm_features` does the same arithmetic in one
compiled pass per frame. It works on AMPTorch's own scaler objects (their attributes
``transform``, ``elementwise``, ``forcetraining``, ``unique``, ``scales`` or ``scale``),
so :func:`fastfp.amptorch.install` can swap it in without changing checkpoints, and on
:class:`FeatureScaler` here, which fits the same statistics without AMPTorch.
"""

from __future__ import annotations

import numpy as np
import torch

from ..kernels.blocks import scale_coo_rows
from ..threads import run_balanced


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


def norm_features(scaler, data_list, disable_tqdm=False):
    """Scale fingerprints and derivative values of ``data_list`` in place, as AMPTorch's
    ``FeatureScaler.norm``: normalize ``fp * scale + offset`` (derivatives ``* scale``),
    standardize ``(fp - offset) / scale`` (derivatives ``/ scale``). Returns ``data_list``.
    The derivative values are scaled where they are, frames split over
    :func:`~fastfp.threads.num_threads` threads.
    """
    row_factors = []
    for data in data_list:
        n_features = data.fingerprint.shape[1]
        scale, offset = _scale_tables(scaler, data.atomic_numbers, n_features)
        if scaler.transform == "standardize":
            data.fingerprint = (data.fingerprint - offset) / scale
        else:
            data.fingerprint = data.fingerprint * scale + offset
        if scaler.forcetraining:
            # rows are atom * n_features + feature: the row's factor is the flat table's entry
            row_factors.append(scale.reshape(-1).numpy())
    if scaler.forcetraining:
        values = [data.fprimes._values().numpy() for data in data_list]
        rows = [data.fprimes._indices()[0].numpy() for data in data_list]
        divide = scaler.transform == "standardize"

        def scale_frames(start, stop):
            for k in range(start, stop):
                scale_coo_rows(values[k], rows[k], row_factors[k], divide)

        run_balanced(scale_frames, np.cumsum([0] + [len(v) for v in values]))
    return data_list


class FeatureScaler:
    """AMPTorch's ``FeatureScaler`` (same fit, attributes and ``norm``), for use without
    AMPTorch. ``scaling``: ``{"type": "normalize", "range": (a, b)}`` or
    ``{"type": "standardize"}``, optional ``"elementwise"`` (True) and ``"threshold"``
    (1e-6: smaller ranges or deviations are set to 1)."""

    def __init__(self, data_list, forcetraining, scaling):
        self.transform = scaling["type"]
        if self.transform not in ("normalize", "standardize"):
            raise ValueError(f"scaling 'type' must be 'normalize' or 'standardize', got {self.transform!r}")
        if self.transform == "normalize" and "range" not in scaling:
            raise ValueError("scaling: 'normalize' needs a 'range'")
        self.forcetraining = forcetraining
        self.elementwise = scaling.get("elementwise", True)
        self.threshold = scaling.get("threshold", 1e-6)
        fingerprints = torch.cat([d.fingerprint for d in data_list])
        numbers = torch.cat([d.atomic_numbers for d in data_list])
        if self.elementwise:
            self.unique = torch.unique(numbers).tolist()
            self.scales = {z: self._fit(fingerprints[numbers == z], scaling) for z in self.unique}
        else:
            self.scale = self._fit(fingerprints, scaling)

    def _fit(self, fps, scaling):
        if self.transform == "standardize":
            mean = torch.mean(fps, dim=0)
            std = torch.std(fps, dim=0, unbiased=False)
            std[std < self.threshold] = 1
            return {"offset": mean, "scale": std}
        low, high = scaling["range"]
        fpmin = torch.min(fps, dim=0).values
        span = torch.max(fps, dim=0).values - fpmin
        span[span < self.threshold] = 1
        scale = (high - low) / span
        return {"offset": low - fpmin * scale, "scale": scale}

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
