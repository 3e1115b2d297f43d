"""GMP kernel: overlap of Gaussian-probed MCSH with neighbours' Gaussian pseudodensities.

For a probe A exp(-alpha r^2) times a polynomial T (an MCSH component), and one Gaussian
of a neighbour at D, B exp(-beta |r - D|^2), the overlap integral is (Gaussian product
theorem; AMPTorch ``GMPOrderNorm/helper.cpp``)

    C1 exp(C2 |D|^2) E[T(X)],  X ~ Normal(lambda D, h I),
    gamma = alpha + beta, lambda = beta / gamma, h = 1/(2 gamma),
    C1 = A B (pi / gamma)^(3/2), C2 = -alpha beta / gamma.

The Gaussian average of a polynomial is a finite heat-kernel series,

    E[T(lambda D + xi)] = sum_j (h/2)^j / j! (Laplacian^j T)(lambda D),

and a term of degree d evaluated at lambda D is lambda^d times its value at D. So T
splits into *pieces* Q_p, the degree-d part of Laplacian^j T (a *slot* (j, d)), and

    E[T] = sum_p (h/2)^j / j! lambda^d Q_p(D).

Solid harmonics are harmonic: one piece, j = 0, d = n (the mean-value property).
Surface harmonics (GMP with ``solid_harmonics`` off) have terms scaled by
(1/r_s)^(degree), which become (1/r_s)^(d + 2j) of the piece's slot. Everything that
depends on the Gaussian sits in the radial part of a (probe s, slot r)

    R_sr(r^2) = sum over the neighbour's Gaussians of C1 lambda^d (h/2)^j / j! (1/r_s)^(d+2j) exp(C2 r^2),

so the angular part Q_p(D) is computed once per pair. A *channel* is (probe, component);
mu_c = sum over the pairs and the component's pieces of R_sr Q_p, and
d mu_c / dD = sum_p R_sr grad Q_p + 2 (dR_sr / dr^2) Q_p D. Every feature draws on
channels of one probe, so its derivative contracts over components slot by slot before
the radial factor. A feature is one of: sum_c w_c mu_c^2 (mode 0), its square root
(mode 1, set to 0 with zero derivative below ``zero_below``), or sum_c w_c mu_c (mode 2).

Layout: one centre at a time with its pairs in the innermost loop, so the compiler
vectorises the loops over pairs: Gaussian decays species by species with the vectorised
exp of :mod:`~fastfp.kernels.fastexp`, then Q_p and grad Q_p term by term, then the
channels and the derivative contractions.
"""

import numba
import numpy as np

from .fastexp import exp_nonpositive
from .formulas import channel_slope, channel_term, feature_value


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _dot(a, b, n):
    """sum of ``a[:n] * b[:n]``, in an order the compiler may choose (vectorised: a sum
    left to right waits for each addition). Fixed for a given ``n``, so results do not
    depend on threads."""
    total = 0.0
    for q in range(n):
        total += a[q] * b[q]
    return total


@numba.njit(cache=True, nogil=True)
def _radial(hxyz, species, npairs, gauss_ptr, c2tab, pref, radial, dradial,
            sorted_pairs, species_ptr, sub_r2, sub_radial, sub_dradial, arg, decay, bits):
    """One centre: ``radial[s, r, q]`` = R_sr = sum over the Gaussians g of the
    neighbour's species of ``pref[s, g, r] * exp(c2tab[s, g] r^2)``, and ``dradial`` =
    dR_sr/d(r^2) = the same sum times C2, for its ``npairs`` pair vectors ``hxyz`` (3,
    pairs) with neighbour ``species``. Pairs are taken species by species (a counting sort
    into ``sorted_pairs``), so that the loops over them vectorise; the rest of the
    arguments are scratch."""
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
    n_slots = pref.shape[2]
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
                for r in range(n_slots):
                    a = pref[s, g, r]
                    for u in range(nt):
                        f = a * decay[u]
                        sub_radial[r, u] += f
                        sub_dradial[r, u] += f * c2
            for r in range(n_slots):
                for u in range(nt):
                    q = sorted_pairs[first + u]
                    radial[s, r, q] = sub_radial[r, u]
                    dradial[s, r, q] = sub_dradial[r, u]


@numba.njit(cache=True, nogil=True)
def _channels(hxyz, hpow, npairs, piece_ptr, term_coef, term_exp, comp_piece_ptr, piece_slot,
              chan_ptr, chan_comp, radial, tval, tgrad, mu, derivatives):
    """One centre: the pieces Q_p(D) (``tval``) and, with ``derivatives``, grad Q_p(D)
    (``tgrad``) for its ``npairs`` pair vectors ``hxyz`` (3, pairs), then the channels
    mu_c = sum over pairs and the component's pieces of R_sr Q_p. Loops run over the
    pairs innermost."""
    for d in range(3):
        for q in range(npairs):
            hpow[d, 0, q] = 1.0
        for a in range(1, hpow.shape[1]):
            for q in range(npairs):
                hpow[d, a, q] = hpow[d, a - 1, q] * hxyz[d, q]
    for p in range(len(piece_ptr) - 1):
        tval[p, :npairs] = 0.0
        if derivatives:
            tgrad[p, :, :npairs] = 0.0
        for m in range(piece_ptr[p], piece_ptr[p + 1]):
            c = term_coef[m]
            a = term_exp[m, 0]
            b = term_exp[m, 1]
            e = term_exp[m, 2]
            for q in range(npairs):
                tval[p, q] += c * hpow[0, a, q] * hpow[1, b, q] * hpow[2, e, q]
            if not derivatives:
                continue
            if a > 0:
                for q in range(npairs):
                    tgrad[p, 0, q] += c * a * hpow[0, a - 1, q] * hpow[1, b, q] * hpow[2, e, q]
            if b > 0:
                for q in range(npairs):
                    tgrad[p, 1, q] += c * b * hpow[0, a, q] * hpow[1, b - 1, q] * hpow[2, e, q]
            if e > 0:
                for q in range(npairs):
                    tgrad[p, 2, q] += c * e * hpow[0, a, q] * hpow[1, b, q] * hpow[2, e - 1, q]
    for s in range(len(chan_ptr) - 1):
        for c in range(chan_ptr[s], chan_ptr[s + 1]):
            k = chan_comp[c]
            total = 0.0
            for p in range(comp_piece_ptr[k], comp_piece_ptr[k + 1]):
                total += _dot(radial[s, piece_slot[p]], tval[p], npairs)
            mu[c] = total


@numba.njit(cache=True, nogil=True)
def _feature_fprimes(hxyz, npairs, term_ptr, term_slot, term_piece, term_member, feat_probe,
                     dtotal, scale, tval, tgrad, radial, dradial, acc, dfeat):
    """One centre: ``dfeat[f, :, q]``, d feature f / dD_q (scale included), from
    d mu_c/dD = sum_p R_sr grad Q_p + 2 dR_sr Q_p D contracted over the feature's channels
    (``dtotal``, d feature / d mu_c) slot by slot before the radial factor (the
    ``fprime_term_*`` arrays of :class:`~fastfp.kernels.tables.GMPTables`). ``acc``
    (4, pairs) is scratch."""
    for fi in range(len(term_ptr) - 1):
        dfeat[fi, :, :npairs] = 0.0
        if scale[fi] == 0.0:
            continue
        s = feat_probe[fi]
        t = term_ptr[fi]
        while t < term_ptr[fi + 1]:
            r = term_slot[t]
            end = t
            while end < term_ptr[fi + 1] and term_slot[end] == r:
                end += 1
            # acc = sum over the slot's pieces of w (grad Q_p, Q_p), w = d feature / d mu_c
            # with the feature's slope: set by the first piece (no zeroing pass)
            p = term_piece[t]
            w = dtotal[term_member[t]] * scale[fi]
            for q in range(npairs):
                acc[0, q] = w * tgrad[p, 0, q]
                acc[1, q] = w * tgrad[p, 1, q]
                acc[2, q] = w * tgrad[p, 2, q]
                acc[3, q] = w * tval[p, q]
            for k in range(t + 1, end):
                p = term_piece[k]
                w = dtotal[term_member[k]] * scale[fi]
                for q in range(npairs):
                    acc[0, q] += w * tgrad[p, 0, q]
                    acc[1, q] += w * tgrad[p, 1, q]
                    acc[2, q] += w * tgrad[p, 2, q]
                    acc[3, q] += w * tval[p, q]
            t = end
            for q in range(npairs):
                two_dr_b = 2.0 * dradial[s, r, q] * acc[3, q]
                for d in range(3):
                    dfeat[fi, d, q] += radial[s, r, q] * acc[d, q] + two_dr_b * hxyz[d, q]


@numba.njit(cache=True, nogil=True)
def gmp_kernel(ptr, pair_block, block_ptr, nbr_species, vectors, tables, derivatives, fp, fprimes,
               atom_start, atom_stop):
    """Fill rows ``atom_start:atom_stop`` of the fingerprints ``fp`` (n_atoms, n_features)
    and, with ``derivatives``, their derivative blocks in ``fprimes`` (n_blocks,
    n_features, 3), whatever they held. Disjoint atom ranges write disjoint entries, so
    ranges can run on separate threads.

    Pairs: ``ptr`` (n_atoms + 1), their blocks ``pair_block`` and ``block_ptr`` (see
    :func:`~fastfp.kernels.blocks.pair_blocks`; unused without derivatives),
    ``nbr_species`` (n_pairs,) index into the Gaussian table, ``vectors`` (n_pairs, 3) Å.
    Pieces, slots, channels, probes, Gaussians, features: ``tables``
    (:class:`~fastfp.kernels.tables.GMPTables`).
    """
    t = tables
    n_chan = len(t.chan_comp)
    n_probe = len(t.probe_a)
    n_feat = len(t.feat_ptr) - 1
    n_slots = len(t.slot_j)
    max_deg = 0
    for r in range(n_slots):
        max_deg = max(max_deg, t.slot_d[r])
    max_pairs = 0
    for i in range(atom_start, atom_stop):
        max_pairs = max(max_pairs, ptr[i + 1] - ptr[i])

    mu = np.empty(n_chan)
    dtotal = np.empty(len(t.feat_chan))
    scale = np.empty(n_feat)
    # over the pairs q of one centre (pair index last, so loops over q vectorise): D,
    # powers of its components, Q_p(D), grad Q_p(D), R_sr and dR_sr/d(r^2), d feature / dD
    n_pieces = len(t.piece_ptr) - 1
    hxyz = np.empty((3, max_pairs))
    hpow = np.empty((3, max_deg + 1, max_pairs))
    tval = np.empty((n_pieces, max_pairs))
    tgrad = np.empty((n_pieces, 3, max_pairs if derivatives else 0))
    radial = np.empty((n_probe, n_slots, max_pairs))
    dradial = np.empty((n_probe, n_slots, max_pairs))
    acc = np.empty((4, max_pairs))
    dfeat = np.empty((n_feat, 3, max_pairs if derivatives else 0))
    own_sum = np.empty((n_feat, 3))
    sorted_pairs = np.empty(max_pairs, dtype=np.int64)
    species_ptr = np.empty(len(t.gauss_ptr), dtype=np.int64)
    sub_r2 = np.empty(max_pairs)
    sub_radial = np.empty((n_slots, max_pairs))
    sub_dradial = np.empty((n_slots, max_pairs))
    decay = np.empty(max_pairs)
    decay_arg = np.empty(max_pairs)
    decay_bits = np.empty(max_pairs, dtype=np.int64)

    for i in range(atom_start, atom_stop):
        start = ptr[i]
        npairs = ptr[i + 1] - start
        for q in range(npairs):
            for d in range(3):
                hxyz[d, q] = vectors[start + q, d]
        _radial(hxyz, nbr_species[start : start + npairs], npairs, t.gauss_ptr, t.overlap_c2, t.overlap_pref,
                radial, dradial, sorted_pairs, species_ptr, sub_r2, sub_radial, sub_dradial,
                decay_arg, decay, decay_bits)
        _channels(hxyz, hpow, npairs, t.piece_ptr, t.term_coef, t.term_exp, t.comp_piece_ptr, t.piece_slot,
                  t.chan_ptr, t.chan_comp, radial, tval, tgrad, mu, derivatives)

        for fi in range(n_feat):
            mode = t.feat_mode[fi]
            total = 0.0
            for m in range(t.feat_ptr[fi], t.feat_ptr[fi + 1]):
                total += channel_term(mode, t.feat_weight[m], mu[t.feat_chan[m]])
            value, slope = feature_value(mode, total, t.feat_zero[fi])
            scale[fi] = slope
            fp[i, fi] = value  # fp is not zeroed by the caller
            if slope == 0.0:
                continue
            # d total / d mu_c for the member channels
            for m in range(t.feat_ptr[fi], t.feat_ptr[fi + 1]):
                dtotal[m] = channel_slope(mode, t.feat_weight[m], mu[t.feat_chan[m]])
        if not derivatives:
            continue
        _feature_fprimes(hxyz, npairs, t.fprime_term_ptr, t.fprime_term_slot, t.fprime_term_piece,
                         t.fprime_term_member, t.feat_probe, dtotal, scale, tval, tgrad, radial, dradial, acc, dfeat)
        # d/dr_j += d/dD_q for the block of each pair's neighbour j, d/dr_i -= their sum
        fprimes[block_ptr[i] : block_ptr[i + 1]] = 0.0
        own_sum[:] = 0.0
        for q in range(npairs):
            blk = pair_block[start + q]
            for fi in range(n_feat):
                for xyz in range(3):
                    fprimes[blk, fi, xyz] += dfeat[fi, xyz, q]
                    own_sum[fi, xyz] += dfeat[fi, xyz, q]
        own = block_ptr[i]
        for fi in range(n_feat):
            for xyz in range(3):
                fprimes[own, fi, xyz] -= own_sum[fi, xyz]
