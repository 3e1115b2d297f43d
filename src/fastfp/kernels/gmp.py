"""GMP kernel: overlap of Gaussian-probed MCSH with neighbours' Gaussian pseudodensities.

For a probe A exp(-alpha r^2) times a harmonic polynomial T, and one Gaussian of a
neighbour at D, B exp(-beta |r - D|^2), the overlap integral is (Gaussian product
theorem; AMPTorch ``GMPOrderNorm/helper.cpp``)

    C1 exp(C2 |D|^2) E[T(X)],  X ~ Normal(lambda D, 1/(2 gamma) I),
    gamma = alpha + beta, lambda = beta / gamma, C1 = A B (pi / gamma)^(3/2),
    C2 = -alpha beta / gamma.

* Solid harmonics are harmonic, so by the mean-value property E[T(X)] = T(lambda D) =
  lambda^n T(D): the angular part T(D) is computed once per pair and the radial part,
  sum over Gaussians of C1 exp(C2 r^2) lambda^n, once per pair, probe and order.
* Other polynomials (surface harmonics) use the separable Gaussian moments
  E[(u + xi)^k] = P_k(u), P_{k+1} = u P_k + k/(2 gamma) P_{k-1}, dP_k/du = k P_{k-1}.

A *channel* is (probe, component); mu_c = sum over the pairs of the overlap. On the
harmonic path every feature draws on channels of one probe s and one degree n, so its
derivative by a pair vector contracts over components before the radial factor:
d mu_c / dD = R_sn grad T_k + 2 (dR_sn / dr^2) T_k D. A feature is one of: sum_c w_c mu_c^2 (mode 0), its square root (mode 1, set to 0 with zero
derivative below ``zero_below``), or sum_c w_c mu_c (mode 2).
"""

import numba
import numpy as np

SUM_SQUARES, SQRT_SUM_SQUARES, LINEAR = 0, 1, 2


@numba.njit(cache=True)
def _powers(x, n, out):
    out[0] = 1.0
    for k in range(1, n + 1):
        out[k] = out[k - 1] * x


@numba.njit(cache=True)
def _moments(u, half_inv_gamma, n, out):
    out[0] = 1.0
    if n > 0:
        out[1] = u
    for k in range(1, n):
        out[k + 1] = u * out[k] + k * half_inv_gamma * out[k - 1]


@numba.njit(cache=True)
def _polynomial(comp_ptr, term_coef, term_exp, k, px, py, pz, coef_scale):
    """Component k, sum of c * coef_scale[a+b+e] * px[a] py[b] pz[e], and its partial
    derivatives by the three arguments (d px[a] = a px[a-1], true of powers and of the
    Gaussian moments alike)."""
    v = 0.0
    gx = 0.0
    gy = 0.0
    gz = 0.0
    for m in range(comp_ptr[k], comp_ptr[k + 1]):
        a = term_exp[m, 0]
        b = term_exp[m, 1]
        e = term_exp[m, 2]
        c = term_coef[m] * coef_scale[a + b + e]
        v += c * px[a] * py[b] * pz[e]
        if a > 0:
            gx += c * a * px[a - 1] * py[b] * pz[e]
        if b > 0:
            gy += c * b * px[a] * py[b - 1] * pz[e]
        if e > 0:
            gz += c * e * px[a] * py[b] * pz[e - 1]
    return v, gx, gy, gz


@numba.njit(cache=True, nogil=True)
def gmp_kernel(
    ptr, pair_block, block_ptr, nbr_species, vectors,
    comp_ptr, term_coef, term_exp, comp_degree, harmonic,
    chan_ptr, chan_comp, probe_a, probe_alpha, probe_inv_rs,
    gauss_ptr, gauss_b, gauss_beta,
    feat_ptr, feat_chan, feat_weight, feat_mode, feat_zero,
    fp, fprimes, atom_start, atom_stop,
):
    """Fill rows ``atom_start:atom_stop`` of the fingerprints ``fp`` (n_atoms, n_features)
    and their derivative blocks in ``fprimes`` (n_blocks, n_features, 3), both zeroed by
    the caller; ``fprimes`` of length 0 skips derivatives. Disjoint atom ranges write
    disjoint entries, so ranges can run on separate threads.

    Pairs: ``ptr`` (n_atoms + 1), their blocks ``pair_block`` and ``block_ptr`` (see
    :func:`~fastfp.kernels.blocks.pair_blocks`; unused without derivatives),
    ``nbr_species`` (n_pairs,) index into the Gaussian table, ``vectors`` (n_pairs, 3) Å. Components: terms ``comp_ptr[k]:comp_ptr[k+1]`` of
    ``term_coef`` x^a y^b z^c with ``term_exp`` (n_terms, 3), degree ``comp_degree``.
    Channels of probe s are ``chan_ptr[s]:chan_ptr[s+1]``, component ``chan_comp``.
    Probes: A, alpha (1/Å^2), 1/r_s. Gaussians of species t: ``gauss_ptr[t]:gauss_ptr[t+1]``.
    Features: channels ``feat_ptr[f]:feat_ptr[f+1]`` of ``feat_chan`` with ``feat_weight``.
    """
    derivatives = len(fprimes) > 0
    n_comp = len(comp_ptr) - 1
    n_chan = len(chan_comp)
    n_probe = len(probe_a)
    n_feat = len(feat_ptr) - 1
    max_deg = 0
    for k in range(n_comp):
        max_deg = max(max_deg, comp_degree[k])
    max_pairs = 0
    for i in range(atom_start, atom_stop):
        max_pairs = max(max_pairs, ptr[i + 1] - ptr[i])
    chan_probe = np.empty(n_chan, dtype=np.int64)
    for s in range(n_probe):
        chan_probe[chan_ptr[s] : chan_ptr[s + 1]] = s

    # harmonic path: each feature's probe and degree (all its channels share them)
    feat_probe = np.empty(n_feat, dtype=np.int64)
    feat_degree = np.empty(n_feat, dtype=np.int64)
    for fi in range(n_feat):
        first = feat_chan[feat_ptr[fi]]
        feat_probe[fi] = chan_probe[first]
        feat_degree[fi] = comp_degree[chan_comp[first]]

    # per (probe, Gaussian): C1 lambda^n, C2, lambda, 1/(2 gamma)
    n_gauss = len(gauss_b)
    pref = np.empty((n_probe, n_gauss, max_deg + 1))
    c2tab = np.empty((n_probe, n_gauss))
    lamtab = np.empty((n_probe, n_gauss))
    half_inv_gamma = np.empty((n_probe, n_gauss))
    for s in range(n_probe):
        for g in range(n_gauss):
            alpha = probe_alpha[s]
            beta = gauss_beta[g]
            gamma = alpha + beta
            lamtab[s, g] = beta / gamma
            c2tab[s, g] = -alpha * beta / gamma
            half_inv_gamma[s, g] = 0.5 / gamma
            pref[s, g, 0] = probe_a[s] * gauss_b[g] * (np.pi / gamma) ** 1.5
            for n in range(1, max_deg + 1):
                pref[s, g, n] = pref[s, g, n - 1] * lamtab[s, g]

    mu = np.empty(n_chan)
    keep = max_pairs if derivatives else 1
    # harmonic path, per pair: T_k(D), grad T_k(D), radial R_sn and dR_sn/d(r^2)
    tval = np.empty((keep, n_comp))
    tgrad = np.empty((keep, n_comp, 3))
    radial = np.empty((keep, n_probe, max_deg + 1))
    dradial = np.empty((keep, n_probe, max_deg + 1))
    # moment path, per pair: d mu_c / d D
    dmu = np.empty((max_pairs if derivatives and not harmonic else 0, n_chan, 3))
    px = np.empty(max_deg + 1)
    py = np.empty(max_deg + 1)
    pz = np.empty(max_deg + 1)
    irs_pow = np.empty(max_deg + 1)
    ones = np.ones(max_deg + 1)
    dtotal = np.empty(len(feat_chan))
    scale = np.empty(n_feat)

    for i in range(atom_start, atom_stop):
        start = ptr[i]
        npairs = ptr[i + 1] - start
        mu[:] = 0.0
        if derivatives and not harmonic:
            dmu[:npairs] = 0.0
        for q in range(npairs):
            p = start + q
            x = vectors[p, 0]
            y = vectors[p, 1]
            z = vectors[p, 2]
            r2 = x * x + y * y + z * z
            t = nbr_species[p]
            if harmonic:
                slot = q if derivatives else 0
                _powers(x, max_deg, px)
                _powers(y, max_deg, py)
                _powers(z, max_deg, pz)
                for k in range(n_comp):
                    v, gx, gy, gz = _polynomial(comp_ptr, term_coef, term_exp, k, px, py, pz, ones)
                    tval[slot, k] = v
                    tgrad[slot, k, 0] = gx
                    tgrad[slot, k, 1] = gy
                    tgrad[slot, k, 2] = gz
                for s in range(n_probe):
                    radial[slot, s, :] = 0.0
                    dradial[slot, s, :] = 0.0
                    for g in range(gauss_ptr[t], gauss_ptr[t + 1]):
                        c2 = c2tab[s, g]
                        decay = np.exp(c2 * r2)
                        for n in range(max_deg + 1):
                            f = pref[s, g, n] * decay
                            radial[slot, s, n] += f
                            dradial[slot, s, n] += f * c2
                    for c in range(chan_ptr[s], chan_ptr[s + 1]):
                        k = chan_comp[c]
                        mu[c] += radial[slot, s, comp_degree[k]] * tval[slot, k]
            else:
                for s in range(n_probe):
                    _powers(probe_inv_rs[s], max_deg, irs_pow)
                    for g in range(gauss_ptr[t], gauss_ptr[t + 1]):
                        c2 = c2tab[s, g]
                        lam = lamtab[s, g]
                        f = pref[s, g, 0] * np.exp(c2 * r2)
                        h = half_inv_gamma[s, g]
                        _moments(lam * x, h, max_deg, px)
                        _moments(lam * y, h, max_deg, py)
                        _moments(lam * z, h, max_deg, pz)
                        for c in range(chan_ptr[s], chan_ptr[s + 1]):
                            k = chan_comp[c]
                            v, gx, gy, gz = _polynomial(comp_ptr, term_coef, term_exp, k, px, py, pz, irs_pow)
                            mu[c] += f * v
                            if derivatives:
                                dmu[q, c, 0] += f * (2.0 * c2 * x * v + lam * gx)
                                dmu[q, c, 1] += f * (2.0 * c2 * y * v + lam * gy)
                                dmu[q, c, 2] += f * (2.0 * c2 * z * v + lam * gz)

        for fi in range(n_feat):
            mode = feat_mode[fi]
            total = 0.0
            for m in range(feat_ptr[fi], feat_ptr[fi + 1]):
                c = feat_chan[m]
                if mode == LINEAR:
                    total += feat_weight[m] * mu[c]
                else:
                    total += feat_weight[m] * mu[c] * mu[c]
            scale[fi] = 1.0
            if mode == SQRT_SUM_SQUARES:
                root = np.sqrt(total)
                if root <= feat_zero[fi]:
                    scale[fi] = 0.0
                    continue
                total = root
                scale[fi] = 0.5 / root
            fp[i, fi] = total
            # d total / d mu_c for the member channels
            for m in range(feat_ptr[fi], feat_ptr[fi + 1]):
                dtotal[m] = feat_weight[m] if mode == LINEAR else 2.0 * feat_weight[m] * mu[feat_chan[m]]
        if not derivatives:
            continue
        own = block_ptr[i]
        for q in range(npairs):
            p = start + q
            blk = pair_block[p]
            for fi in range(n_feat):
                if scale[fi] == 0.0:
                    continue
                gx = 0.0
                gy = 0.0
                gz = 0.0
                if harmonic:
                    # d mu_c/dD = R_sn grad T_k + 2 dR_sn T_k D: contract over k first
                    ax = 0.0
                    ay = 0.0
                    az = 0.0
                    bt = 0.0
                    for m in range(feat_ptr[fi], feat_ptr[fi + 1]):
                        k = chan_comp[feat_chan[m]]
                        ax += dtotal[m] * tgrad[q, k, 0]
                        ay += dtotal[m] * tgrad[q, k, 1]
                        az += dtotal[m] * tgrad[q, k, 2]
                        bt += dtotal[m] * tval[q, k]
                    s = feat_probe[fi]
                    n = feat_degree[fi]
                    rad = radial[q, s, n]
                    two_dr_b = 2.0 * dradial[q, s, n] * bt
                    gx = rad * ax + two_dr_b * vectors[p, 0]
                    gy = rad * ay + two_dr_b * vectors[p, 1]
                    gz = rad * az + two_dr_b * vectors[p, 2]
                else:
                    for m in range(feat_ptr[fi], feat_ptr[fi + 1]):
                        c = feat_chan[m]
                        gx += dtotal[m] * dmu[q, c, 0]
                        gy += dtotal[m] * dmu[q, c, 1]
                        gz += dtotal[m] * dmu[q, c, 2]
                sc = scale[fi]
                fprimes[blk, fi, 0] += sc * gx
                fprimes[blk, fi, 1] += sc * gy
                fprimes[blk, fi, 2] += sc * gz
                fprimes[own, fi, 0] -= sc * gx
                fprimes[own, fi, 1] -= sc * gy
                fprimes[own, fi, 2] -= sc * gz
