"""Gaussian (Behler-Parrinello) symmetry functions and derivatives on the GPU.

The mathematics is :mod:`fastfp.kernels.gaussian`'s, the per-pair and per-triplet
formulas the shared ones of :mod:`fastfp.kernels.formulas`, the tables the descriptor's
:class:`~fastfp.kernels.tables.GaussianTables`.

Work split: one warp per centre atom, several per thread block. The lanes first compute
each pair's terms once (distance, f_c, (df_c/dr) / r, exp(-eta r^2) of each radial
group) into device arrays; then they take the pairs in chunks of consecutive pairs, one
per lane. A lane adds its pair's G2 terms and the triplets it makes with every other pair
of the centre: the fingerprint terms of the triplets with the later pair (each triplet
once), the derivative by its own pair vector of all of them, into its column of the
warp's stage in shared memory; :mod:`.blocks` writes the chunk's blocks, coalesced. A
triplet's terms are computed by the lanes of both its pairs, so that each lane writes
only its own column (no atomics; results do not depend on scheduling). The lanes' sums
of the fingerprint row are added at the end.

The modes of :mod:`fastfp.kernels.blocks` that never store a block (:func:`product`,
for :class:`fastfp.gpu.jacobian.DeviceJacobian`) fill the stage alike and contract it
where a block would be written: for J^T x each lane its column with x[i] (its pair's
vector sum_f x[i, f] d feature / dD), for J x the lanes, a feature each, every column
with its pair's x[j] - x[i].
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from numba import cuda

from ..kernels.blocks import BLOCKS, FINGERPRINTS, J_PRODUCT, JT_PAIRS
from ..kernels.formulas import (angular_term, cutoff_function, g2_term, like, triplet_coefficients,
                                triplet_geometry, triplet_radial)
from .blocks import WARP, fit_shared, flush_chunk, subtract_columns, sync_warp, write_own
from .device import check_room, launch, on_device

SELF_PAIRS = False


class Sizes(NamedTuple):
    """The sizes a Gaussian kernel is compiled for (its shared and local arrays)."""

    n_features: int
    max_radial: int  # radial groups of any element (at least 1)
    max_angular: int  # angular groups of any element (at least 1)
    real: str  # "float64" or "float32": the type the kernel computes in
    warps: int  # centres per thread block
    chunk: int  # pairs per chunk (stage columns)

    @classmethod
    def of(cls, tables, n_features: int, real) -> "Sizes":
        """The sizes for the host ``tables`` of a descriptor with ``n_features`` columns,
        computing in ``real`` (:func:`~fastfp.gpu.blocks.fit_shared` chooses warps and chunk)."""
        item = np.dtype(real).itemsize
        warps, chunk = fit_shared(0, item * 6 * n_features, item * 3 * n_features,
                                  f"Gaussian descriptor ({n_features} features, {np.dtype(real).name})")
        return cls(n_features, tables.max_radial_groups, tables.max_angular_groups, np.dtype(real).name, warps, chunk)


@functools.lru_cache(maxsize=None)
def kernel(sizes: Sizes):
    """The Gaussian kernel for ``sizes`` (their arrays are fixed at compile time)."""
    real = getattr(np, sizes.real)
    W = sizes.warps
    CH = sizes.chunk
    N_FEAT = sizes.n_features
    WIDTH = 3 * N_FEAT
    N_OWN = -(-WIDTH // WARP)
    # array shapes as single names: numba takes a shared or local array's shape only as a constant
    STAGE = (W * WIDTH, CH + 1)
    N_CARRY = W * 2 * WIDTH
    N_RAD = sizes.max_radial
    N_ANG = sizes.max_angular

    def gaussian(ptr, pair_j, vectors, species, pair_block, block_pair, block_ptr, tables, mode,
                 dist, fc, dfc_r, expo, fp, fprimes, x, out):
        t = tables
        thread = cuda.threadIdx.x
        lane = thread % WARP
        w = thread // WARP
        stage = cuda.shared.array(STAGE, real)
        carry = cuda.shared.array(N_CARRY, real)
        rad = cuda.local.array(N_RAD, real)
        rad_j = cuda.local.array(N_RAD, real)
        rad_k = cuda.local.array(N_RAD, real)
        rad_jk = cuda.local.array(N_RAD, real)
        ang = cuda.local.array(N_ANG, real)
        dang = cuda.local.array(N_ANG, real)
        row = cuda.local.array(N_FEAT, real)  # the lane's share of the fingerprint row
        own = cuda.local.array(N_OWN, real)

        i = cuda.blockIdx.x * W + w
        if i >= len(ptr) - 1:
            return
        start = ptr[i]
        end = ptr[i + 1]
        row0 = w * WIDTH
        e = species[i]
        rc = t.cutoffs[e]
        zero = like(rc, 0.0)
        n_sp = len(t.cutoffs)
        r0 = t.rad_ptr[e]
        n_rad = t.rad_ptr[e + 1] - r0
        a0 = t.ang_ptr[e]
        n_ang = t.ang_ptr[e + 1] - a0
        only_g4 = True
        for g in range(n_rad):
            only_g4 = only_g4 and t.rad_g4[r0 + g]

        # each pair's terms, once
        for q in range(start + lane, end, WARP):
            dx = vectors[q, 0]
            dy = vectors[q, 1]
            dz = vectors[q, 2]
            r = math.sqrt(dx * dx + dy * dy + dz * dz)
            dist[q] = r
            if r < rc:
                f, df = cutoff_function(r, rc, t.cutoff_kind, t.cutoff_gamma)
                fc[q] = f
                dfc_r[q] = df / r
                for g in range(n_rad):
                    expo[q, g] = math.exp(-t.rad_eta[r0 + g] * r * r)
        sync_warp()

        for k in range(N_FEAT):
            row[k] = zero
        for k in range(N_OWN):
            own[k] = zero
        derivatives = mode != FINGERPRINTS
        own_block = -1
        if mode == BLOCKS:
            own_block = block_ptr[i]
        chunk = 0
        for p0 in range(start, end, CH):
            n_cols = min(CH, end - p0)
            if lane < n_cols:
                q = p0 + lane
                if derivatives:
                    for k in range(WIDTH):
                        stage[row0 + k, lane] = zero
                moves = derivatives and pair_j[q] != i  # pairs of i with itself do not
                rj = dist[q]
                tj = species[pair_j[q]]
                if rj < rc:
                    key = e * n_sp + tj
                    for m in range(t.g2_ptr[key], t.g2_ptr[key + 1]):
                        value, slope = g2_term(t.g2_eta[m], t.g2_rs[m], rj, fc[q], dfc_r[q] * rj)
                        col = t.g2_col[m]
                        row[col] += value
                        if moves:
                            for xyz in range(3):
                                stage[row0 + 3 * col + xyz, lane] += slope * vectors[q, xyz]
                    for pk in range(start, end):
                        rk = dist[pk]
                        if pk == q or rk >= rc:
                            continue
                        tk = species[pair_j[pk]]
                        key = (e * n_sp + min(tj, tk)) * n_sp + max(tj, tk)
                        if t.tri_ptr[key] == t.tri_ptr[key + 1]:
                            continue
                        pa = min(q, pk)  # the triplet as the CPU kernel takes it: pair a before pair b
                        pb = max(q, pk)
                        ra = dist[pa]
                        rb = dist[pb]
                        rab, rab2, cos, fcab, dfcab = triplet_geometry(vectors, pa, pb, ra, rb, rc, only_g4,
                                                                       t.cutoff_kind, t.cutoff_gamma)
                        if rab < zero:
                            continue
                        for g in range(n_rad):
                            rad[g], rad_j[g], rad_k[g], rad_jk[g] = triplet_radial(
                                t.rad_g4[r0 + g], t.rad_eta[r0 + g], expo[pa, g] * expo[pb, g], fc[pa], fc[pb],
                                dfc_r[pa], dfc_r[pb], rab, rab2, fcab, dfcab,
                            )
                        for h in range(n_ang):
                            ang[h], dang[h] = angular_term(t.ang_zeta[a0 + h], t.ang_lambda[a0 + h],
                                                           t.ang_norm[a0 + h], t.ang_int_power[a0 + h], cos)
                        for m in range(t.tri_ptr[key], t.tri_ptr[key + 1]):
                            col = t.tri_col[m]
                            g = t.tri_rad[m] - r0
                            h = t.tri_ang[m] - a0
                            if pk > q:
                                row[col] += ang[h] * rad[g]
                            if not moves:
                                continue
                            ca, cb, cx = triplet_coefficients(ang[h], dang[h], rad[g], rad_j[g], rad_k[g], rad_jk[g],
                                                              cos, ra, rb)
                            if q == pa:  # d/dD_a = c_a D_a + c_x D_b, d/dD_b = c_x D_a + c_b D_b
                                cb = cx
                            else:
                                ca = cx
                            for xyz in range(3):
                                stage[row0 + 3 * col + xyz, lane] += ca * vectors[pa, xyz] + cb * vectors[pb, xyz]
            sync_warp()
            if mode == BLOCKS:
                subtract_columns(stage, row0, WIDTH, n_cols, lane, own)
                flush_chunk(stage, row0, WIDTH, p0, n_cols, lane, pair_block, block_pair, own_block, fprimes, carry,
                            (2 * w + chunk % 2) * WIDTH, (2 * w + 1 - chunk % 2) * WIDTH)
                sync_warp()
            elif mode == JT_PAIRS:  # each lane its pair's vector sum_f x[i, f] d feature / dD
                if lane < n_cols:
                    for xyz in range(3):
                        total = zero
                        for f in range(N_FEAT):
                            total += x[i, f] * stage[row0 + 3 * f + xyz, lane]
                        out[p0 + lane, xyz] = total
                sync_warp()
            elif mode == J_PRODUCT:  # the lanes, a feature each: sum over pairs of d feature / dD . (x[j] - x[i])
                for k in range(N_OWN):
                    f = lane + WARP * k
                    if f < N_FEAT:
                        total = own[k]
                        for col in range(n_cols):
                            jj = pair_j[p0 + col]
                            for xyz in range(3):
                                total += stage[row0 + 3 * f + xyz, col] * (x[jj, xyz] - x[i, xyz])
                        own[k] = total
                sync_warp()
            chunk += 1

        if mode == J_PRODUCT:
            for k in range(N_OWN):
                f = lane + WARP * k
                if f < N_FEAT:
                    out[i, f] = own[k]
            return
        if mode == JT_PAIRS:
            return

        # the fingerprint row: the lanes' shares added through the stage
        if lane < CH:
            for k in range(N_FEAT):
                stage[row0 + k, lane] = row[k]
        sync_warp()
        for f in range(lane, N_FEAT, WARP):
            total = stage[row0 + f, 0]
            for col in range(1, CH):
                total += stage[row0 + f, col]
            fp[i, f] = total
        if mode == BLOCKS:
            write_own(fprimes, own_block, WIDTH, lane, own)

    return cuda.jit(gaussian)


def run(xp, tables, species, pairs, derivatives, fp, fprimes) -> None:
    """Fill ``fp`` (n_atoms, n_features) and, with ``derivatives``, ``fprimes``
    (n_blocks, n_features, 3), computing in their type (float64 or float32), from the
    :class:`~fastfp.kernels.tables.GaussianTables` ``tables`` of a Gaussian descriptor;
    ``species`` (n_atoms,) are the atoms' indices into its ``elements``, ``pairs`` a
    :class:`~fastfp.gpu.neighbors.DevicePairs` (with blocks if ``derivatives``). Raises
    ``ValueError`` for a descriptor whose kernel would not fit in shared memory."""
    nothing = xp.empty((0, 0), dtype=fp.dtype)
    _launch(xp, tables, species, pairs, BLOCKS if derivatives else FINGERPRINTS, fp.shape[1], fp,
            fprimes.reshape(-1), nothing, nothing)


def product(xp, tables, species, pairs, x, out, transpose: bool) -> None:
    """A product with J = d fingerprints / d positions recomputed pair by pair, no block
    stored: as :func:`fastfp.gpu.gmp.product` (the same modes, arguments and results)."""
    n_features = x.shape[1] if transpose else out.shape[1]
    _launch(xp, tables, species, pairs, JT_PAIRS if transpose else J_PRODUCT, n_features,
            xp.empty((0, n_features), dtype=x.dtype), xp.empty(0, dtype=x.dtype), x, out)


def _launch(xp, tables, species, pairs, mode, n_features, fp, fprimes, x, out) -> None:
    sizes = Sizes.of(tables, n_features, fp.dtype)
    n_pairs = len(pairs.j)
    check_room(xp, n_pairs * (3 + sizes.max_radial) * fp.itemsize, f"per-pair scratch ({n_pairs:,} pairs)")
    scratch = [xp.empty(n_pairs, dtype=fp.dtype) for _ in range(3)] + [xp.empty((n_pairs, sizes.max_radial),
                                                                             dtype=fp.dtype)]
    launch(kernel(sizes), (len(pairs.ptr) - 1) * WARP, pairs.ptr, pairs.j, pairs.vectors, species, pairs.pair_block,
           pairs.block_pair, pairs.block_ptr, on_device(xp, tables, fp.dtype), int(mode), *scratch, fp,
           fprimes, x, out, threads_per_block=sizes.warps * WARP)
