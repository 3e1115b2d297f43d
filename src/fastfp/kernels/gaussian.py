"""Gaussian (Behler–Parrinello) symmetry functions and their exact derivatives.

For a centre i with neighbours j, k (pair vectors D_j, D_k, r = |D|, r_jk = |D_k - D_j|,
cos = D_j . D_k / (r_j r_k)) and a cutoff function f_c:

    G2 = sum_j exp(-eta (r_j - R_s)^2) f_c(r_j)
    G4 = sum_{j<k} A(cos) exp(-eta (r_j^2 + r_k^2 + r_jk^2)) f_c(r_j) f_c(r_k) f_c(r_jk)
    G5 = sum_{j<k} A(cos) exp(-eta (r_j^2 + r_k^2)) f_c(r_j) f_c(r_k)
    A  = 2^(1 - zeta) |1 + lambda cos|^(zeta - 1) (1 + lambda cos)

(AMPTorch ``Gaussian/symmetry_functions.cpp``). Work is shared: f_c and exp(-eta r^2) once
per pair, a *radial group* (G4 or G5, eta) and an *angular group* (zeta, lambda) once per
triplet, then each feature is one product. With R the radial part of a triplet,

    dR/dD_j = g_j D_j - g_jk D_jk,  dR/dD_k = g_k D_k + g_jk D_jk,  D_jk = D_k - D_j,
    dcos/dD_j = D_k / (r_j r_k) - cos D_j / r_j^2  (and j <-> k),

so d(A R)/dD_j and d(A R)/dD_k are combinations of D_j and D_k with three coefficients.
For J^T x those are weighted by x[i, f] and summed over the triplet's features before
they touch the pair vectors; for J x they meet the four dot products D_a . w_b of the
triplet (w = x[j] - x[i]), so neither mode keeps a per-pair derivative row.
"""

import numba
import numpy as np

from .blocks import BLOCKS, FINGERPRINTS, J_PRODUCT, JT_PAIRS
from .formulas import angular_term, cutoff_function, g2_term, triplet_coefficients, triplet_geometry, triplet_radial


@numba.njit(cache=True, nogil=True)
def gaussian_kernel(ptr, j, species, nbr_species, vectors, tables, mode, fp, pair_block, block_ptr, fprimes, x, out,
                    atom_start, atom_stop):
    """Fill rows ``atom_start:atom_stop`` of the fingerprints ``fp`` (n_atoms, n_feat)
    and what ``mode`` asks for (:mod:`fastfp.kernels.blocks`), whatever the outputs
    held; disjoint atom ranges write disjoint entries, so ranges can run on separate
    threads:

    * ``BLOCKS``: their derivative blocks in ``fprimes`` (n_blocks, n_feat, 3), by
      ``pair_block`` and ``block_ptr`` (:func:`~fastfp.kernels.blocks.pair_blocks`);
    * ``JT_PAIRS``: ``out[p]`` (n_pairs, 3) = sum_f x[i, f] dG_if/dD_p for their pairs;
    * ``J_PRODUCT``: ``out[i]`` (n_atoms, n_feat) = (J x)[i], ``x`` (n_atoms, 3).

    Arguments a mode does not use may be empty arrays. Pairs: ``ptr`` (n_atoms + 1),
    neighbours ``j``, neighbour species ``nbr_species`` and ``vectors`` (n_pairs, 3) Å;
    ``species`` (n_atoms,) of the centres. Cutoffs, G2 features, radial and angular
    groups and the angular features of each (centre, neighbour, neighbour) species:
    ``tables`` (:class:`~fastfp.kernels.tables.GaussianTables`).
    """
    t = tables
    n_feat = fp.shape[1]
    n_sp = len(t.cutoffs)
    max_pairs = 0
    for i in range(atom_start, atom_stop):
        max_pairs = max(max_pairs, ptr[i + 1] - ptr[i])
    max_rad = 0
    max_ang = 0
    for e in range(n_sp):
        max_rad = max(max_rad, t.rad_ptr[e + 1] - t.rad_ptr[e])
        max_ang = max(max_ang, t.ang_ptr[e + 1] - t.ang_ptr[e])

    dfp = np.zeros((max_pairs if mode == BLOCKS else 0, n_feat, 3))
    pair_vec = np.zeros((max_pairs if mode == JT_PAIRS else 0, 3))
    w = np.zeros((max_pairs if mode == J_PRODUCT else 0, 3))  # x[j] - x[i]
    active = np.empty(max_pairs, dtype=np.int64)
    dist = np.empty(max_pairs)
    fc = np.empty(max_pairs)
    dfc_r = np.empty(max_pairs)  # (df_c/dr) / r
    expo = np.empty((max_pairs, max_rad))  # exp(-eta r^2) of each radial group
    rad = np.empty(max_rad)
    rad_j = np.empty(max_rad)
    rad_k = np.empty(max_rad)
    rad_jk = np.empty(max_rad)
    ang = np.empty(max_ang)
    dang = np.empty(max_ang)

    for i in range(atom_start, atom_stop):
        fp[i] = 0.0
        if mode == J_PRODUCT:
            out[i] = 0.0
        e = species[i]
        rc = t.cutoffs[e]
        start = ptr[i]
        npairs = ptr[i + 1] - start
        r0 = t.rad_ptr[e]
        n_rad = t.rad_ptr[e + 1] - r0
        a0 = t.ang_ptr[e]
        n_ang = t.ang_ptr[e + 1] - a0
        only_g4 = True
        for g in range(n_rad):
            only_g4 = only_g4 and t.rad_g4[r0 + g]

        n_active = 0
        for q in range(npairs):
            p = start + q
            if mode == JT_PAIRS:
                out[p] = 0.0
            x0 = vectors[p, 0]
            y0 = vectors[p, 1]
            z0 = vectors[p, 2]
            r = np.sqrt(x0 * x0 + y0 * y0 + z0 * z0)
            if r >= rc:
                continue
            f, df = cutoff_function(r, rc, t.cutoff_kind, t.cutoff_gamma)
            active[n_active] = q
            n_active += 1
            dist[q] = r
            fc[q] = f
            dfc_r[q] = df / r
            if mode == J_PRODUCT:
                for xyz in range(3):
                    w[q, xyz] = x[j[p], xyz] - x[i, xyz]
            for g in range(n_rad):
                expo[q, g] = np.exp(-t.rad_eta[r0 + g] * r * r)
            key = e * n_sp + nbr_species[p]
            for m in range(t.g2_ptr[key], t.g2_ptr[key + 1]):
                value, s = g2_term(t.g2_eta[m], t.g2_rs[m], r, f, df)
                col = t.g2_col[m]
                fp[i, col] += value
                if mode == BLOCKS:
                    dfp[q, col, 0] += s * x0
                    dfp[q, col, 1] += s * y0
                    dfp[q, col, 2] += s * z0
                elif mode == JT_PAIRS:
                    xs = x[i, col] * s
                    pair_vec[q, 0] += xs * x0
                    pair_vec[q, 1] += xs * y0
                    pair_vec[q, 2] += xs * z0
                elif mode == J_PRODUCT:
                    out[i, col] += s * (x0 * w[q, 0] + y0 * w[q, 1] + z0 * w[q, 2])

        for a in range(n_active):
            qj = active[a]
            pj = start + qj
            tj = nbr_species[pj]
            rj = dist[qj]
            for b in range(a + 1, n_active):
                qk = active[b]
                pk = start + qk
                tk = nbr_species[pk]
                key = (e * n_sp + min(tj, tk)) * n_sp + max(tj, tk)
                if t.tri_ptr[key] == t.tri_ptr[key + 1]:
                    continue
                rk = dist[qk]
                rjk, rjk2, cos, fcjk, dfcjk = triplet_geometry(
                    vectors, pj, pk, rj, rk, rc, only_g4, t.cutoff_kind, t.cutoff_gamma
                )
                if rjk < 0.0:
                    continue
                for g in range(n_rad):
                    rad[g], rad_j[g], rad_k[g], rad_jk[g] = triplet_radial(
                        t.rad_g4[r0 + g], t.rad_eta[r0 + g], expo[qj, g] * expo[qk, g], fc[qj], fc[qk],
                        dfc_r[qj], dfc_r[qk], rjk, rjk2, fcjk, dfcjk,
                    )
                for g in range(n_ang):
                    ang[g], dang[g] = angular_term(
                        t.ang_zeta[a0 + g], t.ang_lambda[a0 + g], t.ang_norm[a0 + g], t.ang_int_power[a0 + g], cos
                    )
                # J^T x: the weighted sums of the coefficients; J x: D_a . w_b
                sum_j = sum_k = sum_x = 0.0
                if mode == J_PRODUCT:
                    djwj = djwk = dkwj = dkwk = 0.0
                    for xyz in range(3):
                        djwj += vectors[pj, xyz] * w[qj, xyz]
                        djwk += vectors[pj, xyz] * w[qk, xyz]
                        dkwj += vectors[pk, xyz] * w[qj, xyz]
                        dkwk += vectors[pk, xyz] * w[qk, xyz]
                for m in range(t.tri_ptr[key], t.tri_ptr[key + 1]):
                    col = t.tri_col[m]
                    g = t.tri_rad[m] - r0
                    h = t.tri_ang[m] - a0
                    fp[i, col] += ang[h] * rad[g]
                    if mode == FINGERPRINTS:
                        continue
                    cj, ck, cx = triplet_coefficients(ang[h], dang[h], rad[g], rad_j[g], rad_k[g], rad_jk[g], cos, rj, rk)
                    if mode == BLOCKS:
                        for xyz in range(3):
                            vj = vectors[pj, xyz]
                            vk = vectors[pk, xyz]
                            dfp[qj, col, xyz] += cj * vj + cx * vk
                            dfp[qk, col, xyz] += cx * vj + ck * vk
                    elif mode == JT_PAIRS:
                        sum_j += x[i, col] * cj
                        sum_k += x[i, col] * ck
                        sum_x += x[i, col] * cx
                    else:
                        out[i, col] += cj * djwj + cx * (dkwj + djwk) + ck * dkwk
                if mode == JT_PAIRS:
                    for xyz in range(3):
                        vj = vectors[pj, xyz]
                        vk = vectors[pk, xyz]
                        pair_vec[qj, xyz] += sum_j * vj + sum_x * vk
                        pair_vec[qk, xyz] += sum_x * vj + sum_k * vk

        if mode == BLOCKS:
            # d/dr_j += d/dD, d/dr_i -= d/dD; nothing for the centre's own images
            fprimes[block_ptr[i] : block_ptr[i + 1]] = 0.0
            own = block_ptr[i]
            for a in range(n_active):
                q = active[a]
                blk = pair_block[start + q]
                for col in range(n_feat):
                    for xyz in range(3):
                        v = dfp[q, col, xyz]
                        dfp[q, col, xyz] = 0.0
                        if blk != own:
                            fprimes[blk, col, xyz] += v
                            fprimes[own, col, xyz] -= v
        elif mode == JT_PAIRS:
            for a in range(n_active):
                q = active[a]
                if j[start + q] != i:
                    out[start + q] = pair_vec[q]
                pair_vec[q] = 0.0
