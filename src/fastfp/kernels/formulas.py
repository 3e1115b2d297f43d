"""Per-pair and per-triplet formulas shared by the CPU kernels and the GPU kernels.

Each function here is the one source of its formula. ``register_jitable`` makes a plain
Python function callable from numba code of any target: the CPU kernels
(:mod:`~fastfp.kernels.gmp`, :mod:`~fastfp.kernels.gaussian`, ``numba.njit``) and the GPU
kernels (:mod:`fastfp.gpu`, ``numba.cuda.jit``) compile it into themselves, and numba's
CUDA simulator calls it as Python. So the functions use ``math`` rather than NumPy on
scalars, and return tuples rather than filling arrays.

They are generic in the floating type: given float32 arguments they compute in float32
(the GPU's ``result_dtype="float32"``), given float64 in float64. numba types a float
literal as float64 and an integer times a float32 as float64, so a literal is written
``like(x, 0.5)`` (0.5 in the type of ``x``), which compiles to the same code as ``0.5``
in float64.

The GMP formulas follow :mod:`~fastfp.kernels.gmp` (AMPTorch ``GMPOrderNorm/helper.cpp``),
the Gaussian ones :mod:`~fastfp.kernels.gaussian` (AMPTorch
``Gaussian/symmetry_functions.cpp``); the derivations are in those modules' docstrings.
"""

import math

import numpy as np
from numba.extending import overload, register_jitable

# how a GMP feature combines the overlaps mu_c of its channels
SUM_SQUARES, SQRT_SUM_SQUARES, LINEAR = 0, 1, 2
# Gaussian cutoff functions
COSINE, POLYNOMIAL = 0, 1




def like(x, value):
    """``value`` in the floating type of ``x``: float32 for a float32 ``x``, else float64
    (as Python calls it: numba's CUDA simulator)."""
    return type(x)(value)


@overload(like, strict=False)
def _like(x, value):
    kind = x

    def impl(x, value):
        return kind(value)

    return impl


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
    return like(weight, 2.0) * weight * mu


@register_jitable
def feature_value(mode, total, zero_below):
    """A GMP feature from the sum ``total`` of its :func:`channel_term`: ``(value, d value
    / d total)``. SQRT_SUM_SQUARES takes the square root, set to 0 with derivative 0 where
    it is ``<= zero_below``; the other modes return ``total`` itself."""
    if mode == SQRT_SUM_SQUARES:
        root = math.sqrt(total)
        if root <= zero_below:
            return like(total, 0.0), like(total, 0.0)
        return root, like(root, 0.5) / root
    return total, like(total, 1.0)


@register_jitable
def gmp_radial(c2, pref, n_gauss, n_slots, g0, g1, r2, radial, dradial, derivatives):
    """The radial factors of one pair for every probe s and slot r, from the Gaussians
    ``g0:g1`` of its neighbour's element: ``radial[s * n_slots + r]`` = R_sr(r^2) = sum_g
    pref[s, g, r] exp(c2[s, g] r^2) and, with ``derivatives``, ``dradial[...]`` =
    dR_sr/d(r^2) = the same sum times C2. ``c2`` and ``pref`` are
    :func:`overlap_tables` flattened, (n_probes * n_gauss) and (n_probes * n_gauss *
    n_slots); ``r2`` is |D|^2 in Å^2. One exp per probe and Gaussian: C2 = -alpha beta /
    (alpha + beta) ties the two together, so no exp is shared across probes."""
    n_probe = len(c2) // n_gauss
    zero = like(r2, 0.0)
    for k in range(n_probe * n_slots):
        radial[k] = zero
        dradial[k] = zero
    for s in range(n_probe):
        for g in range(g0, g1):
            c = c2[s * n_gauss + g]
            decay = math.exp(c * r2)
            row = (s * n_gauss + g) * n_slots
            for r in range(n_slots):
                f = pref[row + r] * decay
                radial[s * n_slots + r] += f
                if derivatives:
                    dradial[s * n_slots + r] += f * c


@register_jitable
def gmp_pieces(x, y, z, piece_ptr, term_coef, term_exp, hx, hy, hz, value, grad, gradient):
    """The pieces Q_p(D) of one pair vector D = (x, y, z) (Å) into ``value[p]`` and, with
    ``gradient``, grad Q_p into ``grad[3p:3p + 3]``, term by term: c x^a y^b z^e with
    ``term_exp`` flattened (n_terms * 3); ``hx``, ``hy``, ``hz`` (longer than the largest
    exponent) are scratch for the powers."""
    one = like(x, 1.0)
    zero = like(x, 0.0)
    hx[0] = one
    hy[0] = one
    hz[0] = one
    for a in range(1, len(hx)):
        hx[a] = hx[a - 1] * x
        hy[a] = hy[a - 1] * y
        hz[a] = hz[a - 1] * z
    for p in range(len(piece_ptr) - 1):
        v = zero
        gx = zero
        gy = zero
        gz = zero
        for m in range(piece_ptr[p], piece_ptr[p + 1]):
            c = term_coef[m]
            a = term_exp[3 * m]
            b = term_exp[3 * m + 1]
            e = term_exp[3 * m + 2]
            v += c * hx[a] * hy[b] * hz[e]
            if not gradient:
                continue
            if a > 0:
                gx += c * like(x, a) * hx[a - 1] * hy[b] * hz[e]
            if b > 0:
                gy += c * like(x, b) * hx[a] * hy[b - 1] * hz[e]
            if e > 0:
                gz += c * like(x, e) * hx[a] * hy[b] * hz[e - 1]
        value[p] = v
        if gradient:
            grad[3 * p] = gx
            grad[3 * p + 1] = gy
            grad[3 * p + 2] = gz


@register_jitable
def gmp_channel_overlap(s, k, comp_piece_ptr, piece_slot, n_slots, terms, radial_row, value_row, col):
    """One pair's share of the overlap mu_c of channel (probe ``s``, MCSH component
    ``k``): the sum over the component's pieces p of R_sr Q_p, with R_sr read from
    ``terms[radial_row + s * n_slots + r, col]`` and Q_p from ``terms[value_row + p,
    col]`` (a pair per column: :func:`gmp_radial` and :func:`gmp_pieces` laid out side by
    side)."""
    total = like(terms[radial_row, col], 0.0)
    for p in range(comp_piece_ptr[k], comp_piece_ptr[k + 1]):
        total += terms[radial_row + s * n_slots + piece_slot[p], col] * terms[value_row + p, col]
    return total


@register_jitable
def gmp_feature_fprime(f, x, y, z, weight, weight_at, poly_ptr, poly_slot, poly_term_ptr, poly_term_piece,
                       poly_term_member, feat_probe, n_slots, radial, dradial, value, grad):
    """d feature f / dD of one pair D = (x, y, z), as ``(dx, dy, dz)``: d mu_c/dD = sum_p
    R_sr grad Q_p + 2 (dR_sr/dr^2) Q_p D contracted with the weights d feature / d mu_c
    (``weight[weight_at + m]`` of member m, the feature's slope included), slot by slot
    before the radial factor: the polynomials of the feature (``poly_ptr`` and the rest:
    :class:`~fastfp.kernels.tables.GMPTables`' ``poly_*``, one per slot, each a list of
    (piece, member)). ``radial``, ``dradial``: :func:`gmp_radial`; ``value``, ``grad``:
    :func:`gmp_pieces` with the gradient."""
    zero = like(x, 0.0)
    two = like(x, 2.0)
    s = feat_probe[f]
    dx = zero
    dy = zero
    dz = zero
    for k in range(poly_ptr[f], poly_ptr[f + 1]):
        ax = zero
        ay = zero
        az = zero
        aq = zero
        for t in range(poly_term_ptr[k], poly_term_ptr[k + 1]):
            p = poly_term_piece[t]
            w = weight[weight_at + poly_term_member[t]]
            ax += w * grad[3 * p]
            ay += w * grad[3 * p + 1]
            az += w * grad[3 * p + 2]
            aq += w * value[p]
        rs = s * n_slots + poly_slot[k]
        two_dr_q = two * dradial[rs] * aq
        dx += radial[rs] * ax + two_dr_q * x
        dy += radial[rs] * ay + two_dr_q * y
        dz += radial[rs] * az + two_dr_q * z
    return dx, dy, dz


@register_jitable
def gmp_pair_fprime(x, y, z, weight, weight_at, poly_ptr, poly_slot, poly_term_ptr, poly_term_piece,
                    poly_term_member, feat_probe, n_slots, radial, dradial, value, grad, out, out_row, col):
    """d feature / dD of one pair for every feature f (:func:`gmp_feature_fprime`, the
    same arguments), into ``out[out_row + 3 f + xyz, col]``."""
    for f in range(len(poly_ptr) - 1):
        dx, dy, dz = gmp_feature_fprime(f, x, y, z, weight, weight_at, poly_ptr, poly_slot, poly_term_ptr,
                                        poly_term_piece, poly_term_member, feat_probe, n_slots, radial, dradial,
                                        value, grad)
        out[out_row + 3 * f, col] = dx
        out[out_row + 3 * f + 1, col] = dy
        out[out_row + 3 * f + 2, col] = dz


# --------------------------------------------------------------------------- Gaussian


@register_jitable
def cutoff_function(r, cutoff, kind, gamma):
    """f_c(r) and df_c/dr (zero from ``cutoff`` on): cosine 0.5 (1 + cos(pi r / R_c)), or
    polynomial 1 + gamma x^(gamma + 1) - (gamma + 1) x^gamma with x = r / R_c."""
    x = r / cutoff
    one = like(x, 1.0)
    if x >= one:
        return like(x, 0.0), like(x, 0.0)
    if kind == COSINE:
        pi = like(x, math.pi)
        return (like(x, 0.5) * (one + math.cos(pi * x)),
                like(x, -0.5 * math.pi) * math.sin(pi * x) / cutoff)
    xg = x**gamma
    return (
        one + gamma * xg * x - (gamma + one) * xg,
        gamma * (gamma + one) / cutoff * (xg - xg / x),
    )


@register_jitable
def g2_term(eta, rs, r, fc, dfc):
    """One G2 term exp(-eta (r - R_s)^2) f_c(r) and its derivative divided by r (the
    factor of the pair vector in d/dD), from f_c and df_c/dr at r."""
    d = r - rs
    ex = math.exp(-eta * d * d)
    return ex * fc, ex * (like(eta, -2.0) * eta * d * fc + dfc) / r


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
    if rjk < like(rjk, 1e-4) or (only_g4 and rjk >= cutoff):
        return like(rjk, -1.0), rjk2, like(rjk, 0.0), like(rjk, 0.0), like(rjk, 0.0)
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
    m2 = like(eta, -2.0)
    hj = m2 * eta * fcj + dfc_r_j
    hk = m2 * eta * fck + dfc_r_k
    if g4:
        ex *= math.exp(-eta * rjk2)
        return (
            ex * fcj * fck * fcjk,
            ex * hj * fck * fcjk,
            ex * hk * fcj * fcjk,
            ex * (m2 * eta * fcjk + dfcjk / rjk) * fcj * fck,
        )
    return ex * fcj * fck, ex * hj * fck, ex * hk * fcj, like(ex, 0.0)


@register_jitable
def abs_power(base, exponent, int_exponent):
    """|base|^exponent, by multiplication when the exponent is a small integer (>= 0)."""
    if int_exponent < 0:
        return abs(base) ** exponent
    out = like(base, 1.0)
    b = abs(base)
    for _ in range(int_exponent):
        out *= b
    return out


@register_jitable
def angular_term(zeta, lam, norm, int_power, cos):
    """A = 2^(1 - zeta) |1 + lambda cos|^(zeta - 1) (1 + lambda cos) of one angular group
    and dA/dcos; ``norm`` = 2^(1 - zeta), ``int_power`` = zeta - 1 if that is a small
    integer, else -1. Returns ``(A, dA/dcos)``."""
    base = like(lam, 1.0) + lam * cos
    pw = norm * abs_power(base, zeta - like(zeta, 1.0), int_power)
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
