"""Gaussian (Behler–Parrinello) atom-centred symmetry functions G2, G4, G5.

J. Behler and M. Parrinello, Phys. Rev. Lett. 98, 146401 (2007); J. Behler,
J. Chem. Phys. 134, 074106 (2011). Parameters, feature order and conventions follow
AMPTorch's ``amptorch/descriptor/Gaussian/__init__.py``, ``descriptor_set.py``,
``calculate_sf.cpp`` and ``symmetry_functions.cpp``.
"""

from __future__ import annotations

import numpy as np
from ase.data import atomic_numbers

from ..frames import PackedFrames, element_numbers
from ..kernels.formulas import COSINE, POLYNOMIAL
from ..kernels.gaussian import gaussian_kernel
from ..kernels.tables import GaussianTables
from ..neighbors import NeighborPairs, neighbor_pairs
from .base import Descriptor, check_keys

_FAMILY_KEYS = {"G2": {"etas", "rs_s"}, "G4": {"etas", "zetas", "gammas"}, "G5": {"etas", "zetas", "gammas"}}


def _numbers(params: dict, key: str, where: str, minimum=None) -> list[float]:
    """The list ``params[key]`` as floats: present, non-empty, finite, >= ``minimum``."""
    if key not in params:
        raise ValueError(f"{where}: missing {key!r}")
    values = [float(v) for v in np.atleast_1d(params[key])]
    if not values or not all(np.isfinite(v) for v in values):
        raise ValueError(f"{where}: {key!r} must be a non-empty list of finite numbers, got {values}")
    if minimum is not None and min(values) < minimum:
        raise ValueError(f"{where}: {key!r} must be >= {minimum}, got {values}")
    return values


def _parse_cutoff_params(cutoff_params: dict | None) -> tuple[int, float]:
    """(kind, gamma) of AMPTorch's ``cutoff_params`` (the cutoff_func name is case-insensitive)."""
    params = {"cutoff_func": "cosine"} if cutoff_params is None else cutoff_params
    check_keys(params, {"cutoff_func", "gamma"}, "Gaussian cutoff_params")
    name = str(params.get("cutoff_func", "cosine")).lower()
    if name == "cosine":
        return COSINE, 0.0
    if name == "polynomial":
        gamma = params.get("gamma")
        if gamma is None or not (np.isfinite(float(gamma)) and float(gamma) > 0):
            raise ValueError(f"Gaussian cutoff_params: the polynomial cutoff needs 'gamma' > 0, got {gamma!r}")
        return POLYNOMIAL, float(gamma)
    raise ValueError(
        f"Gaussian cutoff_params: unknown cutoff_func {params['cutoff_func']!r}; use 'Cosine' or 'Polynomial'"
    )


def element_setup(params: dict, numbers, where: str) -> np.ndarray:
    """AMPTorch's ``descriptor_setup`` table of one centre element: one row per feature,
    ``(type, Z_j, Z_k, cutoff, eta, param2, param3)``, in feature order.

    Rows are G2 ``(2, Z_j, 0, R_c, eta / R_c^2, R_s, 0)`` for every neighbour element,
    G4 ``(4, Z_a, Z_b, R_c, eta / R_c^2, zeta, lambda)`` and G5 ``(5, Z_a, Z_b, R_c, eta,
    zeta, lambda)`` (G5's eta is not scaled) for element pairs a <= b in ``elements``
    order; each family is deduplicated and sorted as tuples. ``numbers`` are the
    atomic numbers of the descriptor's elements, in order.
    """
    check_keys(params, {"G2", "G4", "G5", "cutoff"}, where)
    if "cutoff" not in params:
        raise ValueError(f"{where}: missing 'cutoff' (Å)")
    cutoff = float(params["cutoff"])
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"{where}: 'cutoff' must be a positive number of Å, got {params['cutoff']!r}")
    if not any(family in params for family in _FAMILY_KEYS):
        raise ValueError(f"{where}: no symmetry functions; give at least one of 'G2', 'G4', 'G5'")
    z = [int(n) for n in numbers]
    element_pairs = [(z[a], z[b]) for a in range(len(z)) for b in range(a, len(z))]
    rows = []
    for family, keys in _FAMILY_KEYS.items():
        if family not in params:
            continue
        sub = params[family]
        check_keys(sub, keys, f"{where}[{family!r}]")
        etas = _numbers(sub, "etas", f"{where}[{family!r}]", minimum=0.0)
        scaled = [eta / cutoff**2 for eta in etas] if family != "G5" else etas
        if family == "G2":
            rs_s = _numbers(sub, "rs_s", f"{where}['G2']")
            found = {(2, zj, 0, cutoff, eta, rs, 0.0) for eta in scaled for rs in rs_s for zj in z}
        else:
            zetas = _numbers(sub, "zetas", f"{where}[{family!r}]", minimum=1.0)
            lambdas = _numbers(sub, "gammas", f"{where}[{family!r}]")
            kind = int(family[1])
            found = {
                (kind, za, zb, cutoff, eta, zeta, lam)
                for eta in scaled for zeta in zetas for lam in lambdas for za, zb in element_pairs
            }
        rows += sorted(found)
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

    Raises ``ValueError`` (naming the key) for unknown keys, a missing parameter set,
    negative eta, zeta < 1, a non-positive cutoff or an unknown cutoff function.

    Attributes
    ----------
    descriptor_setup : dict
        ``{element: (n_features_element, 7) array}``, AMPTorch's table of the same name.
    tables : :class:`~fastfp.kernels.tables.GaussianTables`
        The same as the kernels read them (groups, columns, cutoffs).
    """

    descriptor_type = "Gaussian"

    def __init__(self, Gs: dict, elements, cutoff_params: dict | None = None):
        if not isinstance(Gs, dict):
            raise TypeError(f"Gaussian: Gs must be a dict of parameters, got {type(Gs).__name__}")
        elements = list(elements)
        numbers = element_numbers(elements)
        # keys naming other chemical elements are ignored, as in AMPTorch
        others = {key for key in Gs if key in atomic_numbers and key not in elements}
        check_keys(Gs, {"default", *elements} | others, "Gaussian Gs")
        setup = {}
        for el in elements:
            key = el if el in Gs else "default"
            if key not in Gs:
                raise ValueError(f"Gaussian Gs: no parameters for element {el!r} and no 'default'")
            setup[el] = element_setup(Gs[key], numbers, f"Gaussian Gs[{key!r}]")
        super().__init__(elements, max((rows[0, 3] for rows in setup.values()), default=0.0))
        self.params = Gs
        self.cutoff_params = cutoff_params
        self.descriptor_setup = setup
        self.tables = self._tables(*_parse_cutoff_params(cutoff_params))

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

    def _neighbor_pairs(self, packed: PackedFrames, *, amptorch_binning: bool = False) -> NeighborPairs:
        """Pairs within the (largest) cutoff."""
        return neighbor_pairs(packed, self.cutoff, amptorch_binning=amptorch_binning)

    def _compute(self, packed: PackedFrames, pairs: NeighborPairs, derivatives: bool):
        return self._run_kernel(gaussian_kernel, pairs, derivatives, self.species_of[packed.numbers],
                                self.species_of[packed.numbers[pairs.j]], pairs.vectors)
