"""Gaussian (Behler-Parrinello) symmetry functions and derivatives on the GPU.

The CPU kernel's loops (:mod:`fastfp.kernels.gaussian`) with one GPU thread per centre
atom, the formulas shared through :mod:`fastfp.kernels.formulas`, the tables the same
:class:`~fastfp.kernels.tables.GaussianTables`. A thread first computes per pair the
distance, f_c, (df_c/dr) / r and exp(-eta r^2) of each radial group into device arrays
(the CPU kernel's per-centre scratch), then the G2 terms, then the triplets j < k. It
owns its centre's fingerprint row and derivative blocks, so no two threads write the
same place. Pairs with j = i (images of i) add to and subtract from the own block alike
and are skipped.
"""

from __future__ import annotations

import functools
import math

from numba import cuda, float64

from ..kernels.formulas import (
    angular_term, cutoff_function, g2_term, triplet_coefficients, triplet_geometry, triplet_radial,
)
from .device import check_room, launch

SELF_PAIRS = False


@cuda.jit(device=True)
def _add(fprimes, blk, own, col, dx, dy, dz):
    """d/dD of one feature into block ``blk`` and, negated, into the centre's own block."""
    if blk == own:
        return
    fprimes[blk, col, 0] += dx
    fprimes[blk, col, 1] += dy
    fprimes[blk, col, 2] += dz
    fprimes[own, col, 0] -= dx
    fprimes[own, col, 1] -= dy
    fprimes[own, col, 2] -= dz


@functools.lru_cache(maxsize=None)
def kernel(max_rad: int, max_ang: int):
    """The Gaussian kernel for at most ``max_rad`` radial and ``max_ang`` angular groups
    per element (sizes of per-thread arrays, fixed at compile time)."""

    def gaussian(ptr, pair_block, block_ptr, species, nbr_species, vectors, tables, derivatives,
                 dist, fc, dfc_r, expo, fp, fprimes):
        t = tables
        i = cuda.grid(1)
        if i >= len(ptr) - 1:
            return
        rad = cuda.local.array(max_rad, float64)
        rad_j = cuda.local.array(max_rad, float64)
        rad_k = cuda.local.array(max_rad, float64)
        rad_jk = cuda.local.array(max_rad, float64)
        ang = cuda.local.array(max_ang, float64)
        dang = cuda.local.array(max_ang, float64)
        e = species[i]
        rc = t.cutoffs[e]
        n_sp = len(t.cutoffs)
        r0 = t.rad_ptr[e]
        n_rad = t.rad_ptr[e + 1] - r0
        a0 = t.ang_ptr[e]
        n_ang = t.ang_ptr[e + 1] - a0
        only_g4 = True
        for g in range(n_rad):
            only_g4 = only_g4 and t.rad_g4[r0 + g]
        own = -1
        if derivatives:
            own = block_ptr[i]

        for p in range(ptr[i], ptr[i + 1]):
            x = vectors[p, 0]
            y = vectors[p, 1]
            z = vectors[p, 2]
            r = math.sqrt(x * x + y * y + z * z)
            dist[p] = r
            if r >= rc:
                continue
            f, df = cutoff_function(r, rc, t.cutoff_kind, t.cutoff_gamma)
            fc[p] = f
            dfc_r[p] = df / r
            for g in range(n_rad):
                expo[p, g] = math.exp(-t.rad_eta[r0 + g] * r * r)
            key = e * n_sp + nbr_species[p]
            for m in range(t.g2_ptr[key], t.g2_ptr[key + 1]):
                value, slope = g2_term(t.g2_eta[m], t.g2_rs[m], r, f, df)
                col = t.g2_col[m]
                fp[i, col] += value
                if derivatives:
                    _add(fprimes, pair_block[p], own, col, slope * x, slope * y, slope * z)

        for pj in range(ptr[i], ptr[i + 1]):
            rj = dist[pj]
            if rj >= rc:
                continue
            tj = nbr_species[pj]
            for pk in range(pj + 1, ptr[i + 1]):
                rk = dist[pk]
                if rk >= rc:
                    continue
                tk = nbr_species[pk]
                key = (e * n_sp + min(tj, tk)) * n_sp + max(tj, tk)
                if t.tri_ptr[key] == t.tri_ptr[key + 1]:
                    continue
                rjk, rjk2, cos, fcjk, dfcjk = triplet_geometry(
                    vectors, pj, pk, rj, rk, rc, only_g4, t.cutoff_kind, t.cutoff_gamma
                )
                if rjk < 0.0:
                    continue
                for g in range(n_rad):
                    rad[g], rad_j[g], rad_k[g], rad_jk[g] = triplet_radial(
                        t.rad_g4[r0 + g], t.rad_eta[r0 + g], expo[pj, g] * expo[pk, g], fc[pj], fc[pk],
                        dfc_r[pj], dfc_r[pk], rjk, rjk2, fcjk, dfcjk,
                    )
                for h in range(n_ang):
                    ang[h], dang[h] = angular_term(
                        t.ang_zeta[a0 + h], t.ang_lambda[a0 + h], t.ang_norm[a0 + h], t.ang_int_power[a0 + h], cos
                    )
                for m in range(t.tri_ptr[key], t.tri_ptr[key + 1]):
                    col = t.tri_col[m]
                    g = t.tri_rad[m] - r0
                    h = t.tri_ang[m] - a0
                    fp[i, col] += ang[h] * rad[g]
                    if not derivatives:
                        continue
                    cj, ck, cx = triplet_coefficients(ang[h], dang[h], rad[g], rad_j[g], rad_k[g], rad_jk[g], cos, rj, rk)
                    _add(fprimes, pair_block[pj], own, col,
                         cj * vectors[pj, 0] + cx * vectors[pk, 0],
                         cj * vectors[pj, 1] + cx * vectors[pk, 1],
                         cj * vectors[pj, 2] + cx * vectors[pk, 2])
                    _add(fprimes, pair_block[pk], own, col,
                         cx * vectors[pj, 0] + ck * vectors[pk, 0],
                         cx * vectors[pj, 1] + ck * vectors[pk, 1],
                         cx * vectors[pj, 2] + ck * vectors[pk, 2])

    return cuda.jit(gaussian)


def run(xp, tables, species, pairs, pair_block, block_ptr, derivatives, fp, fprimes) -> None:
    """Fill ``fp`` (n_atoms, n_features) and, with ``derivatives``, ``fprimes``
    (n_blocks, n_features, 3), both zeroed, from the
    :class:`~fastfp.kernels.tables.GaussianTables` ``tables`` of a Gaussian descriptor;
    ``species`` (n_atoms,) are the atoms' indices into its ``elements``."""
    max_rad, max_ang = tables.max_radial_groups, tables.max_angular_groups
    n_pairs = len(pairs.j)
    check_room(xp, n_pairs * (3 + max_rad) * 8, f"per-pair scratch ({n_pairs:,} pairs)")
    scratch = [xp.empty(n_pairs), xp.empty(n_pairs), xp.empty(n_pairs), xp.empty((n_pairs, max_rad))]
    launch(kernel(max_rad, max_ang), fp.shape[0], pairs.ptr, pair_block, block_ptr, species, species[pairs.j],
           pairs.vectors, tables.on(xp), derivatives, *scratch, fp, fprimes)
