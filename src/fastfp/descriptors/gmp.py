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
from ..kernels.formulas import LINEAR, SQRT_SUM_SQUARES, SUM_SQUARES
from ..kernels.gmp import gmp_kernel
from ..kernels.tables import GMPTables
from ..neighbors import NeighborPairs, neighbor_pairs
from ..pseudodensity import read_atom_gaussians
from .base import Descriptor
from .params import GMPOrderNormParams, GMPParams, check


@dataclass
class FeatureSpec:
    """One GMP feature: components (exponents, weight) of one probe, and a mode."""

    sigma: float
    components: list = field(default_factory=list)
    mode: int = SUM_SQUARES
    zero_below: float = 0.0


class _GMPFamily(Descriptor):
    """Shared machinery: the :class:`~fastfp.kernels.tables.GMPTables` of
    :func:`~fastfp.kernels.gmp.gmp_kernel` and the call."""

    tables: GMPTables

    def _build(self, features: list[FeatureSpec], solid: bool, probe_amplitude, inv_rs, atom_gaussians):
        """:attr:`tables` from ``features``. ``probe_amplitude(sigma)`` is A of the probe
        A exp(-r^2 / (2 sigma^2)); ``inv_rs(sigma)`` is 1/r_s (surface harmonics only)."""
        self.feature_specs = features
        sigmas = sorted({f.sigma for f in features})
        comps = sorted({e for f in features for e, _ in f.components}, key=lambda e: (sum(e), e))
        comp_index = {e: k for k, e in enumerate(comps)}
        channels = sorted({(sigmas.index(f.sigma), comp_index[e]) for f in features for e, _ in f.components})
        chan_index = {c: n for n, c in enumerate(channels)}

        # pieces (component, slot (j, d), monomials): see fastfp.kernels.gmp; a solid
        # harmonic is harmonic, so it is one piece, j = 0 and d = its order
        pieces = [
            (k, slot, terms)
            for k, e in enumerate(comps)
            for slot, terms in (
                {(0, sum(e)): harmonics.solid_terms(e)} if solid else harmonics.heat_pieces(harmonics.surface_terms(e))
            ).items()
        ]
        slots = sorted({slot for _, slot, _ in pieces})
        chan_probe = np.array([s for s, _ in channels], dtype=np.int64)
        sig = np.array(sigmas, dtype=np.float64)
        gaussians = read_atom_gaussians(atom_gaussians, self.elements)
        table = np.concatenate(gaussians)
        members = [
            (chan_index[(sigmas.index(f.sigma), comp_index[e])], w) for f in features for e, w in f.components
        ]
        self.tables = GMPTables.build(
            piece_ptr=np.concatenate(([0], np.cumsum([len(t) for _, _, t in pieces]))).astype(np.int64),
            term_coef=np.array([c for _, _, t in pieces for c, *_ in t], dtype=np.float64),
            term_exp=np.array([e for _, _, t in pieces for _, *e in t], dtype=np.int64).reshape(-1, 3),
            comp_piece_ptr=np.searchsorted([k for k, _, _ in pieces], np.arange(len(comps) + 1)).astype(np.int64),
            piece_slot=np.array([slots.index(slot) for _, slot, _ in pieces], dtype=np.int64),
            slot_j=np.array([j for j, _ in slots], dtype=np.int64),
            slot_d=np.array([d for _, d in slots], dtype=np.int64),
            # surface harmonics' terms of degree d + 2j carry (1/r_s)^(d + 2j)
            slot_rs_power=np.array([0 if solid else d + 2 * j for j, d in slots], dtype=np.int64),
            chan_ptr=np.searchsorted(chan_probe, np.arange(len(sigmas) + 1)).astype(np.int64),
            chan_comp=np.array([k for _, k in channels], dtype=np.int64),
            probe_a=np.array([probe_amplitude(s) for s in sigmas], dtype=np.float64),
            probe_alpha=1.0 / (2.0 * sig * sig),
            probe_inv_rs=np.array([inv_rs(s) for s in sigmas], dtype=np.float64),
            gauss_ptr=np.concatenate(([0], np.cumsum([len(g) for g in gaussians]))).astype(np.int64),
            gauss_b=np.ascontiguousarray(table[:, 0]),
            gauss_beta=np.ascontiguousarray(table[:, 1]),
            feat_ptr=np.concatenate(([0], np.cumsum([len(f.components) for f in features]))).astype(np.int64),
            feat_chan=np.array([c for c, _ in members], dtype=np.int64),
            feat_weight=np.array([w for _, w in members], dtype=np.float64),
            feat_mode=np.array([f.mode for f in features], dtype=np.int64),
            feat_zero=np.array([f.zero_below for f in features], dtype=np.float64),
        )

    @property
    def n_features(self) -> int:
        return len(self.feature_specs)

    def neighbor_pairs(self, packed: PackedFrames, *, amptorch_binning: bool = False) -> NeighborPairs:
        """Pairs within the cutoff, each atom's pair with itself first among its own."""
        return neighbor_pairs(packed, self.cutoff, self_pairs=True, amptorch_binning=amptorch_binning)

    def _kernel_inputs(self, packed: PackedFrames, pairs: NeighborPairs) -> tuple:
        return gmp_kernel, (self.species_of[packed.numbers[pairs.j]], pairs.vectors)


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

    Raises :class:`~fastfp.errors.ConfigError` naming the key for unknown keys or bad
    values (the types: :class:`~fastfp.descriptors.params.GMPOrderNormParams`), and
    :class:`~fastfp.errors.PseudodensityError` for missing or malformed ``.g`` files.
    ``tables`` (:class:`~fastfp.kernels.tables.GMPTables`) holds what the kernels read.
    """

    descriptor_type = "GMPOrderNorm"

    def __init__(self, MCSHs: dict, elements):
        params = check(GMPOrderNormParams, MCSHs, "GMPOrderNorm")
        setups = params.setups()
        all_sigmas = [s for _, sig in setups for s in sig]
        super().__init__(elements, params.cutoff if params.cutoff is not None else default_cutoff(all_sigmas))
        self.params = MCSHs
        self.setups = setups  # [(order, [sigma, ...]), ...] in feature order
        #: 1/r_s of the surface harmonics (:class:`~fastfp.descriptors.params.RsConstant` or ``RsScale``)
        self.rs_setup = params.rs_setup
        square = params.square
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
            solid=params.solid_harmonics,
            probe_amplitude=lambda s: (1.0 / (s * np.sqrt(2.0 * np.pi))) ** 3,
            inv_rs=self.rs_setup.inverse,
            atom_gaussians=params.atom_gaussians,
        )


def gmp_group_kind(order: int, group: int) -> int:
    """AMPTorch's ``get_mcsh_type`` (``GMP/gmp.cpp``) of a group: 1 for a group of one
    component (its overlap mu is used linearly, sign kept), 2 for three, 3 for six.

    ``GMP/gmp.cpp`` numbers groups exactly as :mod:`fastfp.harmonics` does (checked for
    orders 0-9: the active code and the commented-out orders 6-9 of ``get_mcsh_type``
    agree on every component count, and each ``calc_MCSH_n_g`` of orders 0-5 is the
    surface harmonic of partition ``harmonics.group_partition(n, g)``), so no renumbering
    is needed. One-component groups are (0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 3, 3).
    """
    n = len(harmonics.group_components(order, group))
    return {1: 1, 3: 2, 6: 3}[n]


class GMP(_GMPFamily):
    """GMP features per MCSH group, not normalised over orders (AMPTorch ``fp_scheme: "gmp"``).

    For each (order n, group g, probe width sigma), with mu_k the overlap of the surface
    harmonic component k of group g (probe A exp(-r^2/(2 sigma^2)) times T_k / r_s^n,
    A = 1/(sigma sqrt(2 pi)), not cubed) with all neighbours' pseudodensities (the atom's
    own included), as in AMPTorch's ``GMP/calculate_gmp.cpp``:

    ===================================  =====================  ====================
    group                                ``square: False``      ``square: True``
    ===================================  =====================  ====================
    one component (000, 111, 222, 333)   mu (may be negative)   mu^2
    three or six components              sqrt(sum_k mu_k^2),    sum_k mu_k^2
                                         0 (zero derivative)
                                         where <= 1e-8
    ===================================  =====================  ====================

    Features are ordered as AMPTorch's ``descriptor_setup``: for ``"MCSHs"`` by order
    (0, 1, 2, ...), then the listed groups, then the listed sigmas; for
    ``"MCSHs_detailed_list"`` by entry, then sigma. The features' unit weight is
    AMPTorch's (``calculate_gmp.cpp`` ignores ``params_d[m][1]`` and uses 1.0).

    Derivatives are exact. Two AMPTorch deviations are deliberately not reproduced: with
    ``square: True`` its one-component derivative is 2 M' dmu_j with M' the running sum
    of mu over the neighbours visited so far, not the total (``calculate_gmp_square``);
    and its no-derivative path (``calculate_gmp_noderiv``) skips the 1e-8 zeroing, so
    sqrt features below 1e-8 there are their tiny value instead of 0.

    Parameters
    ----------
    MCSHs : dict
        AMPTorch's ``fp_params``: ``"MCSHs": {"0": {"groups": [1], "sigmas": [...]},
        "2": {"groups": [1, 2], "sigmas": [...]}, ...}`` or ``"MCSHs_detailed_list":
        [{"order": n, "group": g, "sigmas": [...]}, ...]`` (used if both are given, as in
        AMPTorch); ``"atom_gaussians"`` ``{element: path to .g file}``; ``"cutoff"`` (Å,
        required, as in AMPTorch); optional ``"square"`` (False), ``"rs_setup"``
        (``{"setup": "constant", "rs": 1.0}``), ``"prime_threshold"`` (accepted and
        ignored, as in AMPTorch's GMP) and ``"log"`` (left to :mod:`fastfp.amptorch`).
    elements : list of str

    Orders 0-9 are accepted (AMPTorch's compiled GMP implements 0-5 and raises
    ``NotImplementedError`` above). Raises :class:`~fastfp.errors.ConfigError` naming the
    key for unknown keys, orders, groups or bad values (the types:
    :class:`~fastfp.descriptors.params.GMPParams`), and
    :class:`~fastfp.errors.PseudodensityError` for missing or malformed ``.g`` files.
    ``tables`` (:class:`~fastfp.kernels.tables.GMPTables`) holds what the kernels read.
    """

    descriptor_type = "GMP"

    def __init__(self, MCSHs: dict, elements):
        params = check(GMPParams, MCSHs, "GMP")
        super().__init__(elements, params.cutoff)
        self.params = MCSHs
        self.square = params.square
        #: 1/r_s of the surface harmonics (:class:`~fastfp.descriptors.params.RsConstant` or ``RsScale``)
        self.rs_setup = params.rs_setup
        #: [(order, group, [sigma, ...]), ...] in feature order (AMPTorch's descriptor_setup rows)
        self.setups = params.setups()
        features = []
        for order, group, sigmas in self.setups:
            kind = gmp_group_kind(order, group)
            comps = [(e, 1.0) for e in harmonics.group_components(order, group)]
            if self.square:
                mode, zero = SUM_SQUARES, 0.0
            elif kind == 1:
                mode, zero = LINEAR, 0.0
            else:
                mode, zero = SQRT_SUM_SQUARES, 1e-8
            for sigma in sigmas:
                features.append(FeatureSpec(sigma, comps, mode, zero))
        self._build(
            features,
            solid=False,
            probe_amplitude=lambda s: 1.0 / (s * np.sqrt(2.0 * np.pi)),
            inv_rs=self.rs_setup.inverse,
            atom_gaussians=params.atom_gaussians,
        )
