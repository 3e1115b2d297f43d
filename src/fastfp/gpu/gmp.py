"""GMP-family fingerprints (GMPOrderNorm, GMP) and derivatives on the GPU.

The mathematics is :mod:`fastfp.kernels.gmp`'s, the per-pair formulas the shared ones of
:mod:`fastfp.kernels.formulas` (:func:`~fastfp.kernels.formulas.gmp_radial`,
:func:`~fastfp.kernels.formulas.gmp_pieces`, ...), the tables the descriptor's
:class:`~fastfp.kernels.tables.GMPTables`.

Work split: one warp per centre atom, its lanes on neighbouring pairs (a chunk of up to 32
consecutive pairs at a time), several warps per thread block sharing the per-pair tables
(overlap factors, polynomial terms, derivative terms) copied into shared memory. Two
passes over the centre's pairs:

1. Each lane computes its pair's radial factors R_sr for every probe (one exp per probe
   and Gaussian) and its pieces Q_p, into a column of the warp's *stage* in shared
   memory; then the lanes switch to channels and add the chunk's columns into mu_c (each
   lane owns its channels: no atomics). The lanes then compute the features, one each,
   write the fingerprint row, and leave d feature / d mu_c (times the feature's slope) in
   shared memory.
2. With derivatives, each lane computes its pair's R_sr, dR_sr/dr^2, Q_p and grad Q_p and
   contracts them into d feature / dD in its stage column; :mod:`.blocks` writes the
   chunk's blocks, coalesced, and the centre's own block at the end.

The modes of :mod:`fastfp.kernels.blocks` that never store a block
(:func:`product`, for :class:`fastfp.gpu.jacobian.DeviceJacobian`) run pass 1 alike,
then pass 2 with the pair's d feature / dD contracted where it arises
(:func:`~fastfp.kernels.formulas.gmp_feature_fprime`, a feature at a time): for J^T x
(``JT_PAIRS``) x[i, f] is folded into the weights d feature / d mu_c and each lane
writes its pair's vector sum_f x[i, f] dG_if/dD (3 values); for J x (``J_PRODUCT``)
each lane puts its pair's dG_if/dD . (x[j] - x[i]) in its stage column (n_features
rows) and the lanes, a feature each, add the columns as the own block's sums are added.

Pass 2 computes the pair's terms again rather than keeping pass 1's: kept, they would be
2 (n_probes n_slots + 4 n_pieces) values per pair (960 bytes for the benchmark
descriptor in float64) in device memory or in a shared memory that would hold a few
warps per multiprocessor, against the per-pair block of 3 n_features values this kernel
exists to write. Results do not depend on scheduling (every sum has a fixed order).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from numba import cuda, int32

from ..kernels.blocks import BLOCKS, FINGERPRINTS, J_PRODUCT, JT_PAIRS
from ..kernels.formulas import (channel_slope, channel_term, feature_value, gmp_channel_overlap, gmp_feature_fprime,
                                gmp_pair_fprime, gmp_pieces, gmp_radial, like)
from .blocks import WARP, fit_shared, flush_chunk, subtract_columns, sync_warp, write_own
from .device import launch, on_device

SELF_PAIRS = True  # an atom's own pseudodensity counts


class Sizes(NamedTuple):
    """The sizes a GMP kernel is compiled for (its shared and local arrays)."""

    n_probes: int
    n_gaussians: int
    n_slots: int
    n_pieces: int
    n_terms: int
    n_powers: int  # largest exponent + 1
    n_elements: int
    n_channels: int
    n_features: int
    n_members: int
    n_polys: int
    n_poly_terms: int
    real: str  # "float64" or "float32": the type the kernel computes in
    warps: int  # centres per thread block
    chunk: int  # pairs per chunk (stage columns): the lanes computing a pair each

    @property
    def stage_rows(self) -> int:
        """Rows of a warp's stage: pass 1's R_sr and Q_p, pass 2's d feature / dD."""
        return max(self.n_probes * self.n_slots + self.n_pieces, 3 * self.n_features)

    @classmethod
    def of(cls, tables, real) -> "Sizes":
        """The sizes for the host ``tables`` computing in ``real``
        (:func:`~fastfp.gpu.blocks.fit_shared` chooses warps and chunk)."""
        n_probes, n_gaussians, n_slots = tables.overlap_pref.shape
        n_terms, n_pieces, n_elements = len(tables.term_coef), len(tables.piece_slot), len(tables.gauss_ptr) - 1
        n_channels, n_features, n_members = len(tables.chan_comp), tables.n_features, len(tables.feat_chan)
        n_polys, n_poly_terms = len(tables.poly_slot), len(tables.poly_term_piece)
        item = np.dtype(real).itemsize
        table_bytes = (item * (n_probes * n_gaussians * (1 + n_slots) + n_terms)
                       + 4 * (3 * n_terms + 2 * n_pieces + n_elements + 2 * n_features + n_channels + 2 * n_polys
                              + 2 * n_poly_terms + 4))
        stage_rows = max(n_probes * n_slots + n_pieces, 3 * n_features)
        warps, chunk = fit_shared(table_bytes, item * (n_channels + n_members + 6 * n_features), item * stage_rows,
                                  f"GMP descriptor ({n_features} features, {np.dtype(real).name})")
        return cls(n_probes, n_gaussians, n_slots, n_pieces, n_terms, tables.max_degree + 1, n_elements, n_channels,
                   n_features, n_members, n_polys, n_poly_terms, np.dtype(real).name, warps, chunk)


@cuda.jit(device=True)
def _copy(dst, src, thread, n_threads):
    for k in range(thread, len(dst), n_threads):
        dst[k] = src[k]


@cuda.jit(device=True)
def _pair_terms(q, vectors, species, pair_j, c2, pref, n_gauss, n_slots, gauss_ptr, piece_ptr, coef, powers, hx, hy,
                hz, radial, dradial, value, grad, derivatives):
    """The terms of pair ``q``: :func:`~fastfp.kernels.formulas.gmp_radial` into
    ``radial`` (and ``dradial``), :func:`~fastfp.kernels.formulas.gmp_pieces` into
    ``value`` (and ``grad``), with ``derivatives``. Returns its vector D."""
    x = vectors[q, 0]
    y = vectors[q, 1]
    z = vectors[q, 2]
    e = species[pair_j[q]]
    gmp_radial(c2, pref, n_gauss, n_slots, gauss_ptr[e], gauss_ptr[e + 1], x * x + y * y + z * z, radial, dradial,
               derivatives)
    gmp_pieces(x, y, z, piece_ptr, coef, powers, hx, hy, hz, value, grad, derivatives)
    return x, y, z


@functools.lru_cache(maxsize=None)
def kernel(sizes: Sizes):
    """The GMP kernel for ``sizes`` (their arrays are fixed at compile time)."""
    real = getattr(np, sizes.real)
    W = sizes.warps
    CH = sizes.chunk
    ROWS = sizes.stage_rows
    N_GAUSS = sizes.n_gaussians
    N_SLOTS = sizes.n_slots
    N_PS = sizes.n_probes * N_SLOTS
    N_GAUSS_ALL = sizes.n_probes * N_GAUSS
    N_PREF = N_GAUSS_ALL * N_SLOTS
    N_TERMS = sizes.n_terms
    N_PIECES = sizes.n_pieces
    N_POW = sizes.n_powers
    N_EL = sizes.n_elements
    N_CHAN = sizes.n_channels
    N_FEAT = sizes.n_features
    N_MEM = sizes.n_members
    N_POLY = sizes.n_polys
    N_PT = sizes.n_poly_terms
    WIDTH = 3 * N_FEAT
    N_OWN = -(-WIDTH // WARP)
    # array shapes as single names: numba takes a shared or local array's shape only as a constant
    N_POWERS = 3 * N_TERMS
    N_PIECE_PTR = N_PIECES + 1
    N_GRAD = 3 * N_PIECES
    N_GAUSS_PTR = N_EL + 1
    N_POLY_PTR = N_FEAT + 1
    N_PT_PTR = N_POLY + 1
    STAGE = (W * ROWS, CH + 1)
    N_MU = W * N_CHAN
    N_WEIGHT = W * N_MEM
    N_CARRY = W * 2 * WIDTH

    def gmp(ptr, pair_j, vectors, species, pair_block, block_pair, block_ptr, tables, mode, fp, fprimes, x, out):
        t = tables
        thread = cuda.threadIdx.x
        lane = thread % WARP
        w = thread // WARP
        # the per-pair tables, shared by the block's warps
        c2 = cuda.shared.array(N_GAUSS_ALL, real)
        pref = cuda.shared.array(N_PREF, real)
        coef = cuda.shared.array(N_TERMS, real)
        powers = cuda.shared.array(N_POWERS, int32)
        piece_ptr = cuda.shared.array(N_PIECE_PTR, int32)
        piece_slot = cuda.shared.array(N_PIECES, int32)
        gauss_ptr = cuda.shared.array(N_GAUSS_PTR, int32)
        chan_probe = cuda.shared.array(N_CHAN, int32)
        feat_probe = cuda.shared.array(N_FEAT, int32)
        poly_ptr = cuda.shared.array(N_POLY_PTR, int32)
        poly_slot = cuda.shared.array(N_POLY, int32)
        pt_ptr = cuda.shared.array(N_PT_PTR, int32)
        pt_piece = cuda.shared.array(N_PT, int32)
        pt_member = cuda.shared.array(N_PT, int32)
        # per warp: the stage, mu_c, d feature / d mu_c of each member, two carry rows
        stage = cuda.shared.array(STAGE, real)
        mu = cuda.shared.array(N_MU, real)
        weight = cuda.shared.array(N_WEIGHT, real)
        carry = cuda.shared.array(N_CARRY, real)
        # per lane: one pair's terms
        hx = cuda.local.array(N_POW, real)
        hy = cuda.local.array(N_POW, real)
        hz = cuda.local.array(N_POW, real)
        radial = cuda.local.array(N_PS, real)
        dradial = cuda.local.array(N_PS, real)
        value = cuda.local.array(N_PIECES, real)
        grad = cuda.local.array(N_GRAD, real)
        own = cuda.local.array(N_OWN, real)

        n_threads = cuda.blockDim.x
        for k in range(thread, N_GAUSS_ALL, n_threads):
            c2[k] = t.overlap_c2[k // N_GAUSS, k % N_GAUSS]
        for k in range(thread, N_PREF, n_threads):
            g = k // N_SLOTS
            pref[k] = t.overlap_pref[g // N_GAUSS, g % N_GAUSS, k % N_SLOTS]
        for k in range(thread, 3 * N_TERMS, n_threads):
            powers[k] = t.term_exp[k // 3, k % 3]
        _copy(coef, t.term_coef, thread, n_threads)
        _copy(piece_ptr, t.piece_ptr, thread, n_threads)
        _copy(piece_slot, t.piece_slot, thread, n_threads)
        _copy(gauss_ptr, t.gauss_ptr, thread, n_threads)
        _copy(feat_probe, t.feat_probe, thread, n_threads)
        _copy(poly_ptr, t.poly_ptr, thread, n_threads)
        _copy(poly_slot, t.poly_slot, thread, n_threads)
        _copy(pt_ptr, t.poly_term_ptr, thread, n_threads)
        _copy(pt_piece, t.poly_term_piece, thread, n_threads)
        _copy(pt_member, t.poly_term_member, thread, n_threads)
        for s in range(thread, len(t.chan_ptr) - 1, n_threads):
            for c in range(t.chan_ptr[s], t.chan_ptr[s + 1]):
                chan_probe[c] = s
        cuda.syncthreads()

        i = cuda.blockIdx.x * W + w
        if i >= len(ptr) - 1:
            return
        start = ptr[i]
        end = ptr[i + 1]
        row0 = w * ROWS
        zero = like(coef[0], 0.0)

        # pass 1: mu_c, a chunk of pairs at a time
        for c in range(lane, N_CHAN, WARP):
            mu[w * N_CHAN + c] = zero
        for p0 in range(start, end, CH):
            n_cols = min(CH, end - p0)
            if lane < n_cols:
                _pair_terms(p0 + lane, vectors, species, pair_j, c2, pref, N_GAUSS, N_SLOTS, gauss_ptr, piece_ptr,
                            coef, powers, hx, hy, hz, radial, dradial, value, grad, False)
                for k in range(N_PS):
                    stage[row0 + k, lane] = radial[k]
                for p in range(N_PIECES):
                    stage[row0 + N_PS + p, lane] = value[p]
            sync_warp()
            for c in range(lane, N_CHAN, WARP):
                total = zero
                for col in range(n_cols):
                    total += gmp_channel_overlap(chan_probe[c], t.chan_comp[c], t.comp_piece_ptr, piece_slot,
                                                 N_SLOTS, stage, row0, row0 + N_PS, col)
                mu[w * N_CHAN + c] += total
            sync_warp()

        # the features, a lane each: the fingerprint row, d feature / d mu_c
        for f in range(lane, N_FEAT, WARP):
            fmode = t.feat_mode[f]
            total = zero
            for m in range(t.feat_ptr[f], t.feat_ptr[f + 1]):
                total += channel_term(fmode, t.feat_weight[m], mu[w * N_CHAN + t.feat_chan[m]])
            feature, slope = feature_value(fmode, total, t.feat_zero[f])
            if mode == JT_PAIRS:  # sum_f x[i, f] d feature / dD: x folded into the weights
                slope *= x[i, f]
            elif mode != J_PRODUCT:
                fp[i, f] = feature
            for m in range(t.feat_ptr[f], t.feat_ptr[f + 1]):
                weight[w * N_MEM + m] = channel_slope(fmode, t.feat_weight[m], mu[w * N_CHAN + t.feat_chan[m]]) * slope
        if mode == FINGERPRINTS:
            return
        sync_warp()
        for k in range(N_OWN):
            own[k] = zero

        if mode == JT_PAIRS:  # a pair per lane: its vector sum_f x[i, f] d feature / dD
            for q in range(start + lane, end, WARP):
                vx = zero
                vy = zero
                vz = zero
                if pair_j[q] != i:  # the centre's own images move with it: no derivative
                    dx, dy, dz = _pair_terms(q, vectors, species, pair_j, c2, pref, N_GAUSS, N_SLOTS, gauss_ptr,
                                             piece_ptr, coef, powers, hx, hy, hz, radial, dradial, value, grad, True)
                    for f in range(N_FEAT):
                        gx, gy, gz = gmp_feature_fprime(f, dx, dy, dz, weight, w * N_MEM, poly_ptr, poly_slot, pt_ptr,
                                                        pt_piece, pt_member, feat_probe, N_SLOTS, radial, dradial,
                                                        value, grad)
                        vx += gx
                        vy += gy
                        vz += gz
                out[q, 0] = vx
                out[q, 1] = vy
                out[q, 2] = vz
            return

        if mode == J_PRODUCT:  # a chunk of pairs at a time: d feature / dD . (x[j] - x[i]), summed per feature
            for p0 in range(start, end, CH):
                n_cols = min(CH, end - p0)
                if lane < n_cols:
                    q = p0 + lane
                    j = pair_j[q]
                    if j == i:
                        for f in range(N_FEAT):
                            stage[row0 + f, lane] = zero
                    else:
                        dx, dy, dz = _pair_terms(q, vectors, species, pair_j, c2, pref, N_GAUSS, N_SLOTS, gauss_ptr,
                                                 piece_ptr, coef, powers, hx, hy, hz, radial, dradial, value, grad,
                                                 True)
                        wx = x[j, 0] - x[i, 0]
                        wy = x[j, 1] - x[i, 1]
                        wz = x[j, 2] - x[i, 2]
                        for f in range(N_FEAT):
                            gx, gy, gz = gmp_feature_fprime(f, dx, dy, dz, weight, w * N_MEM, poly_ptr, poly_slot,
                                                            pt_ptr, pt_piece, pt_member, feat_probe, N_SLOTS, radial,
                                                            dradial, value, grad)
                            stage[row0 + f, lane] = gx * wx + gy * wy + gz * wz
                sync_warp()
                for k in range(N_OWN):
                    f = lane + WARP * k
                    if f < N_FEAT:
                        total = stage[row0 + f, 0]
                        for col in range(1, n_cols):
                            total += stage[row0 + f, col]
                        own[k] += total
                sync_warp()
            for k in range(N_OWN):
                f = lane + WARP * k
                if f < N_FEAT:
                    out[i, f] = own[k]
            return

        # pass 2: d feature / dD of each pair into the stage, then the chunk's blocks
        own_block = block_ptr[i]
        chunk = 0
        for p0 in range(start, end, CH):
            n_cols = min(CH, end - p0)
            if lane < n_cols:
                q = p0 + lane
                if pair_block[q] == own_block:
                    for k in range(WIDTH):
                        stage[row0 + k, lane] = zero
                else:
                    dx, dy, dz = _pair_terms(q, vectors, species, pair_j, c2, pref, N_GAUSS, N_SLOTS, gauss_ptr,
                                             piece_ptr, coef, powers, hx, hy, hz, radial, dradial, value, grad, True)
                    gmp_pair_fprime(dx, dy, dz, weight, w * N_MEM, poly_ptr, poly_slot, pt_ptr, pt_piece, pt_member,
                                    feat_probe, N_SLOTS, radial, dradial, value, grad, stage, row0, lane)
            sync_warp()
            subtract_columns(stage, row0, WIDTH, n_cols, lane, own)
            flush_chunk(stage, row0, WIDTH, p0, n_cols, lane, pair_block, block_pair, own_block, fprimes, carry,
                        (2 * w + chunk % 2) * WIDTH, (2 * w + 1 - chunk % 2) * WIDTH)
            sync_warp()
            chunk += 1
        write_own(fprimes, own_block, WIDTH, lane, own)

    return cuda.jit(gmp)


def run(xp, tables, species, pairs, derivatives, fp, fprimes) -> None:
    """Fill ``fp`` (n_atoms, n_features) and, with ``derivatives``, ``fprimes``
    (n_blocks, n_features, 3), computing in their type (float64 or float32), from the
    :class:`~fastfp.kernels.tables.GMPTables` ``tables`` of a GMP-family descriptor;
    ``species`` (n_atoms,) are the atoms' indices into its ``elements``, ``pairs`` a
    :class:`~fastfp.gpu.neighbors.DevicePairs` (with blocks if ``derivatives``). Raises
    ``ValueError`` for a descriptor whose kernel would not fit in shared memory."""
    nothing = xp.empty((0, 0), dtype=fp.dtype)
    _launch(xp, tables, species, pairs, BLOCKS if derivatives else FINGERPRINTS, fp, fprimes.reshape(-1), nothing,
            nothing)


def product(xp, tables, species, pairs, x, out, transpose: bool) -> None:
    """A product with J = d fingerprints / d positions, recomputed pair by pair (the
    modes of :mod:`fastfp.kernels.blocks`; no block stored), in the type of ``x`` and
    ``out``: with ``transpose`` (``JT_PAIRS``) ``out[p]`` (n_pairs, 3) = sum_f x[i, f]
    dG_if/dD_p for every pair p of centre i, ``x`` (n_atoms, n_features) (zero for the
    centre's own images; :func:`fastfp.gpu.jacobian.sum_pair_vectors` makes J^T x of
    them), else (``J_PRODUCT``) ``out`` (n_atoms, n_features) = J x, ``x`` (n_atoms, 3).
    Other arguments as :func:`run`; ``pairs`` need no blocks."""
    _launch(xp, tables, species, pairs, JT_PAIRS if transpose else J_PRODUCT, xp.empty((0, 0), dtype=x.dtype),
            xp.empty(0, dtype=x.dtype), x, out)


def _launch(xp, tables, species, pairs, mode, fp, fprimes, x, out) -> None:
    sizes = Sizes.of(tables, fp.dtype)
    launch(kernel(sizes), (len(pairs.ptr) - 1) * WARP, pairs.ptr, pairs.j, pairs.vectors, species, pairs.pair_block,
           pairs.block_pair, pairs.block_ptr, on_device(xp, tables, fp.dtype), int(mode), fp, fprimes, x, out,
           threads_per_block=sizes.warps * WARP)
