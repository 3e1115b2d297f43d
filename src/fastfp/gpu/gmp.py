"""GMP and GMPOrderNorm fingerprints and derivatives on the GPU.

The mathematics and the tables are those of the CPU kernel (:mod:`fastfp.kernels.gmp`;
the descriptor's :class:`~fastfp.kernels.tables.GMPTables`); the overlap factors and
the feature formulas are the shared ones of :mod:`fastfp.kernels.formulas`.

Work split: one GPU thread per (centre atom, probe sigma). Every feature draws on the
channels of one probe, so a thread owns a disjoint set of fingerprint columns and of
derivative entries, and no two threads write the same place (no atomics, results do
not depend on scheduling). A thread makes two passes over its centre's pairs: the first
sums the channels mu_c of its probe, then its features follow; the second (with
derivatives) recomputes each pair's radial and angular parts and adds
d feature / dD_q to the pair's block, and minus the sum to the centre's own block.
Pairs with j = i (the self pair and images of i) add to and subtract from the own
block alike and are skipped.
"""

from __future__ import annotations

import functools
import math

from numba import cuda, float64

from ..kernels.formulas import channel_slope, channel_term, feature_value
from .device import launch

SELF_PAIRS = True  # an atom's own pseudodensity counts


@cuda.jit(device=True)
def _pair(q, s, vectors, nbr_species, tables, radial, dradial, hx, hy, hz):
    """Pair q seen by probe s: R_sr (``radial[r]``) and dR_sr/d(r^2) (``dradial[r]``),
    the powers x^a, y^a, z^a (a < ``len(hx)``) of its vector D; returns D."""
    gauss_ptr, c2tab, pref = tables.gauss_ptr, tables.overlap_c2, tables.overlap_pref
    x = vectors[q, 0]
    y = vectors[q, 1]
    z = vectors[q, 2]
    r2 = x * x + y * y + z * z
    t = nbr_species[q]
    for r in range(pref.shape[2]):
        radial[r] = 0.0
        dradial[r] = 0.0
    for g in range(gauss_ptr[t], gauss_ptr[t + 1]):
        c2 = c2tab[s, g]
        decay = math.exp(c2 * r2)
        for r in range(pref.shape[2]):
            f = pref[s, g, r] * decay
            radial[r] += f
            dradial[r] += f * c2
    hx[0] = 1.0
    hy[0] = 1.0
    hz[0] = 1.0
    for a in range(1, len(hx)):
        hx[a] = hx[a - 1] * x
        hy[a] = hy[a - 1] * y
        hz[a] = hz[a - 1] * z
    return x, y, z


@cuda.jit(device=True)
def _piece(p, tables, hx, hy, hz, gradient):
    """Q_p(D) and, with ``gradient`` (else zeros), its gradient (x, y, z) from the powers of D."""
    piece_ptr, term_coef, term_exp = tables.piece_ptr, tables.term_coef, tables.term_exp
    v = 0.0
    gx = 0.0
    gy = 0.0
    gz = 0.0
    for m in range(piece_ptr[p], piece_ptr[p + 1]):
        c = term_coef[m]
        a = term_exp[m, 0]
        b = term_exp[m, 1]
        e = term_exp[m, 2]
        v += c * hx[a] * hy[b] * hz[e]
        if not gradient:
            continue
        if a > 0:
            gx += c * a * hx[a - 1] * hy[b] * hz[e]
        if b > 0:
            gy += c * b * hx[a] * hy[b - 1] * hz[e]
        if e > 0:
            gz += c * e * hx[a] * hy[b] * hz[e - 1]
    return v, gx, gy, gz


@functools.lru_cache(maxsize=None)
def kernel(max_chan: int, max_feat: int, n_slots: int, n_powers: int):
    """The GMP kernel for at most ``max_chan`` channels and ``max_feat`` features per
    probe, ``n_slots`` slots and term exponents below ``n_powers`` (sizes of per-thread
    arrays, fixed at compile time)."""

    def gmp(ptr, pair_block, block_ptr, nbr_species, vectors, tables, derivatives, fp, fprimes):
        t = tables
        n_probe = len(t.chan_ptr) - 1
        thread = cuda.grid(1)
        i = thread // n_probe
        if i >= len(ptr) - 1:
            return
        s = thread - i * n_probe
        mu = cuda.local.array(max_chan, float64)
        scale = cuda.local.array(max_feat, float64)
        own = cuda.local.array((max_feat, 3), float64)
        radial = cuda.local.array(n_slots, float64)
        dradial = cuda.local.array(n_slots, float64)
        hx = cuda.local.array(n_powers, float64)
        hy = cuda.local.array(n_powers, float64)
        hz = cuda.local.array(n_powers, float64)
        c0 = t.chan_ptr[s]
        n_chan = t.chan_ptr[s + 1] - c0
        f0 = t.probe_feat_ptr[s]
        n_feat = t.probe_feat_ptr[s + 1] - f0

        # pass 1: the channels of probe s, then its features
        for c in range(n_chan):
            mu[c] = 0.0
        for q in range(ptr[i], ptr[i + 1]):
            x, y, z = _pair(q, s, vectors, nbr_species, t, radial, dradial, hx, hy, hz)
            for c in range(n_chan):
                k = t.chan_comp[c0 + c]
                total = 0.0
                for p in range(t.comp_piece_ptr[k], t.comp_piece_ptr[k + 1]):
                    v, gx, gy, gz = _piece(p, t, hx, hy, hz, False)
                    total += radial[t.piece_slot[p]] * v
                mu[c] += total
        for a in range(n_feat):
            fi = t.probe_feat[f0 + a]
            mode = t.feat_mode[fi]
            total = 0.0
            for m in range(t.feat_ptr[fi], t.feat_ptr[fi + 1]):
                total += channel_term(mode, t.feat_weight[m], mu[t.feat_chan[m] - c0])
            value, slope = feature_value(mode, total, t.feat_zero[fi])
            fp[i, fi] = value
            scale[a] = slope
        if not derivatives:
            return

        # pass 2: d feature / dD_q into the pair's block, minus the sum into the own block
        own_block = block_ptr[i]
        for a in range(n_feat):
            for xyz in range(3):
                own[a, xyz] = 0.0
        for q in range(ptr[i], ptr[i + 1]):
            blk = pair_block[q]
            if blk == own_block:
                continue
            x, y, z = _pair(q, s, vectors, nbr_species, t, radial, dradial, hx, hy, hz)
            for a in range(n_feat):
                if scale[a] == 0.0:
                    continue
                fi = t.probe_feat[f0 + a]
                mode = t.feat_mode[fi]
                dx = 0.0
                dy = 0.0
                dz = 0.0
                for m in range(t.feat_ptr[fi], t.feat_ptr[fi + 1]):
                    c = t.feat_chan[m]
                    w = channel_slope(mode, t.feat_weight[m], mu[c - c0]) * scale[a]
                    k = t.chan_comp[c]
                    for p in range(t.comp_piece_ptr[k], t.comp_piece_ptr[k + 1]):
                        v, gx, gy, gz = _piece(p, t, hx, hy, hz, True)
                        r = t.piece_slot[p]
                        two_dr_v = 2.0 * dradial[r] * v
                        dx += w * (radial[r] * gx + two_dr_v * x)
                        dy += w * (radial[r] * gy + two_dr_v * y)
                        dz += w * (radial[r] * gz + two_dr_v * z)
                fprimes[blk, fi, 0] += dx
                fprimes[blk, fi, 1] += dy
                fprimes[blk, fi, 2] += dz
                own[a, 0] -= dx
                own[a, 1] -= dy
                own[a, 2] -= dz
        for a in range(n_feat):
            fi = t.probe_feat[f0 + a]
            for xyz in range(3):
                fprimes[own_block, fi, xyz] = own[a, xyz]

    return cuda.jit(gmp)


def run(xp, tables, species, pairs, pair_block, block_ptr, derivatives, fp, fprimes) -> None:
    """Fill ``fp`` (n_atoms, n_features) and, with ``derivatives``, ``fprimes``
    (n_blocks, n_features, 3), both zeroed, from the
    :class:`~fastfp.kernels.tables.GMPTables` ``tables`` of a GMP-family descriptor;
    ``species`` (n_atoms,) are the atoms' indices into its ``elements``."""
    gmp = kernel(tables.max_channels_per_probe, tables.max_features_per_probe, tables.n_slots,
                 tables.max_degree + 1)
    launch(gmp, fp.shape[0] * tables.n_probes, pairs.ptr, pair_block, block_ptr, species[pairs.j], pairs.vectors,
           tables.on(xp), derivatives, fp, fprimes)
