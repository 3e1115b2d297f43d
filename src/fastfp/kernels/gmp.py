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

Layout: the harmonic path (GMPOrderNorm and solid-harmonic GMP, the common case) works
on one centre at a time with its pairs in the innermost loop, so the compiler vectorises
the loops over pairs: Gaussian decays species by species with the vectorised exp of
:mod:`~fastfp.kernels.fastexp`, then T_k and grad T_k term by term, then the channels and
the derivative contractions. The moment path runs pair by pair.
"""

import numba
import numpy as np

from .fastexp import exp_nonpositive

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
def _harmonic_radial(hxyz, species, npairs, gauss_ptr, c2tab, pref, radial, dradial,
                     sorted_pairs, species_ptr, sub_r2, sub_radial, sub_dradial, arg, decay, bits):
    """Harmonic path, one centre: ``radial[s, n, q]`` = R_sn = sum over the Gaussians g of
    the neighbour's species of C1 lambda^n exp(C2 r^2) (``pref[s, g, n]``, ``c2tab[s, g]``),
    and ``dradial`` = dR_sn/d(r^2) = the same sum times C2, for its ``npairs`` pair vectors
    ``hxyz`` (3, pairs) with neighbour ``species``. Pairs are taken species by species (a
    counting sort into ``sorted_pairs``), so that the loops over them vectorise; the rest
    of the arguments are scratch."""
    species_ptr[:] = 0
    for q in range(npairs):
        species_ptr[species[q] + 1] += 1
    for t in range(len(species_ptr) - 1):
        species_ptr[t + 1] += species_ptr[t]
    for q in range(npairs):  # stable: pairs keep their order within a species
        t = species[q]
        sorted_pairs[species_ptr[t]] = q
        species_ptr[t] += 1
    for t in range(len(species_ptr) - 2, -1, -1):  # back to the starts
        species_ptr[t + 1] = species_ptr[t]
    species_ptr[0] = 0
    max_deg = pref.shape[2] - 1
    for t in range(len(species_ptr) - 1):
        first = species_ptr[t]
        nt = species_ptr[t + 1] - first
        if nt == 0:
            continue
        for u in range(nt):
            q = sorted_pairs[first + u]
            sub_r2[u] = hxyz[0, q] * hxyz[0, q] + hxyz[1, q] * hxyz[1, q] + hxyz[2, q] * hxyz[2, q]
        for s in range(c2tab.shape[0]):
            sub_radial[:, :nt] = 0.0
            sub_dradial[:, :nt] = 0.0
            for g in range(gauss_ptr[t], gauss_ptr[t + 1]):
                c2 = c2tab[s, g]
                for u in range(nt):
                    arg[u] = c2 * sub_r2[u]
                exp_nonpositive(arg, decay, bits, nt)
                for n in range(max_deg + 1):
                    a = pref[s, g, n]
                    for u in range(nt):
                        f = a * decay[u]
                        sub_radial[n, u] += f
                        sub_dradial[n, u] += f * c2
            for n in range(max_deg + 1):
                for u in range(nt):
                    q = sorted_pairs[first + u]
                    radial[s, n, q] = sub_radial[n, u]
                    dradial[s, n, q] = sub_dradial[n, u]


@numba.njit(cache=True, nogil=True)
def _harmonic_channels(hxyz, hpow, npairs, max_deg, comp_ptr, term_coef, term_exp, comp_degree,
                       chan_ptr, chan_comp, radial, tval, tgrad, mu, derivatives):
    """Harmonic path, one centre: T_k(D) (``tval``), with ``derivatives`` grad T_k(D)
    (``tgrad``), for its ``npairs`` pair vectors ``hxyz`` (3, pairs), then the channels
    mu_c = sum over pairs of R_sn T_k. Loops run over the pairs innermost."""
    for d in range(3):
        for q in range(npairs):
            hpow[d, 0, q] = 1.0
        for a in range(1, max_deg + 1):
            for q in range(npairs):
                hpow[d, a, q] = hpow[d, a - 1, q] * hxyz[d, q]
    for k in range(len(comp_ptr) - 1):
        tval[k, :npairs] = 0.0
        if derivatives:
            tgrad[k, :, :npairs] = 0.0
        for m in range(comp_ptr[k], comp_ptr[k + 1]):
            c = term_coef[m]
            a = term_exp[m, 0]
            b = term_exp[m, 1]
            e = term_exp[m, 2]
            for q in range(npairs):
                tval[k, q] += c * hpow[0, a, q] * hpow[1, b, q] * hpow[2, e, q]
            if not derivatives:
                continue
            if a > 0:
                for q in range(npairs):
                    tgrad[k, 0, q] += c * a * hpow[0, a - 1, q] * hpow[1, b, q] * hpow[2, e, q]
            if b > 0:
                for q in range(npairs):
                    tgrad[k, 1, q] += c * b * hpow[0, a, q] * hpow[1, b - 1, q] * hpow[2, e, q]
            if e > 0:
                for q in range(npairs):
                    tgrad[k, 2, q] += c * e * hpow[0, a, q] * hpow[1, b, q] * hpow[2, e - 1, q]
    for s in range(len(chan_ptr) - 1):
        for c in range(chan_ptr[s], chan_ptr[s + 1]):
            k = chan_comp[c]
            n = comp_degree[k]
            total = 0.0
            for q in range(npairs):
                total += radial[s, n, q] * tval[k, q]
            mu[c] = total


@numba.njit(cache=True, nogil=True)
def _harmonic_fprimes(hxyz, npairs, feat_ptr, feat_chan, chan_comp, feat_probe, feat_degree,
                      dtotal, scale, tval, tgrad, radial, dradial, acc, dfeat):
    """Harmonic path, one centre: ``dfeat[f, :, q]``, d feature f / dD_q (scale included),
    from d mu_c/dD = R_sn grad T_k + 2 dR_sn T_k D contracted over the feature's channels
    (``dtotal``, d feature / d mu_c) before the radial factor. ``acc`` (4, pairs) scratch."""
    for fi in range(len(feat_ptr) - 1):
        if scale[fi] == 0.0:
            continue
        acc[:, :npairs] = 0.0
        for m in range(feat_ptr[fi], feat_ptr[fi + 1]):
            k = chan_comp[feat_chan[m]]
            w = dtotal[m]
            for q in range(npairs):
                acc[0, q] += w * tgrad[k, 0, q]
                acc[1, q] += w * tgrad[k, 1, q]
                acc[2, q] += w * tgrad[k, 2, q]
                acc[3, q] += w * tval[k, q]
        s = feat_probe[fi]
        n = feat_degree[fi]
        sc = scale[fi]
        for q in range(npairs):
            two_dr_b = 2.0 * dradial[s, n, q] * acc[3, q]
            for d in range(3):
                dfeat[fi, d, q] = sc * (radial[s, n, q] * acc[d, q] + two_dr_b * hxyz[d, q])


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
    # exp(C2 r^2) of every (probe, Gaussian of the neighbour's species) of a pair (moment
    # path), or of one (probe, Gaussian) over pairs (harmonic path)
    n_decay = max(n_probe * n_gauss, max_pairs)
    decay = np.empty(n_decay)
    decay_arg = np.empty(n_decay)
    decay_bits = np.empty(n_decay, dtype=np.int64)
    # harmonic path, over the pairs q of one centre (pair index last, so loops over q
    # vectorise): D, powers of its components, T_k(D), grad T_k(D), radial R_sn and
    # dR_sn/d(r^2), d feature / dD
    hp = max_pairs if harmonic else 0
    hxyz = np.empty((3, hp))
    hpow = np.empty((3, max_deg + 1, hp))
    tval = np.empty((n_comp, hp))
    tgrad = np.empty((n_comp, 3, hp))
    radial = np.empty((n_probe, max_deg + 1, hp))
    dradial = np.empty((n_probe, max_deg + 1, hp))
    acc = np.empty((4, hp))
    sorted_pairs = np.empty(hp, dtype=np.int64)
    species_ptr = np.empty(len(gauss_ptr), dtype=np.int64)
    sub_r2 = np.empty(hp)
    sub_radial = np.empty((max_deg + 1, hp))
    sub_dradial = np.empty((max_deg + 1, hp))
    dfeat = np.empty((n_feat, 3, hp if derivatives else 0))
    # moment path, per pair: d mu_c / d D
    dmu = np.empty((max_pairs if derivatives and not harmonic else 0, n_chan, 3))
    px = np.empty(max_deg + 1)
    py = np.empty(max_deg + 1)
    pz = np.empty(max_deg + 1)
    irs_pow = np.empty(max_deg + 1)
    dtotal = np.empty(len(feat_chan))
    scale = np.empty(n_feat)

    for i in range(atom_start, atom_stop):
        start = ptr[i]
        npairs = ptr[i + 1] - start
        mu[:] = 0.0
        if derivatives and not harmonic:
            dmu[:npairs] = 0.0
        if harmonic:
            for q in range(npairs):
                for d in range(3):
                    hxyz[d, q] = vectors[start + q, d]
            _harmonic_radial(hxyz, nbr_species[start : start + npairs], npairs, gauss_ptr, c2tab, pref,
                             radial, dradial, sorted_pairs, species_ptr, sub_r2, sub_radial, sub_dradial,
                             decay_arg, decay, decay_bits)
            _harmonic_channels(hxyz, hpow, npairs, max_deg, comp_ptr, term_coef, term_exp, comp_degree,
                               chan_ptr, chan_comp, radial, tval, tgrad, mu, derivatives)
        else:
            for q in range(npairs):
                p = start + q
                x = vectors[p, 0]
                y = vectors[p, 1]
                z = vectors[p, 2]
                r2 = x * x + y * y + z * z
                g0 = gauss_ptr[nbr_species[p]]
                ng = gauss_ptr[nbr_species[p] + 1] - g0
                for s in range(n_probe):
                    for g in range(ng):
                        decay_arg[s * ng + g] = c2tab[s, g0 + g] * r2
                exp_nonpositive(decay_arg, decay, decay_bits, n_probe * ng)
                for s in range(n_probe):
                    _powers(probe_inv_rs[s], max_deg, irs_pow)
                    for g in range(g0, g0 + ng):
                        c2 = c2tab[s, g]
                        lam = lamtab[s, g]
                        f = pref[s, g, 0] * decay[s * ng + g - g0]
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
        if harmonic:
            _harmonic_fprimes(hxyz, npairs, feat_ptr, feat_chan, chan_comp, feat_probe, feat_degree,
                              dtotal, scale, tval, tgrad, radial, dradial, acc, dfeat)
            for q in range(npairs):
                blk = pair_block[start + q]
                for fi in range(n_feat):
                    if scale[fi] == 0.0:
                        continue
                    for xyz in range(3):
                        fprimes[blk, fi, xyz] += dfeat[fi, xyz, q]
                        fprimes[own, fi, xyz] -= dfeat[fi, xyz, q]
            continue
        for q in range(npairs):
            p = start + q
            blk = pair_block[p]
            for fi in range(n_feat):
                if scale[fi] == 0.0:
                    continue
                gx = 0.0
                gy = 0.0
                gz = 0.0
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
