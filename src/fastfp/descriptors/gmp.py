"""GMP descriptors: Gaussian-type multipole features of the electron pseudodensity.

X. Lei and A. J. Medford, "A universal framework for featurization of atomistic
systems", J. Phys. Chem. Lett. 13, 7911 (2022), arXiv:2102.02390. Parameters follow
AMPTorch's ``amptorch/descriptor/GMPOrderNorm/__init__.py`` and ``GMP/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import harmonics
from ..frames import PackedFrames
from ..kernels.blocks import pair_blocks
from ..kernels.gmp import LINEAR, SQRT_SUM_SQUARES, SUM_SQUARES, gmp_kernel
from ..neighbors import neighbor_pairs
from ..pseudodensity import read_atom_gaussians
from .base import Descriptor, check_keys


@dataclass
class FeatureSpec:
    """One GMP feature: components (exponents, weight) of one probe, and a mode."""

    sigma: float
    components: list = field(default_factory=list)
    mode: int = SUM_SQUARES
    zero_below: float = 0.0


def rs_inverse(rs_setup: dict, sigma: float) -> float:
    """1/r_s of the surface harmonics: ``{"setup": "constant", "rs": r}`` gives 1/r,
    ``{"setup": "scale", "scale_factor": s}`` gives 1/(s sigma) (AMPTorch's ``rs_setup``)."""
    kind = rs_setup.get("setup")
    if kind == "constant":
        return 1.0 / float(rs_setup["rs"])
    if kind == "scale":
        return 1.0 / (float(rs_setup["scale_factor"]) * sigma)
    raise ValueError(f"rs_setup: 'setup' must be 'constant' or 'scale', got {kind!r}")


class _GMPFamily(Descriptor):
    """Shared machinery: tables for :func:`~fastfp.kernels.gmp.gmp_kernel` and the call."""

    def _build(self, features: list[FeatureSpec], solid: bool, probe_amplitude, inv_rs, atom_gaussians):
        """Tables from ``features``. ``probe_amplitude(sigma)`` is A of the probe
        A exp(-r^2 / (2 sigma^2)); ``inv_rs(sigma)`` is 1/r_s (surface harmonics only)."""
        self.solid = bool(solid)
        self.feature_specs = features
        sigmas = sorted({f.sigma for f in features})
        comps = sorted({e for f in features for e, _ in f.components}, key=lambda e: (sum(e), e))
        comp_index = {e: k for k, e in enumerate(comps)}
        channels = sorted({(sigmas.index(f.sigma), comp_index[e]) for f in features for e, _ in f.components})
        chan_index = {c: n for n, c in enumerate(channels)}

        terms = [harmonics.solid_terms(e) if solid else harmonics.surface_terms(e) for e in comps]
        self._comp_ptr = np.concatenate(([0], np.cumsum([len(t) for t in terms]))).astype(np.int64)
        self._term_coef = np.array([c for t in terms for c, *_ in t], dtype=np.float64)
        self._term_exp = np.array([e for t in terms for _, *e in t], dtype=np.int64).reshape(-1, 3)
        self._comp_degree = np.array([sum(e) for e in comps], dtype=np.int64)

        chan_probe = np.array([s for s, _ in channels], dtype=np.int64)
        self._chan_ptr = np.searchsorted(chan_probe, np.arange(len(sigmas) + 1)).astype(np.int64)
        self._chan_comp = np.array([k for _, k in channels], dtype=np.int64)
        sig = np.array(sigmas, dtype=np.float64)
        self._probe_a = np.array([probe_amplitude(s) for s in sigmas], dtype=np.float64)
        self._probe_alpha = 1.0 / (2.0 * sig * sig)
        self._probe_inv_rs = np.array([inv_rs(s) for s in sigmas], dtype=np.float64)

        gaussians = read_atom_gaussians(atom_gaussians, self.elements)
        self._gauss_ptr = np.concatenate(([0], np.cumsum([len(g) for g in gaussians]))).astype(np.int64)
        table = np.concatenate(gaussians)
        self._gauss_b = np.ascontiguousarray(table[:, 0])
        self._gauss_beta = np.ascontiguousarray(table[:, 1])

        members = [
            (chan_index[(sigmas.index(f.sigma), comp_index[e])], w) for f in features for e, w in f.components
        ]
        self._feat_ptr = np.concatenate(([0], np.cumsum([len(f.components) for f in features]))).astype(np.int64)
        self._feat_chan = np.array([c for c, _ in members], dtype=np.int64)
        self._feat_weight = np.array([w for _, w in members], dtype=np.float64)
        self._feat_mode = np.array([f.mode for f in features], dtype=np.int64)
        self._feat_zero = np.array([f.zero_below for f in features], dtype=np.float64)

    @property
    def n_features(self) -> int:
        return len(self.feature_specs)

    def _compute(self, packed: PackedFrames, derivatives: bool):
        pairs = neighbor_pairs(packed, self.cutoff, self_pairs=True, amptorch_binning=self.amptorch_binning)
        block_ptr, block_j, pair_block = pair_blocks(pairs.ptr, pairs.j)
        species = self.species_of[packed.numbers[pairs.j]]
        fp, fprimes = gmp_kernel(
            pairs.ptr, species, pairs.vectors, pair_block, block_ptr, len(block_j),
            self._comp_ptr, self._term_coef, self._term_exp, self._comp_degree, self.solid,
            self._chan_ptr, self._chan_comp, self._probe_a, self._probe_alpha, self._probe_inv_rs,
            self._gauss_ptr, self._gauss_b, self._gauss_beta,
            self._feat_ptr, self._feat_chan, self._feat_weight, self._feat_mode, self._feat_zero,
            derivatives,
        )
        if not derivatives:
            return fp, {}
        return fp, dict(fprime_ptr=block_ptr, fprime_j=block_j, fprimes=fprimes)


def _positive_sigmas(sigmas, where):
    sigmas = [float(s) for s in sigmas]
    if not sigmas or not all(np.isfinite(s) and s > 0 for s in sigmas):
        raise ValueError(f"{where}: sigmas must be a non-empty list of positive numbers (Å), got {sigmas}")
    return sigmas


def default_cutoff(sigmas, threshold: float = 1e-8) -> float:
    """AMPTorch's cutoff when none is given: where the widest probe's normalised 1D
    Gaussian falls to ``threshold``, rounded to 0.01 Å (``GMPOrderNorm.default_cutoff``)."""
    sigma = max(sigmas)
    a = 1.0 / (sigma * np.sqrt(2.0 * np.pi))
    alpha = 1.0 / (2.0 * sigma * sigma)
    return round(float(np.sqrt(np.log(threshold / a) / (-alpha))), 2)


class GMPOrderNorm(_GMPFamily):
    """GMP features normalised over MCSH orders (AMPTorch ``fp_scheme: "gmpordernorm"``).

    For each (order n, probe width sigma), with mu_k the overlap of component k
    (probe A exp(-r^2/(2 sigma^2)) times the order-n MCSH, A = (sigma sqrt(2 pi))^-3)
    with all neighbours' pseudodensities (the atom's own included):

        fingerprint = sum over groups g of order n of  n!/(a! b! c!) sum_{k in g} mu_k^2

    (``square: True``, the default), or its square root, set to 0 below 1e-2
    (``square: False``). Features are ordered order-major, sigma-minor, as in AMPTorch.

    Parameters
    ----------
    MCSHs : dict
        AMPTorch's ``fp_params``: ``"MCSHs": {"orders": [...], "sigmas": [...]}`` or
        ``"MCSHs_detailed_list": [{"order": n, "sigmas": [...]}, ...]``; ``"atom_gaussians"``
        ``{element: path to .g file}``; optional ``"cutoff"`` (Å; default from the widest
        sigma), ``"solid_harmonics"`` (True), ``"square"`` (True), ``"rs_setup"``
        (surface harmonics only), ``"prime_threshold"`` and ``"log"`` (used by
        :mod:`fastfp.amptorch`).
    elements : list of str

    Raises ``ValueError`` (naming the key) for unknown keys or bad values, and
    :class:`~fastfp.pseudodensity.PseudodensityError` for missing or malformed ``.g`` files.
    """

    descriptor_type = "GMPOrderNorm"
    KEYS = {"MCSHs", "MCSHs_detailed_list", "atom_gaussians", "cutoff", "solid_harmonics",
            "square", "rs_setup", "prime_threshold", "log"}

    def __init__(self, MCSHs: dict, elements):
        check_keys(MCSHs, self.KEYS, "GMPOrderNorm")
        if "MCSHs_detailed_list" in MCSHs:
            setups = [(d["order"], d["sigmas"]) for d in MCSHs["MCSHs_detailed_list"]]
        elif "MCSHs" in MCSHs:
            check_keys(MCSHs["MCSHs"], {"orders", "sigmas"}, "GMPOrderNorm 'MCSHs'")
            setups = [(n, MCSHs["MCSHs"]["sigmas"]) for n in MCSHs["MCSHs"]["orders"]]
        else:
            raise ValueError("GMPOrderNorm: give 'MCSHs' ({'orders', 'sigmas'}) or 'MCSHs_detailed_list'")
        if "atom_gaussians" not in MCSHs:
            raise ValueError("GMPOrderNorm: 'atom_gaussians' ({element: path to .g file}) is required")
        setups = [(n, _positive_sigmas(s, f"GMPOrderNorm order {n}")) for n, s in setups]
        all_sigmas = [s for _, sig in setups for s in sig]
        cutoff = MCSHs["cutoff"] if "cutoff" in MCSHs else default_cutoff(all_sigmas)
        super().__init__(elements, cutoff)
        self.params = MCSHs
        square = bool(MCSHs.get("square", True))
        rs_setup = MCSHs.get("rs_setup", {"setup": "constant", "rs": 1.0})
        features = []
        for order, sigmas in setups:
            comps = [
                (e, harmonics.group_coefficient(order, g))
                for g in range(1, harmonics.n_groups(order) + 1)
                for e in harmonics.group_components(order, g)
            ]
            for sigma in sigmas:
                features.append(
                    FeatureSpec(sigma, comps, SUM_SQUARES if square else SQRT_SUM_SQUARES, 0.0 if square else 1e-2)
                )
        self._build(
            features,
            solid=MCSHs.get("solid_harmonics", True),
            probe_amplitude=lambda s: (1.0 / (s * np.sqrt(2.0 * np.pi))) ** 3,
            inv_rs=lambda s: rs_inverse(rs_setup, s),
            atom_gaussians=MCSHs["atom_gaussians"],
        )
