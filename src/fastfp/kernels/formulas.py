"""Per-pair and per-triplet formulas shared by the CPU kernels and the GPU kernels.

Each function here is the one source of its formula. ``register_jitable`` makes a plain
Python function callable from numba code of any target: the CPU kernels
(:mod:`~fastfp.kernels.gmp`, :mod:`~fastfp.kernels.gaussian`, ``numba.njit``) and the GPU
kernels (:mod:`fastfp.gpu`, ``numba.cuda.jit``) compile it into themselves, and numba's
CUDA simulator calls it as Python. So the functions use ``math`` rather than NumPy on
scalars, and return tuples rather than filling arrays.

The GMP formulas follow :mod:`~fastfp.kernels.gmp` (AMPTorch ``GMPOrderNorm/helper.cpp``),
the Gaussian ones :mod:`~fastfp.kernels.gaussian` (AMPTorch
``Gaussian/symmetry_functions.cpp``); the derivations are in those modules' docstrings.
"""

import math

import numpy as np
from numba.extending import register_jitable

# how a GMP feature combines the overlaps mu_c of its channels
SUM_SQUARES, SQRT_SUM_SQUARES, LINEAR = 0, 1, 2
# Gaussian cutoff functions
COSINE, POLYNOMIAL = 0, 1


# --------------------------------------------------------------------------- GMP


@register_jitable
def overlap_tables(probe_a, probe_alpha, probe_inv_rs, gauss_b, gauss_beta, slot_j, slot_d, slot_rs_power):
    """The Gaussian overlap factors of every (probe s, neighbour Gaussian g):
    ``c2[s, g]`` = C2 = -alpha beta / gamma (1/Å^2) and ``pref[s, g, r]`` =
    C1 lambda^d (h/2)^j / j! (1/r_s)^power for slot r = (j, d), with gamma = alpha + beta,
    lambda = beta / gamma, h = 1 / (2 gamma), C1 = A B (pi / gamma)^(3/2).

    Probes: amplitude A ``probe_a``, alpha ``probe_alpha`` (1/Å^2), 1/r_s ``probe_inv_rs``;
    Gaussians B exp(-beta r^2): ``gauss_b``, ``gauss_beta`` (1/Å^2); slots: ``slot_j``,
    ``slot_d``, ``slot_rs_power``. Returns ``(c2, pref)``, (n_probes, n_gaussians) and
    (n_probes, n_gaussians, n_slots) float64.
    """
    n_probe = len(probe_a)
    n_gauss = len(gauss_b)
    n_slots = len(slot_j)
    c2 = np.empty((n_probe, n_gauss))
    pref = np.empty((n_probe, n_gauss, n_slots))
    for s in range(n_probe):
        for g in range(n_gauss):
            alpha = probe_alpha[s]
            beta = gauss_beta[g]
            gamma = alpha + beta
            lam = beta / gamma
            c2[s, g] = -alpha * beta / gamma
            c1 = probe_a[s] * gauss_b[g] * (math.pi / gamma) ** 1.5
            for r in range(n_slots):
                f = c1
                for _ in range(slot_d[r]):
                    f *= lam
                if slot_j[r] > 0:
                    f *= (0.25 / gamma) ** slot_j[r] / math.gamma(slot_j[r] + 1.0)
                if slot_rs_power[r] > 0:
                    f *= probe_inv_rs[s] ** slot_rs_power[r]
                pref[s, g, r] = f
    return c2, pref


@register_jitable
def channel_term(mode, weight, mu):
    """A channel's share of its feature's sum: ``weight * mu`` (LINEAR) or ``weight * mu^2``."""
    if mode == LINEAR:
        return weight * mu
    return weight * mu * mu


@register_jitable
def channel_slope(mode, weight, mu):
    """d :func:`channel_term` / d mu."""
    if mode == LINEAR:
        return weight
    return 2.0 * weight * mu


@register_jitable
def feature_value(mode, total, zero_below):
    """A GMP feature from the sum ``total`` of its :func:`channel_term`: ``(value, d value
    / d total)``. SQRT_SUM_SQUARES takes the square root, set to 0 with derivative 0 where
    it is ``<= zero_below``; the other modes return ``total`` itself."""
    if mode == SQRT_SUM_SQUARES:
        root = math.sqrt(total)
        if root <= zero_below:
            return 0.0, 0.0
        return root, 0.5 / root
    return total, 1.0


# --------------------------------------------------------------------------- Gaussian


@register_jitable
def cutoff_function(r, cutoff, kind, gamma):
    """f_c(r) and df_c/dr (zero from ``cutoff`` on): cosine 0.5 (1 + cos(pi r / R_c)), or
    polynomial 1 + gamma x^(gamma + 1) - (gamma + 1) x^gamma with x = r / R_c."""
    x = r / cutoff
    if x >= 1.0:
        return 0.0, 0.0
    if kind == COSINE:
        return 0.5 * (1.0 + math.cos(math.pi * x)), -0.5 * math.pi * math.sin(math.pi * x) / cutoff
    xg = x**gamma
    return (
        1.0 + gamma * xg * x - (gamma + 1.0) * xg,
        gamma * (gamma + 1.0) / cutoff * (xg - xg / x),
    )


@register_jitable
def g2_term(eta, rs, r, fc, dfc):
    """One G2 term exp(-eta (r - R_s)^2) f_c(r) and its derivative divided by r (the
    factor of the pair vector in d/dD), from f_c and df_c/dr at r."""
    d = r - rs
    ex = math.exp(-eta * d * d)
    return ex * fc, ex * (-2.0 * eta * d * fc + dfc) / r


@register_jitable
def triplet_geometry(vectors, pj, pk, rj, rk, cutoff, only_g4, kind, gamma):
    """The triplet of pairs ``pj``, ``pk`` (rows of ``vectors``, lengths ``rj``, ``rk``):
    ``(r_jk, r_jk^2, cos, f_c(r_jk), df_c/dr(r_jk))`` with cos the angle j-i-k, or r_jk =
    -1 where AMPTorch skips the triplet: coincident neighbours (r_jk < 1e-4) and, with G4
    only (``only_g4``), r_jk beyond the cutoff, where every term is zero."""
    xjk = vectors[pk, 0] - vectors[pj, 0]
    yjk = vectors[pk, 1] - vectors[pj, 1]
    zjk = vectors[pk, 2] - vectors[pj, 2]
    rjk2 = xjk * xjk + yjk * yjk + zjk * zjk
    rjk = math.sqrt(rjk2)
    if rjk < 1e-4 or (only_g4 and rjk >= cutoff):
        return -1.0, rjk2, 0.0, 0.0, 0.0
    fcjk, dfcjk = cutoff_function(rjk, cutoff, kind, gamma)
    cos = (vectors[pj, 0] * vectors[pk, 0] + vectors[pj, 1] * vectors[pk, 1] + vectors[pj, 2] * vectors[pk, 2]) / (
        rj * rk
    )
    return rjk, rjk2, cos, fcjk, dfcjk


@register_jitable
def triplet_radial(g4, eta, ex, fcj, fck, dfc_r_j, dfc_r_k, rjk, rjk2, fcjk, dfcjk):
    """The radial part R of a triplet (j, k) for one radial group, and the coefficients
    of dR/dD_j = rad_j D_j - rad_jk D_jk, dR/dD_k = rad_k D_k + rad_jk D_jk.

    ``ex`` = exp(-eta (r_j^2 + r_k^2)); ``dfc_r_*`` = (df_c/dr) / r of each pair;
    ``fcjk``, ``dfcjk`` = f_c and df_c/dr at r_jk. G4 (``g4``) has exp(-eta r_jk^2)
    f_c(r_jk) as a third factor, G5 not. Returns ``(rad, rad_j, rad_k, rad_jk)``.
    """
    hj = -2.0 * eta * fcj + dfc_r_j
    hk = -2.0 * eta * fck + dfc_r_k
    if g4:
        ex *= math.exp(-eta * rjk2)
        return (
            ex * fcj * fck * fcjk,
            ex * hj * fck * fcjk,
            ex * hk * fcj * fcjk,
            ex * (-2.0 * eta * fcjk + dfcjk / rjk) * fcj * fck,
        )
    return ex * fcj * fck, ex * hj * fck, ex * hk * fcj, 0.0


@register_jitable
def abs_power(base, exponent, int_exponent):
    """|base|^exponent, by multiplication when the exponent is a small integer (>= 0)."""
    if int_exponent < 0:
        return abs(base) ** exponent
    out = 1.0
    b = abs(base)
    for _ in range(int_exponent):
        out *= b
    return out


@register_jitable
def angular_term(zeta, lam, norm, int_power, cos):
    """A = 2^(1 - zeta) |1 + lambda cos|^(zeta - 1) (1 + lambda cos) of one angular group
    and dA/dcos; ``norm`` = 2^(1 - zeta), ``int_power`` = zeta - 1 if that is a small
    integer, else -1. Returns ``(A, dA/dcos)``."""
    base = 1.0 + lam * cos
    pw = norm * abs_power(base, zeta - 1.0, int_power)
    return pw * base, pw * zeta * lam


@register_jitable
def triplet_coefficients(ang, dang, rad, rad_j, rad_k, rad_jk, cos, rj, rk):
    """d(A R)/dD_j = c_j D_j + c_x D_k and d(A R)/dD_k = c_x D_j + c_k D_k for one
    feature of a triplet, from :func:`angular_term` and :func:`triplet_radial`. Returns
    ``(c_j, c_k, c_x)``."""
    dar = dang * rad
    return (
        ang * (rad_j + rad_jk) - dar * cos / (rj * rj),
        ang * (rad_k + rad_jk) - dar * cos / (rk * rk),
        dar / (rj * rk) - ang * rad_jk,
    )
