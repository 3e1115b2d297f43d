"""Gaussian (Behler–Parrinello) atom-centred symmetry functions G2, G4, G5.

J. Behler and M. Parrinello, Phys. Rev. Lett. 98, 146401 (2007); J. Behler,
J. Chem. Phys. 134, 074106 (2011). Parameters, feature order and conventions follow
AMPTorch's ``amptorch/descriptor/Gaussian/__init__.py``, ``descriptor_set.py``,
``calculate_sf.cpp`` and ``symmetry_functions.cpp``.
"""

from __future__ import annotations

import numpy as np

from ..frames import PackedFrames, element_numbers
from ..kernels.formulas import COSINE, POLYNOMIAL
from ..kernels.gaussian import gaussian_kernel
from ..kernels.tables import GaussianTables
from ..neighbors import NeighborPairs, neighbor_pairs
from .base import Descriptor
from .params import CutoffParams, ElementGs, GaussianParams, check


def element_setup(params: ElementGs, numbers) -> np.ndarray:
    """AMPTorch's ``descriptor_setup`` table of one centre element: one row per feature,
    ``(type, Z_j, Z_k, cutoff, eta, param2, param3)``, in feature order.

    Rows are G2 ``(2, Z_j, 0, R_c, eta / R_c^2, R_s, 0)`` for every neighbour element,
    G4 ``(4, Z_a, Z_b, R_c, eta / R_c^2, zeta, lambda)`` and G5 ``(5, Z_a, Z_b, R_c, eta,
    zeta, lambda)`` (G5's eta is not scaled) for element pairs a <= b in ``elements``
    order; each family is deduplicated and sorted as tuples. ``params`` are the element's
    checked parameters; ``numbers`` the atomic numbers of the descriptor's elements, in order.
    """
    cutoff = params.cutoff
    z = [int(n) for n in numbers]
    element_pairs = [(z[a], z[b]) for a in range(len(z)) for b in range(a, len(z))]
    rows = []
    if params.G2 is not None:
        rows += sorted({(2, zj, 0, cutoff, eta / cutoff**2, rs, 0.0)
                        for eta in params.G2.etas for rs in params.G2.rs_s for zj in z})
    for kind, family in ((4, params.G4), (5, params.G5)):
        if family is not None:
            scaled = [eta / cutoff**2 for eta in family.etas] if kind == 4 else family.etas
            rows += sorted({(kind, za, zb, cutoff, eta, zeta, lam)
                            for eta in scaled for zeta in family.zetas for lam in family.gammas
                            for za, zb in element_pairs})
    return np.array(rows, dtype=np.float64)


class Gaussian(Descriptor):
    """Behler–Parrinello symmetry functions, as AMPTorch's ``fp_scheme: "gaussian"``.

    With pair vectors D_j (Å) from the centre to its neighbours within R_c, cos the
    angle j-i-k, and ``eta``, ``rs_s`` (R_s), ``zetas``, ``gammas`` (lambda) as given:

        G2 = sum_j exp(-eta (r_ij - R_s)^2 / R_c^2) f_c(r_ij)            (per element of j)
        G4 = 2^(1-zeta) sum_{j<k} (1 + lambda cos)^zeta
             exp(-eta (r_ij^2 + r_ik^2 + r_jk^2) / R_c^2) f_c(r_ij) f_c(r_ik) f_c(r_jk)
        G5 = 2^(1-zeta) sum_{j<k} (1 + lambda cos)^zeta
             exp(-eta (r_ij^2 + r_ik^2)) f_c(r_ij) f_c(r_ik)        (eta in 1/Å^2, unscaled)

    G4 and G5 are per unordered pair of neighbour elements; (1 + lambda cos)^zeta means
    |1 + lambda cos|^(zeta-1) (1 + lambda cos). f_c is 0.5 (1 + cos(pi r / R_c)) (cosine)
    or 1 + g x^(g+1) - (g+1) x^g, x = r / R_c (polynomial, g = ``gamma``), zero beyond R_c.
    Periodic images (of the centre too) are neighbours. Feature order per centre element
    is AMPTorch's (:func:`element_setup`); elements with fewer features are zero-padded.

    Parameters
    ----------
    Gs : dict
        AMPTorch's ``fp_params``: ``{element or "default": {"G2": {"etas", "rs_s"},
        "G4": {"etas", "zetas", "gammas"}, "G5": {"etas", "zetas", "gammas"},
        "cutoff": R_c}}``; an element without its own entry uses ``"default"``.
        Entries for other chemical elements are ignored, as in AMPTorch.
    elements : list of str
    cutoff_params : dict, optional
        ``{"cutoff_func": "Cosine"}`` (default) or ``{"cutoff_func": "Polynomial", "gamma": g}``.

    Raises :class:`~fastfp.errors.ConfigError` naming the key for unknown keys, a missing
    parameter set, a value of the wrong type, negative eta, zeta < 1, a non-positive
    cutoff or an unknown cutoff function (the types:
    :class:`~fastfp.descriptors.params.GaussianParams`, ``CutoffParams``).

    Attributes
    ----------
    descriptor_setup : dict
        ``{element: (n_features_element, 7) array}``, AMPTorch's table of the same name.
    tables : :class:`~fastfp.kernels.tables.GaussianTables`
        The same as the kernels read them (groups, columns, cutoffs).
    """

    descriptor_type = "Gaussian"

    def __init__(self, Gs: dict, elements, cutoff_params: dict | None = None):
        elements = list(elements)
        numbers = element_numbers(elements)
        params = check(GaussianParams, Gs, "Gaussian Gs", context={"elements": elements})
        cutoff = check(CutoffParams, {} if cutoff_params is None else cutoff_params, "Gaussian cutoff_params")
        setup = {el: element_setup(params.of(el), numbers) for el in elements}
        super().__init__(elements, max(rows[0, 3] for rows in setup.values()))
        self.params = Gs
        self.cutoff_params = cutoff_params
        self.descriptor_setup = setup
        self.tables = self._tables(
            *((COSINE, 0.0) if cutoff.cutoff_func == "cosine" else (POLYNOMIAL, cutoff.gamma)))

    def _tables(self, cutoff_kind: int, cutoff_gamma: float) -> GaussianTables:
        """The :class:`~fastfp.kernels.tables.GaussianTables` of
        :func:`~fastfp.kernels.gaussian.gaussian_kernel`."""
        n_sp = len(self.elements)
        g2 = [[] for _ in range(n_sp * n_sp)]
        tri = [[] for _ in range(n_sp**3)]
        rad, rad_ptr, ang, ang_ptr = [], [0], [], [0]
        for e, el in enumerate(self.elements):
            rad_index, ang_index = {}, {}
            for col, (kind, zj, zk, _, eta, p2, p3) in enumerate(self.descriptor_setup[el]):
                sj = self.species_of[int(zj)]
                if kind == 2:
                    g2[e * n_sp + sj].append((col, eta, p2))
                    continue
                g = rad_index.setdefault((kind, eta), len(rad) + len(rad_index))
                h = ang_index.setdefault((p2, p3), len(ang) + len(ang_index))
                a, b = sorted((sj, self.species_of[int(zk)]))
                tri[(e * n_sp + a) * n_sp + b].append((col, g, h))
            rad += list(rad_index)
            ang += list(ang_index)
            rad_ptr.append(len(rad))
            ang_ptr.append(len(ang))

        def ptr_of(lists):
            return np.concatenate(([0], np.cumsum([len(x) for x in lists]))).astype(np.int64)

        def column(lists, k, dtype):
            return np.array([t[k] for x in lists for t in x], dtype=dtype)

        ang_zeta = np.array([zeta for zeta, _ in ang], dtype=np.float64)
        small_int = (ang_zeta == np.round(ang_zeta)) & (ang_zeta <= 64)
        return GaussianTables(
            cutoffs=np.array([self.descriptor_setup[el][0, 3] for el in self.elements]),
            cutoff_kind=cutoff_kind,
            cutoff_gamma=cutoff_gamma,
            g2_ptr=ptr_of(g2),
            g2_col=column(g2, 0, np.int64),
            g2_eta=column(g2, 1, np.float64),
            g2_rs=column(g2, 2, np.float64),
            rad_ptr=np.array(rad_ptr, dtype=np.int64),
            rad_eta=np.array([eta for _, eta in rad], dtype=np.float64),
            rad_g4=np.array([kind == 4 for kind, _ in rad], dtype=np.bool_),
            ang_ptr=np.array(ang_ptr, dtype=np.int64),
            ang_zeta=ang_zeta,
            ang_lambda=np.array([lam for _, lam in ang], dtype=np.float64),
            ang_norm=2.0 ** (1.0 - ang_zeta),
            ang_int_power=np.where(small_int, ang_zeta - 1, -1).astype(np.int64),
            tri_ptr=ptr_of(tri),
            tri_col=column(tri, 0, np.int64),
            tri_rad=column(tri, 1, np.int64),
            tri_ang=column(tri, 2, np.int64),
        )

    def features_per_element(self) -> dict[str, int]:
        return {el: len(rows) for el, rows in self.descriptor_setup.items()}

    @property
    def n_features(self) -> int:
        return max(self.features_per_element().values())

    def neighbor_pairs(self, packed: PackedFrames, *, amptorch_binning: bool = False) -> NeighborPairs:
        """Pairs within the (largest) cutoff."""
        return neighbor_pairs(packed, self.cutoff, amptorch_binning=amptorch_binning)

    def _kernel_inputs(self, packed: PackedFrames, pairs: NeighborPairs) -> tuple:
        return gaussian_kernel, (self.species_of[packed.numbers], self.species_of[packed.numbers[pairs.j]],
                                 pairs.vectors)
