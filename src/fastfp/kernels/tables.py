"""The tables a descriptor's kernels read: one frozen object per descriptor family.

A descriptor turns its settings into flat arrays once, at construction
(:class:`fastfp.descriptors.gmp.GMPOrderNorm`, :class:`~fastfp.descriptors.gmp.GMP` and
:class:`~fastfp.descriptors.gaussian.Gaussian` build them; ``desc.tables``). The CPU
kernels (:mod:`fastfp.kernels.gmp`, :mod:`fastfp.kernels.gaussian`) and the GPU kernels
(:mod:`fastfp.gpu.gmp`, :mod:`fastfp.gpu.gaussian`) take the same object, whole: a
``NamedTuple`` of arrays and numbers is what numba's CPU and CUDA kernels accept as one
argument, read field by field. :meth:`GMPTables.on` and :meth:`GaussianTables.on` copy
the arrays to another array module (the GPU's).

Pointer arrays (``*_ptr``) follow the CSR convention: the entries of item k are
``ptr[k]:ptr[k+1]`` of the arrays they point into. Indices and counts are int64, values
float64.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .formulas import overlap_tables

#: :func:`~fastfp.kernels.formulas.overlap_tables` compiled, so the factors are the ones
#: compiled code computes
_overlap_tables = numba.njit(cache=True)(overlap_tables)


def _monomials(max_degree: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mono_ptr, mono_exp, mono_grad)`` of :class:`GMPTables` for the monomials up to
    ``max_degree``."""
    exps = [(a, b, d - a - b) for d in range(max_degree + 1) for a in range(d, -1, -1) for b in range(d - a, -1, -1)]
    index = {e: m for m, e in enumerate(exps)}
    grad = [[index[tuple(e[k] - (k == axis) for k in range(3))] if e[axis] else -1 for axis in range(3)]
            for e in exps]
    ptr = [(d * (d + 1) * (d + 2)) // 6 for d in range(max_degree + 2)]
    return (np.array(ptr, dtype=np.int64), np.array(exps, dtype=np.int64).reshape(-1, 3),
            np.array(grad, dtype=np.int64).reshape(-1, 3))


def _on(tables: NamedTuple, xp, real=np.float64):
    """``tables`` with every array copied to the array module ``xp`` (contiguous), floating
    arrays and numbers in ``real`` (the kernels compute in the type of their tables)."""
    real = np.dtype(real).type

    def convert(v):
        if isinstance(v, np.ndarray):
            return xp.asarray(np.ascontiguousarray(v, dtype=real if v.dtype.kind == "f" else v.dtype))
        return real(v) if isinstance(v, float) else v

    return type(tables)(*map(convert, tables))


class GMPTables(NamedTuple):
    """What the GMP kernels read of a GMPOrderNorm or GMP descriptor.

    The mathematics is in :mod:`fastfp.kernels.gmp`: a feature combines the overlaps
    mu_c of *channels* c = (probe s, MCSH component k); the overlap of a component with
    one neighbour Gaussian is a sum over its *pieces* Q_p (polynomials in the pair vector
    D, each in a *slot* (j, d)) times radial factors of (probe, Gaussian, slot).

    Attributes
    ----------
    piece_ptr : (n_pieces + 1,) int64
        The monomial terms of piece p are ``piece_ptr[p]:piece_ptr[p+1]``.
    term_coef : (n_terms,) float64
        Coefficient of each term c x^a y^b z^e (Å^-(a+b+e) times the term's unit).
    term_exp : (n_terms, 3) int64
        Exponents (a, b, e) of each term.
    comp_piece_ptr : (n_components + 1,) int64
        The pieces of MCSH component k are ``comp_piece_ptr[k]:comp_piece_ptr[k+1]``.
    piece_slot : (n_pieces,) int64
        The slot of each piece.
    slot_j, slot_d : (n_slots,) int64
        Slot r is the degree-``slot_d[r]`` part of Laplacian^``slot_j[r]`` of a component.
    slot_rs_power : (n_slots,) int64
        Power of 1/r_s the slot's radial factor carries (0 for solid harmonics).
    chan_ptr : (n_probes + 1,) int64
        The channels of probe s are ``chan_ptr[s]:chan_ptr[s+1]``.
    chan_comp : (n_channels,) int64
        The MCSH component of each channel.
    probe_a : (n_probes,) float64
        Amplitude A of the probe A exp(-alpha r^2), Å^-3 (GMPOrderNorm) or Å^-1 (GMP).
    probe_alpha : (n_probes,) float64
        alpha = 1 / (2 sigma^2) of each probe, 1/Å^2.
    probe_inv_rs : (n_probes,) float64
        1/r_s of each probe, 1/Å (surface harmonics only).
    gauss_ptr : (n_elements + 1,) int64
        The pseudodensity Gaussians of element t (index into the descriptor's
        ``elements``) are ``gauss_ptr[t]:gauss_ptr[t+1]``.
    gauss_b, gauss_beta : (n_gaussians,) float64
        Each Gaussian B exp(-beta r^2): B (electrons/Å^3) and beta (1/Å^2), as in the
        ``.g`` files (:mod:`fastfp.pseudodensity`).
    overlap_c2, overlap_pref : (n_probes, n_gaussians) and (n_probes, n_gaussians, n_slots) float64
        The overlap factors of every (probe, Gaussian, slot):
        :func:`~fastfp.kernels.formulas.overlap_tables` of the arrays above.
    feat_ptr : (n_features + 1,) int64
        The channels of feature f are ``feat_ptr[f]:feat_ptr[f+1]`` of ``feat_chan``.
    feat_chan : (n_members,) int64
        The channels each feature combines; all of one probe.
    feat_weight : (n_members,) float64
        Their weights w_c.
    feat_mode : (n_features,) int64
        How the feature combines them: :data:`~fastfp.kernels.formulas.SUM_SQUARES`,
        ``SQRT_SUM_SQUARES`` or ``LINEAR``.
    feat_zero : (n_features,) float64
        A square-root feature below this is 0, with zero derivative.
    feat_probe : (n_features,) int64
        The probe of each feature.
    probe_feat_ptr, probe_feat : (n_probes + 1,), (n_features,) int64
        The features of probe s are ``probe_feat[probe_feat_ptr[s]:probe_feat_ptr[s+1]]``
        (the GPU kernel's work split: one thread per centre and probe).
    mono_ptr : (max_degree + 2,) int64
        The monomials D_x^a D_y^b D_z^e of the pair vector, all up to the highest degree
        of any piece: those of degree d are ``mono_ptr[d]:mono_ptr[d+1]``.
    mono_exp : (n_monomials, 3) int64
        Exponents (a, b, e) of each monomial (degree by degree, a then b descending).
    mono_grad : (n_monomials, 3) int64
        The monomial of d/dD_x (y, z) of each monomial, over its exponent of x (y, z):
        the monomial with that exponent one lower; -1 where it is 0.
    term_mono : (n_terms,) int64
        The monomial of each term.
    poly_ptr : (n_features + 1,) int64
        The derivative of feature f is a sum over slots r of radial factors times
        polynomials P_fr of the pair vector (see :mod:`fastfp.kernels.gmp`); its
        polynomials are ``poly_ptr[f]:poly_ptr[f+1]``.
    poly_slot : (n_polys,) int64
        The slot r of each polynomial.
    poly_term_ptr : (n_polys + 1,) int64
        The pieces polynomial k sums are ``poly_term_ptr[k]:poly_term_ptr[k+1]`` of the
        next two.
    poly_term_piece, poly_term_member : (n_poly_terms,) int64
        Their piece (in the polynomial's slot) and member (entry of ``feat_chan``, whose
        d feature / d mu_c weighs the piece).
    """

    piece_ptr: np.ndarray
    term_coef: np.ndarray
    term_exp: np.ndarray
    comp_piece_ptr: np.ndarray
    piece_slot: np.ndarray
    slot_j: np.ndarray
    slot_d: np.ndarray
    slot_rs_power: np.ndarray
    chan_ptr: np.ndarray
    chan_comp: np.ndarray
    probe_a: np.ndarray
    probe_alpha: np.ndarray
    probe_inv_rs: np.ndarray
    gauss_ptr: np.ndarray
    gauss_b: np.ndarray
    gauss_beta: np.ndarray
    overlap_c2: np.ndarray
    overlap_pref: np.ndarray
    feat_ptr: np.ndarray
    feat_chan: np.ndarray
    feat_weight: np.ndarray
    feat_mode: np.ndarray
    feat_zero: np.ndarray
    feat_probe: np.ndarray
    probe_feat_ptr: np.ndarray
    probe_feat: np.ndarray
    mono_ptr: np.ndarray
    mono_exp: np.ndarray
    mono_grad: np.ndarray
    term_mono: np.ndarray
    poly_ptr: np.ndarray
    poly_slot: np.ndarray
    poly_term_ptr: np.ndarray
    poly_term_piece: np.ndarray
    poly_term_member: np.ndarray

    @classmethod
    def build(cls, *, piece_ptr, term_coef, term_exp, comp_piece_ptr, piece_slot, slot_j, slot_d, slot_rs_power,
              chan_ptr, chan_comp, probe_a, probe_alpha, probe_inv_rs, gauss_ptr, gauss_b, gauss_beta,
              feat_ptr, feat_chan, feat_weight, feat_mode, feat_zero) -> "GMPTables":
        """The tables from the given arrays (see the class), the derived ones computed:
        overlap factors, each feature's probe, the features by probe, the monomials and
        the polynomials of each feature's derivative.

        Raises ``ValueError`` if a piece's terms are not all of its slot's degree."""
        overlap_c2, overlap_pref = _overlap_tables(probe_a, probe_alpha, probe_inv_rs, gauss_b, gauss_beta,
                                                   slot_j, slot_d, slot_rs_power)
        chan_probe = np.repeat(np.arange(len(chan_ptr) - 1), np.diff(chan_ptr))
        feat_probe = chan_probe[feat_chan[feat_ptr[:-1]]]
        probe_feat = np.argsort(feat_probe, kind="stable")
        probe_feat_ptr = np.searchsorted(feat_probe[probe_feat], np.arange(len(chan_ptr)))
        degree = term_exp.sum(axis=1)
        term_slot = np.repeat(piece_slot, np.diff(piece_ptr))
        if (degree != slot_d[term_slot]).any():
            raise ValueError("every term of a piece must be of its slot's degree")
        mono_ptr, mono_exp, mono_grad = _monomials(int(term_exp.max(initial=0)))
        index = {tuple(e): m for m, e in enumerate(mono_exp.tolist())}
        term_mono = np.array([index[tuple(e)] for e in term_exp.tolist()], dtype=np.int64)
        # per feature, slot by slot: the polynomial of the (piece, member) pairs in the slot
        poly_ptr, poly_slot, poly_term_ptr, terms = [0], [], [0], []
        for f in range(len(feat_ptr) - 1):
            for r in range(len(slot_j)):
                found = [(p, m) for m in range(feat_ptr[f], feat_ptr[f + 1])
                         for p in range(comp_piece_ptr[chan_comp[feat_chan[m]]],
                                        comp_piece_ptr[chan_comp[feat_chan[m]] + 1]) if piece_slot[p] == r]
                if found:
                    poly_slot.append(r)
                    terms += found
                    poly_term_ptr.append(len(terms))
            poly_ptr.append(len(poly_slot))
        piece, member = (np.ascontiguousarray(c) for c in np.array(terms, dtype=np.int64).reshape(-1, 2).T)
        return cls(
            piece_ptr, term_coef, term_exp, comp_piece_ptr, piece_slot, slot_j, slot_d, slot_rs_power,
            chan_ptr, chan_comp, probe_a, probe_alpha, probe_inv_rs, gauss_ptr, gauss_b, gauss_beta,
            overlap_c2, overlap_pref, feat_ptr, feat_chan, feat_weight, feat_mode, feat_zero,
            feat_probe, probe_feat_ptr, probe_feat, mono_ptr, mono_exp, mono_grad, term_mono,
            *(np.array(a, dtype=np.int64) for a in (poly_ptr, poly_slot, poly_term_ptr)), piece, member,
        )

    @property
    def n_features(self) -> int:
        return len(self.feat_ptr) - 1

    @property
    def n_probes(self) -> int:
        return len(self.chan_ptr) - 1

    @property
    def max_channels_per_probe(self) -> int:
        return int(np.diff(self.chan_ptr).max())

    @property
    def max_features_per_probe(self) -> int:
        return int(np.diff(self.probe_feat_ptr).max())

    @property
    def n_slots(self) -> int:
        return len(self.slot_j)

    @property
    def max_degree(self) -> int:
        """The largest exponent of x, y or z in any term."""
        return int(self.term_exp.max())

    def on(self, xp, real=np.float64) -> "GMPTables":
        """These tables with their arrays in the array module ``xp`` (e.g. CuPy), floating
        values in ``real`` (float64 or float32)."""
        return _on(self, xp, real)


class GaussianTables(NamedTuple):
    """What the Gaussian symmetry-function kernels read of a
    :class:`~fastfp.descriptors.gaussian.Gaussian` descriptor.

    Centre elements e and neighbour elements t, a <= b are indices into the descriptor's
    ``elements`` (n_sp of them); columns are fingerprint columns of the centre's element.
    A *radial group* (G4 or G5, eta) and an *angular group* (zeta, lambda) are the parts of
    angular features computed once per triplet (see :mod:`fastfp.kernels.gaussian`).

    Attributes
    ----------
    cutoffs : (n_sp,) float64
        Cutoff R_c of each centre element, Å.
    cutoff_kind : int
        :data:`~fastfp.kernels.formulas.COSINE` or ``POLYNOMIAL``.
    cutoff_gamma : float
        The polynomial cutoff's gamma (0 for the cosine).
    g2_ptr : (n_sp * n_sp + 1,) int64
        The G2 features of centre e and neighbour t are
        ``g2_ptr[e * n_sp + t]:g2_ptr[e * n_sp + t + 1]`` of the next three.
    g2_col : (n_g2,) int64
        Their columns.
    g2_eta : (n_g2,) float64
        eta / R_c^2, 1/Å^2.
    g2_rs : (n_g2,) float64
        R_s, Å.
    rad_ptr : (n_sp + 1,) int64
        The radial groups of centre e are ``rad_ptr[e]:rad_ptr[e+1]``.
    rad_eta : (n_rad,) float64
        Their eta, 1/Å^2 (G4's scaled by 1/R_c^2, G5's as given).
    rad_g4 : (n_rad,) bool
        G4 (True) or G5.
    ang_ptr : (n_sp + 1,) int64
        The angular groups of centre e are ``ang_ptr[e]:ang_ptr[e+1]``.
    ang_zeta, ang_lambda : (n_ang,) float64
        zeta and lambda (gamma in AMPTorch's parameters).
    ang_norm : (n_ang,) float64
        2^(1 - zeta).
    ang_int_power : (n_ang,) int64
        zeta - 1 where zeta is an integer up to 64 (powers by multiplication), else -1.
    tri_ptr : (n_sp**3 + 1,) int64
        The angular features of centre e with neighbours of elements a <= b are
        ``tri_ptr[(e * n_sp + a) * n_sp + b]`` onwards, to the next entry, of the next three.
    tri_col, tri_rad, tri_ang : (n_tri,) int64
        Their columns, radial groups and angular groups.
    """

    cutoffs: np.ndarray
    cutoff_kind: int
    cutoff_gamma: float
    g2_ptr: np.ndarray
    g2_col: np.ndarray
    g2_eta: np.ndarray
    g2_rs: np.ndarray
    rad_ptr: np.ndarray
    rad_eta: np.ndarray
    rad_g4: np.ndarray
    ang_ptr: np.ndarray
    ang_zeta: np.ndarray
    ang_lambda: np.ndarray
    ang_norm: np.ndarray
    ang_int_power: np.ndarray
    tri_ptr: np.ndarray
    tri_col: np.ndarray
    tri_rad: np.ndarray
    tri_ang: np.ndarray

    @property
    def max_radial_groups(self) -> int:
        """The most radial groups of any centre element (at least 1)."""
        return max(1, int(np.diff(self.rad_ptr).max()))

    @property
    def max_angular_groups(self) -> int:
        """The most angular groups of any centre element (at least 1)."""
        return max(1, int(np.diff(self.ang_ptr).max()))

    def on(self, xp, real=np.float64) -> "GaussianTables":
        """These tables with their arrays in the array module ``xp`` (e.g. CuPy), floating
        values in ``real`` (float64 or float32)."""
        return _on(self, xp, real)
