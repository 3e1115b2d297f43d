"""The GPU GMP kernel's arithmetic on the CPU, in float32 or float64: to state what
``result_dtype="float32"`` costs in accuracy on a machine without a GPU.

:func:`featurize_packed` computes what :mod:`fastfp.gpu.gmp` computes, with the same per-pair
formulas of :mod:`fastfp.kernels.formulas` (``gmp_radial``, ``gmp_pieces``,
``gmp_channel_overlap``, ``gmp_pair_fprime``) compiled by numba for the CPU, in the
floating type asked for, and the same neighbour list and block layout. Only the order of
the sums over pairs differs (here one pair after another; on the GPU a column sum per
chunk of 32). numba's CUDA simulator, which runs the kernel itself, takes seconds per
small frame; this takes the time of a plain CPU loop. Nothing here imports CuPy or
numba-cuda.
"""

from __future__ import annotations

import numba
import numpy as np

from ..fingerprints import Fingerprints
from ..frames import PackedFrames
from ..kernels.blocks import pair_blocks
from ..kernels.formulas import (channel_slope, channel_term, feature_value, gmp_channel_overlap, gmp_pair_fprime,
                                gmp_pieces, gmp_radial, like)
from ..kernels.tables import GMPTables
from ..neighbors import neighbor_pairs


@numba.njit(parallel=True, cache=True)
def _gmp(ptr, pair_j, vectors, species, pair_block, block_ptr, t, derivatives, fp, fprimes):
    """Fill ``fp`` and ``fprimes`` (zeroed, of the type to compute in) as the GPU kernel
    does; ``t`` are :class:`~fastfp.kernels.tables.GMPTables` with their floating arrays
    in that type, ``vectors`` too."""
    n_probe, n_gauss, n_slots = t.overlap_pref.shape
    n_ps = n_probe * n_slots
    n_pieces = len(t.piece_slot)
    n_feat = len(t.feat_ptr) - 1
    c2 = t.overlap_c2.ravel()
    pref = t.overlap_pref.ravel()
    powers = t.term_exp.ravel()
    chan_probe = np.empty(len(t.chan_comp), dtype=np.int64)
    for s in range(n_probe):
        chan_probe[t.chan_ptr[s]:t.chan_ptr[s + 1]] = s
    zero = like(fp[0, 0], 0.0)
    n_pow = t.term_exp.max() + 1
    for i in numba.prange(len(ptr) - 1):
        hx = np.empty(n_pow, fp.dtype)
        hy = np.empty(n_pow, fp.dtype)
        hz = np.empty(n_pow, fp.dtype)
        radial = np.empty(n_ps, fp.dtype)
        dradial = np.empty(n_ps, fp.dtype)
        value = np.empty(n_pieces, fp.dtype)
        grad = np.empty(3 * n_pieces, fp.dtype)
        terms = np.empty((max(n_ps + n_pieces, 3 * n_feat), 1), fp.dtype)
        mu = np.full(len(t.chan_comp), zero)
        weight = np.empty(len(t.feat_chan), fp.dtype)
        for q in range(ptr[i], ptr[i + 1]):
            x, y, z = vectors[q, 0], vectors[q, 1], vectors[q, 2]
            e = species[pair_j[q]]
            gmp_radial(c2, pref, n_gauss, n_slots, t.gauss_ptr[e], t.gauss_ptr[e + 1], x * x + y * y + z * z,
                       radial, dradial, False)
            gmp_pieces(x, y, z, t.piece_ptr, t.term_coef, powers, hx, hy, hz, value, grad, False)
            terms[:n_ps, 0] = radial
            terms[n_ps:n_ps + n_pieces, 0] = value
            for c in range(len(mu)):
                mu[c] += gmp_channel_overlap(chan_probe[c], t.chan_comp[c], t.comp_piece_ptr, t.piece_slot, n_slots,
                                             terms, 0, n_ps, 0)
        for f in range(n_feat):
            mode = t.feat_mode[f]
            total = zero
            for m in range(t.feat_ptr[f], t.feat_ptr[f + 1]):
                total += channel_term(mode, t.feat_weight[m], mu[t.feat_chan[m]])
            feature, slope = feature_value(mode, total, t.feat_zero[f])
            fp[i, f] = feature
            for m in range(t.feat_ptr[f], t.feat_ptr[f + 1]):
                weight[m] = channel_slope(mode, t.feat_weight[m], mu[t.feat_chan[m]]) * slope
        if not derivatives:
            continue
        own = block_ptr[i]
        for q in range(ptr[i], ptr[i + 1]):
            if pair_block[q] == own:
                continue
            x, y, z = vectors[q, 0], vectors[q, 1], vectors[q, 2]
            e = species[pair_j[q]]
            gmp_radial(c2, pref, n_gauss, n_slots, t.gauss_ptr[e], t.gauss_ptr[e + 1], x * x + y * y + z * z,
                       radial, dradial, True)
            gmp_pieces(x, y, z, t.piece_ptr, t.term_coef, powers, hx, hy, hz, value, grad, True)
            gmp_pair_fprime(x, y, z, weight, 0, t.poly_ptr, t.poly_slot, t.poly_term_ptr, t.poly_term_piece,
                            t.poly_term_member, t.feat_probe, n_slots, radial, dradial, value, grad, terms, 0, 0)
            for f in range(n_feat):
                for xyz in range(3):
                    fprimes[pair_block[q], f, xyz] += terms[3 * f + xyz, 0]
                    fprimes[own, f, xyz] -= terms[3 * f + xyz, 0]


def featurize_packed(desc, packed: PackedFrames, *, derivatives: bool = True, real=np.float32) -> Fingerprints:
    """Fingerprints of ``packed`` (:func:`~fastfp.frames.pack_frames`) by the GMP-family descriptor ``desc``,
    computed on the CPU as the GPU kernel computes them, in ``real`` (float32 or float64),
    returned in that type, in :class:`~fastfp.fingerprints.Fingerprints` layout (blocks
    in the CPU neighbour list's order). Raises ``TypeError`` for another descriptor
    family."""
    if not isinstance(desc.tables, GMPTables):
        raise TypeError(f"{type(desc).__name__}: emulates the GPU's GMP kernel only")
    pairs = neighbor_pairs(packed, desc.cutoff, self_pairs=True)
    block_ptr, block_j, pair_block = pair_blocks(pairs.ptr, pairs.j)
    fp = np.zeros((packed.n_atoms, desc.n_features), dtype=real)
    fprimes = np.zeros((len(block_j) if derivatives else 0, desc.n_features, 3), dtype=real)
    _gmp(pairs.ptr, pairs.j, pairs.vectors.astype(real), desc.species_of[packed.numbers], pair_block, block_ptr,
         desc.tables.on(np, real), bool(derivatives), fp, fprimes)
    deriv = dict(fprime_ptr=block_ptr, fprime_j=block_j, fprimes=fprimes) if derivatives else {}
    return Fingerprints(fingerprints=fp, offsets=packed.offsets, numbers=packed.numbers, **deriv)
