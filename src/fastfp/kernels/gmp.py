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

so the angular part is a polynomial in D, written in the monomials M_m(D) = D_x^a D_y^b
D_z^e of the slot's degree. A *channel* is (probe, component);

    mu_c = sum over the component's pieces p and their terms (coefficient, m) of
           coefficient * S_srm,  S_srm = sum over the pairs of R_sr M_m(D)

(the *moments* S: one dot product over the pairs per probe, slot and monomial). A
feature is one of: sum_c w_c mu_c^2 (mode 0), its square root (mode 1, set to 0 with
zero derivative below ``zero_below``), or sum_c w_c mu_c (mode 2). Its derivative by a
pair vector D is, with the feature's slope and d feature / d mu_c (``dtotal``) folded
into one polynomial P_fr per slot (the ``poly_*`` tables of
:class:`~fastfp.kernels.tables.GMPTables`, coefficients per centre),

    dF_f/dD = sum_r R_sr grad P_fr(D) + 2 (dR_sr / dr^2) P_fr(D) D.

The polynomials are homogeneous (every term of a piece has its slot's degree d), so
P_fr(D) = D . grad P_fr(D) / d (Euler's identity): only the gradient is evaluated pair by
pair. The modes of :mod:`fastfp.kernels.blocks` use the derivative three ways: evaluated
pair by pair for the derivative blocks; with x[i, f] folded in first (one polynomial
per probe and slot, sum_f x_f P_fr) for J^T x; and for J x as moments again,
sum_r (grad P_fr coefficients) . (sum over pairs of R_sr w M) + (P_fr coefficients) .
(sum over pairs of 2 dR_sr (D . w) M), w = x[j] - x[i], with no polynomial evaluated
pair by pair. The centre's own periodic images move with it: they count in the
fingerprints, not in the derivatives.

Layout: one centre at a time, its pairs at *positions* u sorted by the neighbour's
species (each species from a multiple of :data:`PAD` on, the gaps unused positions
whose monomials are all 0, so they add nothing), the positions innermost, so the
compiler vectorises the loops over them: Gaussian decays species by species with the
inline exp of :mod:`~fastfp.kernels.fastexp`, the monomials by one product each, the
moments as dot products. Positions are unsigned integers in those loops (numba wraps
negative indices otherwise, which stops vectorisation). The pair-by-pair derivatives go
through chunks of :data:`CHUNK` positions (a few kB, in L1) before they are added to
their blocks.
"""

import numba
import numpy as np

from .blocks import BLOCKS, FINGERPRINTS, J_PRODUCT, JT_PAIRS
from .fastexp import exp_nonpositive
from .formulas import channel_slope, channel_term, feature_value

#: each species' pairs start at a multiple of PAD positions (so the loops over a
#: species' pairs have no scalar remainder at the SIMD width: 4 fp64 lanes of AVX2,
#: which LLVM also prefers on AVX-512 cores). Larger pads cost more than they save where
#: a centre has neighbours of several species (OC20: 3.7 on average, 1.45 positions per
#: pair at 16, 1.08 at 4)
PAD = 4
#: positions per chunk of the pair-by-pair derivatives (a multiple of PAD; the chunk's
#: rows stay in L1)
CHUNK = 64


@numba.njit(cache=True, nogil=True)
def _sort_by_species(species, npairs, order, species_ptr):
    """Place the pairs of one centre by neighbour ``species``, each species' in their
    order: those of species t at positions ``species_ptr[t]`` (a multiple of
    :data:`PAD`) on, then unused positions (``order[u] = -1``) up to
    ``species_ptr[t+1]``. ``order[u]`` is the pair at position u. Returns the number of
    positions (a multiple of :data:`PAD`), all of them set in ``order``."""
    n_species = len(species_ptr) - 1
    species_ptr[:] = 0
    for q in range(npairs):
        species_ptr[species[q] + 1] += 1
    end = 0
    for t in range(n_species):  # counts -> padded starts
        count = species_ptr[t + 1]
        species_ptr[t] = end
        end += (count + PAD - 1) // PAD * PAD
        species_ptr[t + 1] = end
    order[:end] = -1
    for q in range(npairs):
        t = species[q]
        order[species_ptr[t]] = q
        species_ptr[t] += 1
    for t in range(n_species - 1, 0, -1):  # back to the starts: the previous one's end, rounded up
        species_ptr[t] = (species_ptr[t - 1] + PAD - 1) // PAD * PAD
    species_ptr[0] = 0
    return end


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _radial(r2, species_ptr, gauss_ptr, c2tab, pref, derivatives, decay, radial, dradial):
    """``radial[s, r, u]`` = R_sr and, with ``derivatives``, ``dradial`` = dR_sr/d(r^2)
    (the same sum with each Gaussian's C2 as a factor) at the positions u of one centre
    (squared lengths ``r2``; species t at ``species_ptr[t]:species_ptr[t+1]``), one
    Gaussian at a time: its decays into ``decay``, then into each slot's sums (the first
    Gaussian of a species sets them)."""
    n_slots = pref.shape[2]
    for t in range(len(species_ptr) - 1):
        # unsigned positions: no negative-index wraparound, so the loops vectorise
        u0 = np.uint64(species_ptr[t])
        u1 = np.uint64(species_ptr[t + 1])
        if u1 == u0:  # no neighbour of this species (most of them, with many elements)
            continue
        for s in range(c2tab.shape[0]):
            for g in range(gauss_ptr[t], gauss_ptr[t + 1]):
                c2 = c2tab[s, g]
                first = g == gauss_ptr[t]
                for u in range(u0, u1):
                    decay[u] = exp_nonpositive(c2 * r2[u])
                for r in range(n_slots):
                    _add(first, radial, s, r, u0, u1, pref[s, g, r], decay)
                    if derivatives:
                        _add(first, dradial, s, r, u0, u1, pref[s, g, r] * c2, decay)


@numba.njit(cache=True, nogil=True, inline="always")
def _add(first, out, s, r, u0, u1, a, decay):
    """``out[s, r, u0:u1]`` = (or += unless ``first``) ``a * decay[u0:u1]``."""
    if first:
        for u in range(u0, u1):
            out[s, r, u] = a * decay[u]
    else:
        for u in range(u0, u1):
            out[s, r, u] += a * decay[u]


@numba.njit(cache=True, nogil=True)
def _monomials(hxyz, n, mono_exp, mono_grad, mono):
    """``mono[m, u]`` = M_m(D_u) for the first ``n`` pair vectors ``hxyz`` (3, pairs),
    each the product of a lower one and one component, from ``mono[0]`` as given (1, or
    0 at unused positions)."""
    for m in range(1, mono.shape[0]):
        axis = 0 if mono_exp[m, 0] > 0 else (1 if mono_exp[m, 1] > 0 else 2)
        lower = mono_grad[m, axis]
        for u in range(n):
            mono[m, u] = mono[lower, u] * hxyz[axis, u]


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _channels(n, radial, mono, slot_d, mono_ptr, chan_ptr, chan_comp, comp_piece_ptr, piece_slot, piece_ptr,
              term_coef, term_mono, moments, mu):
    """The channels ``mu`` of one centre from its first ``n`` positions: the moments
    S_srm (``moments[s, r, m - mono_ptr[d_r]]``), then each channel's pieces' terms.
    The moments' sums run in an order the compiler may choose (vectorised), fixed for a
    given ``n``, so results do not depend on threads."""
    for s in range(moments.shape[0]):
        for r in range(len(slot_d)):
            m0 = mono_ptr[slot_d[r]]
            for m in range(m0, mono_ptr[slot_d[r] + 1]):
                total = 0.0
                for u in range(n):
                    total += radial[s, r, u] * mono[m, u]
                moments[s, r, m - m0] = total
    for s in range(len(chan_ptr) - 1):
        for c in range(chan_ptr[s], chan_ptr[s + 1]):
            k = chan_comp[c]
            total = 0.0
            for p in range(comp_piece_ptr[k], comp_piece_ptr[k + 1]):
                r = piece_slot[p]
                m0 = mono_ptr[slot_d[r]]
                for term in range(piece_ptr[p], piece_ptr[p + 1]):
                    total += term_coef[term] * moments[s, r, term_mono[term] - m0]
            mu[c] = total


@numba.njit(cache=True, nogil=True, inline="always")
def _polynomial(t, k, weight, dtotal, e, coef, grad):
    """Add ``weight`` times polynomial ``k`` of the tables ``t`` (P_fr with the weights
    ``dtotal`` of its members) to ``coef[e]`` (its slot's monomials, from the slot's
    first) and its gradient to ``grad[e]`` (3, monomials one degree lower)."""
    d = t.slot_d[t.poly_slot[k]]
    m0 = t.mono_ptr[d]
    for tt in range(t.poly_term_ptr[k], t.poly_term_ptr[k + 1]):
        p = t.poly_term_piece[tt]
        w = weight * dtotal[t.poly_term_member[tt]]
        for term in range(t.piece_ptr[p], t.piece_ptr[p + 1]):
            m = t.term_mono[term]
            c = w * t.term_coef[term]
            coef[e, m - m0] += c
            if d > 0:
                for axis in range(3):
                    power = t.mono_exp[m, axis]
                    if power > 0:
                        grad[e, axis, t.mono_grad[m, axis] - t.mono_ptr[d - 1]] += power * c


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _pair_derivatives(mode, i, start, end, order, j, pair_block, own, n_poly, poly_row, poly_probe,
                      poly_slot, coef, grad, slot_d, mono_ptr, hxyz, radial, dradial, mono, acc, dout, own_sum,
                      row_set, fprimes, out):
    """The derivatives of one centre pair by pair, :data:`CHUNK` positions at a time
    (the last chunk shorter, to ``end``): ``dout[row, :, w]`` = sum of R_sr G + 2 dR_sr
    P D over the ``n_poly`` polynomials of the row (gradient coefficients ``grad``, 0
    past the last; ``coef`` for degree 0; probe, slot) at position u0 + w, with G =
    grad P(D) and, for degree d > 0, P(D) = D . G / d (the polynomials are homogeneous:
    Euler's identity). A row's first polynomial sets its entries, the next ones add to
    them (``row_set``); rows with none are set to 0. ``BLOCKS``: add them to their
    blocks (zeroed by the caller), their sum (accumulated as they are computed, in a
    fixed order) going to the centre's block ``own`` at the end; ``JT_PAIRS`` (row 0):
    write them to ``out``. The centre's own images have R = 0 here, so they add
    nothing. ``acc`` (3, CHUNK) is scratch."""
    n_rows = dout.shape[0]
    # (feature, xyz) as one index, as in a block's memory: one loop per position's copy
    # into its block (a few per cent less kernel time than loops over features and xyz)
    chunk_rows = dout.reshape(3 * n_rows, dout.shape[2])
    block_rows = fprimes.reshape(fprimes.shape[0], fprimes.shape[1] * fprimes.shape[2])
    if mode == BLOCKS:
        own_sum[:, :] = 0.0
    for u0 in range(0, end, CHUNK):
        n_w = min(CHUNK, end - u0)
        u0 = np.uint64(u0)  # unsigned positions: no negative-index wraparound, loops vectorise
        row_set[:] = False
        for k in range(n_poly):
            s = poly_probe[k]
            r = poly_slot[k]
            d = slot_d[r]
            row = poly_row[k]
            first = not row_set[row]
            row_set[row] = True
            sx = 0.0
            sy = 0.0
            sz = 0.0
            if d == 0:
                c = 2.0 * coef[k, 0]
                if first:
                    for w in range(n_w):
                        u = u0 + np.uint64(w)
                        b = c * dradial[s, r, u] * mono[0, u]
                        vx = b * hxyz[0, u]
                        vy = b * hxyz[1, u]
                        vz = b * hxyz[2, u]
                        dout[row, 0, w] = vx
                        dout[row, 1, w] = vy
                        dout[row, 2, w] = vz
                        sx += vx
                        sy += vy
                        sz += vz
                else:
                    for w in range(n_w):
                        u = u0 + np.uint64(w)
                        b = c * dradial[s, r, u] * mono[0, u]
                        vx = b * hxyz[0, u]
                        vy = b * hxyz[1, u]
                        vz = b * hxyz[2, u]
                        dout[row, 0, w] += vx
                        dout[row, 1, w] += vy
                        dout[row, 2, w] += vz
                        sx += vx
                        sy += vy
                        sz += vz
            else:
                g0 = mono_ptr[d - 1]
                n_grad = mono_ptr[d] - g0
                two_over_d = 2.0 / d
                for m in range(0, n_grad, 3):
                    ma = g0 + m
                    mb = g0 + min(m + 1, n_grad - 1)
                    mc = g0 + min(m + 2, n_grad - 1)
                    a0, a1, a2 = grad[k, 0, m], grad[k, 1, m], grad[k, 2, m]
                    b0, b1, b2 = grad[k, 0, m + 1], grad[k, 1, m + 1], grad[k, 2, m + 1]
                    c0, c1, c2 = grad[k, 0, m + 2], grad[k, 1, m + 2], grad[k, 2, m + 2]
                    if m == 0:
                        for w in range(n_w):
                            u = u0 + np.uint64(w)
                            xa = mono[ma, u]
                            xb = mono[mb, u]
                            xc = mono[mc, u]
                            acc[0, w] = a0 * xa + b0 * xb + c0 * xc
                            acc[1, w] = a1 * xa + b1 * xb + c1 * xc
                            acc[2, w] = a2 * xa + b2 * xb + c2 * xc
                    else:
                        for w in range(n_w):
                            u = u0 + np.uint64(w)
                            xa = mono[ma, u]
                            xb = mono[mb, u]
                            xc = mono[mc, u]
                            acc[0, w] += a0 * xa + b0 * xb + c0 * xc
                            acc[1, w] += a1 * xa + b1 * xb + c1 * xc
                            acc[2, w] += a2 * xa + b2 * xb + c2 * xc
                if first:
                    for w in range(n_w):
                        u = u0 + np.uint64(w)
                        gx = acc[0, w]
                        gy = acc[1, w]
                        gz = acc[2, w]
                        hx = hxyz[0, u]
                        hy = hxyz[1, u]
                        hz = hxyz[2, u]
                        a = radial[s, r, u]
                        b = two_over_d * dradial[s, r, u] * (hx * gx + hy * gy + hz * gz)
                        vx = a * gx + b * hx
                        vy = a * gy + b * hy
                        vz = a * gz + b * hz
                        dout[row, 0, w] = vx
                        dout[row, 1, w] = vy
                        dout[row, 2, w] = vz
                        sx += vx
                        sy += vy
                        sz += vz
                else:
                    for w in range(n_w):
                        u = u0 + np.uint64(w)
                        gx = acc[0, w]
                        gy = acc[1, w]
                        gz = acc[2, w]
                        hx = hxyz[0, u]
                        hy = hxyz[1, u]
                        hz = hxyz[2, u]
                        a = radial[s, r, u]
                        b = two_over_d * dradial[s, r, u] * (hx * gx + hy * gy + hz * gz)
                        vx = a * gx + b * hx
                        vy = a * gy + b * hy
                        vz = a * gz + b * hz
                        dout[row, 0, w] += vx
                        dout[row, 1, w] += vy
                        dout[row, 2, w] += vz
                        sx += vx
                        sy += vy
                        sz += vz
            if mode == BLOCKS:
                own_sum[row, 0] += sx
                own_sum[row, 1] += sy
                own_sum[row, 2] += sz
        for row in range(n_rows):
            if not row_set[row]:
                dout[row, :, :n_w] = 0.0
        for w in range(n_w):
            q = order[u0 + np.uint64(w)]
            if q < 0:
                continue
            p = start + q
            if mode == JT_PAIRS:
                for xyz in range(3):
                    out[p, xyz] = dout[0, xyz, w]
                continue
            blk = pair_block[p]
            if blk == own:
                continue
            for k in range(3 * n_rows):
                block_rows[blk, k] += chunk_rows[k, w]
    if mode == BLOCKS:
        for f in range(n_rows):
            for xyz in range(3):
                fprimes[own, f, xyz] = -own_sum[f, xyz]


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _jacobian_product(t, i, n, wxyz, hxyz, radial, dradial, mono, scale, dtotal, coef, grad, work, out):
    """``out[i, f]`` = (J x)[i, f] of one centre from its first ``n`` positions with
    ``wxyz`` (3, positions) = x[j] - x[i]: per probe and slot the moments of R_sr w and
    of 2 dR_sr (D . w), contracted with each polynomial's coefficients (sums over
    positions in an order the compiler may choose, fixed for a given ``n``). ``work``
    (4, positions) is scratch; ``coef`` and ``grad`` hold the moments."""
    n_slots = len(t.slot_d)
    for s in range(radial.shape[0]):
        for r in range(n_slots):
            d = t.slot_d[r]
            m0 = t.mono_ptr[d]
            for u in range(n):
                dw = hxyz[0, u] * wxyz[0, u] + hxyz[1, u] * wxyz[1, u] + hxyz[2, u] * wxyz[2, u]
                work[3, u] = 2.0 * dradial[s, r, u] * dw
                work[0, u] = radial[s, r, u] * wxyz[0, u]
                work[1, u] = radial[s, r, u] * wxyz[1, u]
                work[2, u] = radial[s, r, u] * wxyz[2, u]
            k = s * n_slots + r
            for m in range(m0, t.mono_ptr[d + 1]):
                total = 0.0
                for u in range(n):
                    total += work[3, u] * mono[m, u]
                coef[k, m - m0] = total
            if d > 0:
                g0 = t.mono_ptr[d - 1]
                for m in range(g0, m0):
                    for xyz in range(3):
                        total = 0.0
                        for u in range(n):
                            total += work[xyz, u] * mono[m, u]
                        grad[k, xyz, m - g0] = total
    for f in range(len(t.poly_ptr) - 1):
        total = 0.0
        if scale[f] != 0.0:
            s = t.feat_probe[f]
            for k in range(t.poly_ptr[f], t.poly_ptr[f + 1]):
                r = t.poly_slot[k]
                d = t.slot_d[r]
                m0 = t.mono_ptr[d]
                g0 = t.mono_ptr[d - 1] if d > 0 else m0
                e = s * n_slots + r
                for tt in range(t.poly_term_ptr[k], t.poly_term_ptr[k + 1]):
                    p = t.poly_term_piece[tt]
                    w = scale[f] * dtotal[t.poly_term_member[tt]]
                    for term in range(t.piece_ptr[p], t.piece_ptr[p + 1]):
                        m = t.term_mono[term]
                        moment = coef[e, m - m0]
                        for axis in range(3):
                            power = t.mono_exp[m, axis]
                            if power > 0:
                                moment += power * grad[e, axis, t.mono_grad[m, axis] - g0]
                        total += w * t.term_coef[term] * moment
        out[i, f] = total


@numba.njit(cache=True, nogil=True)
def gmp_kernel(ptr, j, nbr_species, vectors, tables, mode, fp, pair_block, block_ptr, fprimes, x, out,
               atom_start, atom_stop):
    """Fill rows ``atom_start:atom_stop`` of the fingerprints ``fp`` (n_atoms, n_features)
    and what ``mode`` asks for (:mod:`fastfp.kernels.blocks`), whatever the outputs
    held; disjoint atom ranges write disjoint entries, so ranges can run on separate
    threads:

    * ``BLOCKS``: their derivative blocks in ``fprimes`` (n_blocks, n_features, 3), by
      ``pair_block`` and ``block_ptr`` (:func:`~fastfp.kernels.blocks.pair_blocks`);
    * ``JT_PAIRS``: ``out[p]`` (n_pairs, 3) = sum_f x[i, f] dG_if/dD_p for their pairs;
    * ``J_PRODUCT``: ``out[i]`` (n_atoms, n_features) = (J x)[i], ``x`` (n_atoms, 3).

    Arguments a mode does not use may be empty arrays. Pairs: ``ptr`` (n_atoms + 1),
    neighbours ``j`` (n_pairs,), ``nbr_species`` (n_pairs,) index into the Gaussian
    table, ``vectors`` (n_pairs, 3) Å. Pieces, slots, channels, probes, Gaussians,
    monomials, features: ``tables`` (:class:`~fastfp.kernels.tables.GMPTables`).
    """
    t = tables
    n_probe = len(t.probe_a)
    n_feat = len(t.feat_ptr) - 1
    n_slots = len(t.slot_j)
    n_mono = t.mono_ptr[len(t.mono_ptr) - 1]
    max_mono = 1
    for d in range(len(t.mono_ptr) - 1):
        max_mono = max(max_mono, t.mono_ptr[d + 1] - t.mono_ptr[d])
    max_pairs = 0
    for i in range(atom_start, atom_stop):
        max_pairs = max(max_pairs, ptr[i + 1] - ptr[i])
    # positions (_sort_by_species): a centre's pairs with room for the padding
    width = max_pairs + (PAD - 1) * (len(t.gauss_ptr) - 1)
    derivatives = mode != FINGERPRINTS

    # over the positions u of one centre (index last, so loops over u vectorise): D,
    # r^2, decays, R_sr and dR_sr/d(r^2), monomials
    order = np.empty(width, dtype=np.int64)
    species_ptr = np.empty(len(t.gauss_ptr), dtype=np.int64)
    hxyz = np.zeros((3, width))
    r2 = np.empty(width)
    decay = np.empty(width)
    radial = np.zeros((n_probe, n_slots, width))
    dradial = np.zeros((n_probe, n_slots, width))
    mono = np.zeros((n_mono, width))
    moments = np.empty((n_probe, n_slots, max_mono))
    mu = np.empty(len(t.chan_comp))
    dtotal = np.empty(len(t.feat_chan))
    scale = np.empty(n_feat)
    # the polynomials a centre evaluates (BLOCKS: each feature's; JT_PAIRS: one per probe
    # and slot, weighted by x) and the chunk they fill; J_PRODUCT keeps its moments in
    # coef and grad
    n_rows = n_feat if mode == BLOCKS else 1
    n_poly = max(len(t.poly_slot), n_probe * n_slots)
    poly_row = np.empty(n_poly, dtype=np.int64)
    poly_probe = np.empty(n_poly, dtype=np.int64)
    poly_slot = np.empty(n_poly, dtype=np.int64)
    coef = np.empty((n_poly, max_mono))
    grad = np.empty((n_poly, 3, max_mono + 2))  # room for _pair_derivatives' threes
    acc = np.empty((3, CHUNK))
    dout = np.empty((n_rows, 3, CHUNK))
    own_sum = np.empty((n_rows, 3))
    row_set = np.empty(n_rows, dtype=np.bool_)
    wxyz = np.empty((3, width if mode == J_PRODUCT else 0))
    work = np.empty((4, width if mode == J_PRODUCT else 0))

    for i in range(atom_start, atom_stop):
        start = ptr[i]
        npairs = ptr[i + 1] - start
        end = _sort_by_species(nbr_species[start : start + npairs], npairs, order, species_ptr)
        for u in range(end):
            q = order[u]
            if q < 0:  # an unused position: D = 0 and no monomial (M_0 = 0), so it adds nothing
                hxyz[:, u] = 0.0
                r2[u] = 0.0
                mono[0, u] = 0.0
                continue
            p = start + q
            for xyz in range(3):
                hxyz[xyz, u] = vectors[p, xyz]
            r2[u] = vectors[p, 0] * vectors[p, 0] + vectors[p, 1] * vectors[p, 1] + vectors[p, 2] * vectors[p, 2]
            mono[0, u] = 1.0
        _radial(r2, species_ptr, t.gauss_ptr, t.overlap_c2, t.overlap_pref, derivatives, decay, radial, dradial)
        _monomials(hxyz, end, t.mono_exp, t.mono_grad, mono)
        _channels(end, radial, mono, t.slot_d, t.mono_ptr, t.chan_ptr, t.chan_comp, t.comp_piece_ptr, t.piece_slot,
                  t.piece_ptr, t.term_coef, t.term_mono, moments, mu)

        for f in range(n_feat):
            fmode = t.feat_mode[f]
            total = 0.0
            for m in range(t.feat_ptr[f], t.feat_ptr[f + 1]):
                total += channel_term(fmode, t.feat_weight[m], mu[t.feat_chan[m]])
            value, slope = feature_value(fmode, total, t.feat_zero[f])
            scale[f] = slope
            fp[i, f] = value
            # d total / d mu_c for the member channels
            for m in range(t.feat_ptr[f], t.feat_ptr[f + 1]):
                dtotal[m] = channel_slope(fmode, t.feat_weight[m], mu[t.feat_chan[m]])
        if not derivatives:
            continue
        # the centre's own images move with it: no derivative
        for u in range(end):
            q = order[u]
            if q >= 0 and j[start + q] == i:
                radial[:, :, u] = 0.0
                dradial[:, :, u] = 0.0

        if mode == J_PRODUCT:
            for u in range(end):
                q = order[u]
                for xyz in range(3):
                    wxyz[xyz, u] = 0.0 if q < 0 else x[j[start + q], xyz] - x[i, xyz]
            _jacobian_product(t, i, end, wxyz, hxyz, radial, dradial, mono, scale, dtotal, coef, grad, work, out)
            continue

        # the polynomials to evaluate pair by pair, with their coefficients
        n_eval = 0
        if mode == BLOCKS:
            for f in range(n_feat):
                if scale[f] == 0.0:
                    continue
                for k in range(t.poly_ptr[f], t.poly_ptr[f + 1]):
                    poly_row[n_eval] = f
                    poly_probe[n_eval] = t.feat_probe[f]
                    poly_slot[n_eval] = t.poly_slot[k]
                    coef[n_eval, :] = 0.0
                    grad[n_eval, :, :] = 0.0
                    _polynomial(t, k, scale[f], dtotal, n_eval, coef, grad)
                    n_eval += 1
        else:  # JT_PAIRS: sum_f x[i, f] P_fr, one per probe and slot
            for s in range(n_probe):
                for r in range(n_slots):
                    k = s * n_slots + r
                    poly_row[k] = 0
                    poly_probe[k] = s
                    poly_slot[k] = r
                    coef[k, :] = 0.0
                    grad[k, :, :] = 0.0
            n_eval = n_probe * n_slots
            for f in range(n_feat):
                if scale[f] == 0.0 or x[i, f] == 0.0:
                    continue
                s = t.feat_probe[f]
                for k in range(t.poly_ptr[f], t.poly_ptr[f + 1]):
                    _polynomial(t, k, x[i, f] * scale[f], dtotal, s * n_slots + t.poly_slot[k], coef, grad)
        own = 0
        if mode == BLOCKS:
            own = block_ptr[i]
            # the blocks the pairs add to, zeroed first in memory order: a stream the
            # hardware prefetches, after which the pairs' additions (in the neighbour
            # list's order) find them in cache
            fprimes[own + 1 : block_ptr[i + 1]] = 0.0
        _pair_derivatives(mode, i, start, end, order, j, pair_block, own, n_eval, poly_row, poly_probe,
                          poly_slot, coef, grad, t.slot_d, t.mono_ptr, hxyz, radial, dradial, mono, acc, dout, own_sum,
                          row_set, fprimes, out)
