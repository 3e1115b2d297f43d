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
"""

import numba
import numpy as np

from .formulas import angular_term, cutoff_function, g2_term, triplet_coefficients, triplet_geometry, triplet_radial


@numba.njit(cache=True, nogil=True)
def gaussian_kernel(
    ptr, pair_block, block_ptr, species, nbr_species, vectors,
    cutoffs, cutoff_kind, cutoff_gamma,
    g2_ptr, g2_col, g2_eta, g2_rs,
    rad_ptr, rad_eta, rad_g4,
    ang_ptr, ang_zeta, ang_lambda, ang_norm, ang_int_power,
    tri_ptr, tri_col, tri_rad, tri_ang,
    fp, fprimes, atom_start, atom_stop,
):
    """Fill rows ``atom_start:atom_stop`` of the fingerprints ``fp`` (n_atoms, n_feat)
    and their derivative blocks in ``fprimes`` (n_blocks, n_feat, 3), whatever they held;
    ``fprimes`` of length 0 skips derivatives. Disjoint atom ranges write disjoint
    entries, so ranges can run on separate threads.

    Pairs: ``ptr`` (n_atoms + 1), their blocks ``pair_block`` and ``block_ptr`` (see
    :func:`~fastfp.kernels.blocks.pair_blocks`; unused without derivatives), neighbour
    species ``nbr_species`` and ``vectors`` (n_pairs, 3) Å; ``species`` (n_atoms,) of the centres; ``cutoffs`` (n_species,) Å.
    G2 features of centre species e and neighbour species t:
    ``g2_ptr[e * n_sp + t]:g2_ptr[e * n_sp + t + 1]`` (column, eta in 1/Å^2, R_s in Å).
    Radial groups of e: ``rad_ptr[e]:rad_ptr[e + 1]`` (eta, G4 or G5); angular groups
    ``ang_ptr[e]:ang_ptr[e + 1]`` (zeta, lambda, 2^(1 - zeta), zeta - 1 if a small
    integer else -1).
    Angular features of e with neighbour species a <= b:
    ``tri_ptr[(e * n_sp + a) * n_sp + b]`` onwards (column, radial group, angular group).
    """
    derivatives = len(fprimes) > 0
    n_feat = fp.shape[1]
    n_sp = len(cutoffs)
    max_pairs = 0
    for i in range(atom_start, atom_stop):
        max_pairs = max(max_pairs, ptr[i + 1] - ptr[i])
    max_rad = 0
    max_ang = 0
    for e in range(n_sp):
        max_rad = max(max_rad, rad_ptr[e + 1] - rad_ptr[e])
        max_ang = max(max_ang, ang_ptr[e + 1] - ang_ptr[e])

    dfp = np.zeros((max_pairs if derivatives else 0, n_feat, 3))
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
        e = species[i]
        rc = cutoffs[e]
        start = ptr[i]
        npairs = ptr[i + 1] - start
        r0 = rad_ptr[e]
        n_rad = rad_ptr[e + 1] - r0
        a0 = ang_ptr[e]
        n_ang = ang_ptr[e + 1] - a0
        only_g4 = True
        for g in range(n_rad):
            only_g4 = only_g4 and rad_g4[r0 + g]

        n_active = 0
        for q in range(npairs):
            p = start + q
            x = vectors[p, 0]
            y = vectors[p, 1]
            z = vectors[p, 2]
            r = np.sqrt(x * x + y * y + z * z)
            if r >= rc:
                continue
            f, df = cutoff_function(r, rc, cutoff_kind, cutoff_gamma)
            active[n_active] = q
            n_active += 1
            dist[q] = r
            fc[q] = f
            dfc_r[q] = df / r
            for g in range(n_rad):
                expo[q, g] = np.exp(-rad_eta[r0 + g] * r * r)
            key = e * n_sp + nbr_species[p]
            for m in range(g2_ptr[key], g2_ptr[key + 1]):
                value, s = g2_term(g2_eta[m], g2_rs[m], r, f, df)
                col = g2_col[m]
                fp[i, col] += value
                if derivatives:
                    dfp[q, col, 0] += s * x
                    dfp[q, col, 1] += s * y
                    dfp[q, col, 2] += s * z

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
                if tri_ptr[key] == tri_ptr[key + 1]:
                    continue
                rk = dist[qk]
                rjk, rjk2, cos, fcjk, dfcjk = triplet_geometry(
                    vectors, pj, pk, rj, rk, rc, only_g4, cutoff_kind, cutoff_gamma
                )
                if rjk < 0.0:
                    continue
                for g in range(n_rad):
                    rad[g], rad_j[g], rad_k[g], rad_jk[g] = triplet_radial(
                        rad_g4[r0 + g], rad_eta[r0 + g], expo[qj, g] * expo[qk, g], fc[qj], fc[qk],
                        dfc_r[qj], dfc_r[qk], rjk, rjk2, fcjk, dfcjk,
                    )
                for g in range(n_ang):
                    ang[g], dang[g] = angular_term(
                        ang_zeta[a0 + g], ang_lambda[a0 + g], ang_norm[a0 + g], ang_int_power[a0 + g], cos
                    )
                for m in range(tri_ptr[key], tri_ptr[key + 1]):
                    col = tri_col[m]
                    g = tri_rad[m] - r0
                    h = tri_ang[m] - a0
                    fp[i, col] += ang[h] * rad[g]
                    if not derivatives:
                        continue
                    cj, ck, cx = triplet_coefficients(ang[h], dang[h], rad[g], rad_j[g], rad_k[g], rad_jk[g], cos, rj, rk)
                    for xyz in range(3):
                        vj = vectors[pj, xyz]
                        vk = vectors[pk, xyz]
                        dfp[qj, col, xyz] += cj * vj + cx * vk
                        dfp[qk, col, xyz] += cx * vj + ck * vk

        if derivatives:
            fprimes[block_ptr[i] : block_ptr[i + 1]] = 0.0
            own = block_ptr[i]
            for a in range(n_active):
                q = active[a]
                blk = pair_block[start + q]
                for col in range(n_feat):
                    for xyz in range(3):
                        v = dfp[q, col, xyz]
                        fprimes[blk, col, xyz] += v
                        fprimes[own, col, xyz] -= v
                        dfp[q, col, xyz] = 0.0
