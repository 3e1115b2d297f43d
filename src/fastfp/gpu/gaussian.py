"""Gaussian (Behler-Parrinello) symmetry functions and derivatives on the GPU.

The CPU kernel's loops (:mod:`fastfp.kernels.gaussian`) with one GPU thread per centre
atom, the formulas shared through :mod:`fastfp.kernels.formulas`, the tables those of
:class:`fastfp.descriptors.gaussian.Gaussian`. A thread first computes per pair the
distance, f_c, (df_c/dr) / r and exp(-eta r^2) of each radial group into device arrays
(the CPU kernel's per-centre scratch), then the G2 terms, then the triplets j < k. It
owns its centre's fingerprint row and derivative blocks, so no two threads write the
same place. Pairs with j = i (images of i) add to and subtract from the own block alike
and are skipped.
"""

from __future__ import annotations

import functools
import math

import numpy as np
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

    def gaussian(ptr, pair_block, block_ptr, species, nbr_species, vectors,
                 cutoffs, cutoff_kind, cutoff_gamma, g2_ptr, g2_col, g2_eta, g2_rs,
                 rad_ptr, rad_eta, rad_g4, ang_ptr, ang_zeta, ang_lambda, ang_norm, ang_int_power,
                 tri_ptr, tri_col, tri_rad, tri_ang,
                 derivatives, dist, fc, dfc_r, expo, fp, fprimes):
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
        rc = cutoffs[e]
        n_sp = len(cutoffs)
        r0 = rad_ptr[e]
        n_rad = rad_ptr[e + 1] - r0
        a0 = ang_ptr[e]
        n_ang = ang_ptr[e + 1] - a0
        only_g4 = True
        for g in range(n_rad):
            only_g4 = only_g4 and rad_g4[r0 + g]
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
            f, df = cutoff_function(r, rc, cutoff_kind, cutoff_gamma)
            fc[p] = f
            dfc_r[p] = df / r
            for g in range(n_rad):
                expo[p, g] = math.exp(-rad_eta[r0 + g] * r * r)
            key = e * n_sp + nbr_species[p]
            for m in range(g2_ptr[key], g2_ptr[key + 1]):
                value, slope = g2_term(g2_eta[m], g2_rs[m], r, f, df)
                col = g2_col[m]
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
                if tri_ptr[key] == tri_ptr[key + 1]:
                    continue
                rjk, rjk2, cos, fcjk, dfcjk = triplet_geometry(
                    vectors, pj, pk, rj, rk, rc, only_g4, cutoff_kind, cutoff_gamma
                )
                if rjk < 0.0:
                    continue
                for g in range(n_rad):
                    rad[g], rad_j[g], rad_k[g], rad_jk[g] = triplet_radial(
                        rad_g4[r0 + g], rad_eta[r0 + g], expo[pj, g] * expo[pk, g], fc[pj], fc[pk],
                        dfc_r[pj], dfc_r[pk], rjk, rjk2, fcjk, dfcjk,
                    )
                for h in range(n_ang):
                    ang[h], dang[h] = angular_term(
                        ang_zeta[a0 + h], ang_lambda[a0 + h], ang_norm[a0 + h], ang_int_power[a0 + h], cos
                    )
                for m in range(tri_ptr[key], tri_ptr[key + 1]):
                    col = tri_col[m]
                    g = tri_rad[m] - r0
                    h = tri_ang[m] - a0
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


def run(xp, desc, species, pairs, pair_block, block_ptr, derivatives, fp, fprimes) -> None:
    """Fill ``fp`` (n_atoms, n_features) and, with ``derivatives``, ``fprimes``
    (n_blocks, n_features, 3), both zeroed, for the Gaussian descriptor ``desc``;
    ``species`` (n_atoms,) are the atoms' indices into ``desc.elements``."""
    max_rad = max(1, int(np.diff(desc._rad_ptr).max()))
    max_ang = max(1, int(np.diff(desc._ang_ptr).max()))
    n_pairs = len(pairs.j)
    check_room(xp, n_pairs * (3 + max_rad) * 8, f"per-pair scratch ({n_pairs:,} pairs)")
    scratch = [xp.empty(n_pairs), xp.empty(n_pairs), xp.empty(n_pairs), xp.empty((n_pairs, max_rad))]
    tables = [
        desc._cutoffs, desc._g2_ptr, desc._g2_col, desc._g2_eta, desc._g2_rs,
        desc._rad_ptr, desc._rad_eta, desc._rad_g4,
        desc._ang_ptr, desc._ang_zeta, desc._ang_lambda, desc._ang_norm, desc._ang_int_power,
        desc._tri_ptr, desc._tri_col, desc._tri_rad, desc._tri_ang,
    ]
    cutoffs, *rest = [xp.asarray(t) for t in tables]
    launch(kernel(max_rad, max_ang), fp.shape[0], pairs.ptr, pair_block, block_ptr, species, species[pairs.j],
           pairs.vectors, cutoffs, int(desc._cutoff_kind), float(desc._cutoff_gamma), *rest,
           bool(derivatives), *scratch, fp, fprimes)
