"""The roofline's parts: work counted from the formulas (fastfp.harness.work) by hand on
small systems, the triplets against a plain enumeration, the roofs' micro-benchmarks.
The asv benchmark and its summary: tests/test_bench.py."""

import itertools

import numpy as np
import pytest
from ase import Atoms

from conftest import write_pseudodensities
from fastfp import Gaussian, GMPOrderNorm
from fastfp.frames import pack_frames
from fastfp.harness import roofs, work
from fastfp.kernels.blocks import pair_blocks
from fastfp.threads import calling_thread_only


def pairs_of(desc, frames):
    packed = pack_frames(frames, desc.numbers)
    pairs = desc.neighbor_pairs(packed)
    return packed, pairs, desc.species_of[packed.numbers[pairs.j]], len(pair_blocks(pairs.ptr, pairs.j)[1])


def test_gmp_work_by_hand(tmp_path):
    """H2, order 0, one sigma, a pseudodensity of two Gaussians: four pairs (self pairs
    included), four blocks, two centres."""
    paths = write_pseudodensities(tmp_path, {"H": [(1.0, 2.0), (0.5, 0.7)]})
    desc = GMPOrderNorm({"MCSHs": {"orders": [0], "sigmas": [1.0]}, "cutoff": 6.0, "atom_gaussians": paths}, ["H"])
    t = desc.tables
    assert (t.n_probes, t.n_slots, len(t.term_coef), t.max_degree, len(t.chan_comp), t.n_features,
            len(t.poly_slot), len(t.poly_term_piece)) == (1, 1, 1, 0, 1, 1, 1, 1)
    _, pairs, species, n_blocks = pairs_of(desc, [Atoms("H2", [(0, 0, 0), (0, 0, 0.74)])])
    assert (int(pairs.ptr[-1]), n_blocks) == (4, 4)
    got = work.gmp(t, pairs.ptr, species, n_blocks)
    # per pair: r^2 5, no monomial beyond the first, the moment 2, the degree-0 polynomial
    # 8, the own block's sum 3; per Gaussian 1 + 4 x 1 slot (two Gaussians); per centre:
    # the channel's term 2, the member 5, the value 2, the polynomial's weight 1 and term 2
    assert got.flops == 4 * (5 + 0 + 2 + 8 + 3 + 2 * 5) + 2 * (2 + 5 + 2 + 1 + 2)
    assert got.exps == 4 * 2 and got.libm_calls == 0 and got.pairs == 4
    # pairs 56 B read, 16 written; atoms 16 read, 8 written (one feature); blocks 8 + 24 written
    assert got.bytes_read == 4 * 56 + 2 * 16
    assert got.bytes_written == 4 * 16 + 2 * 8 + 4 * (8 + 24)
    assert got.per_pair()["exps"] == 2


def test_gaussian_work_by_hand():
    """H2 with one G2 feature, cosine cutoff: two pairs, no triplet."""
    desc = Gaussian({"default": {"G2": {"etas": [0.5], "rs_s": [0]}, "cutoff": 5.0}}, ["H"])
    packed, pairs, species, n_blocks = pairs_of(desc, [Atoms("H2", [(0, 0, 0), (0, 0, 0.74)])])
    assert desc.n_features == 1 and int(pairs.ptr[-1]) == 2
    got = work.gaussian(desc.tables, 1, pairs.ptr, desc.species_of[packed.numbers], species, pairs.vectors, n_blocks)
    # per pair: r 6; cutoff 7 (cos, sin), df/r 1, the G2 term 18 (an exp), the blocks 6
    assert got.flops == 2 * (6 + 7 + 1 + 18 + 6)
    assert got.libm_calls == 2 * 3 and got.exps == 0


def test_triplets_as_enumerated():
    """The triplet count (``work._triplets``) against a plain enumeration of the kernel's
    rule: pairs j < k of neighbours within the centre element's cutoff with angular
    features, kept where r_jk >= 1e-4 and, with G4 only, r_jk < the cutoff."""
    rng = np.random.default_rng(3)
    atoms = Atoms(rng.choice(["H", "O"], 30), rng.uniform(0, 7, (30, 3)), cell=[7, 7, 7], pbc=True)
    desc = Gaussian({"default": {"G4": {"etas": [0.005], "zetas": [1.0], "gammas": [1.0]}, "cutoff": 3.5},
                     "H": {"G2": {"etas": [0.5], "rs_s": [0]}, "cutoff": 3.0}}, ["H", "O"])
    packed, pairs, nbr, _ = pairs_of(desc, [atoms])
    species = desc.species_of[packed.numbers]
    t = desc.tables
    only_g4 = np.array([t.rad_g4[t.rad_ptr[e] : t.rad_ptr[e + 1]].all() and t.rad_ptr[e + 1] > t.rad_ptr[e]
                        for e in range(2)])
    examined, kept, terms = 0, np.zeros(2, dtype=int), 0
    for i in range(len(species)):
        e, rc = species[i], t.cutoffs[species[i]]
        near = [p for p in range(pairs.ptr[i], pairs.ptr[i + 1]) if np.linalg.norm(pairs.vectors[p]) < rc]
        for pj, pk in itertools.combinations(near, 2):
            a, b = sorted((nbr[pj], nbr[pk]))
            n = t.tri_ptr[(e * 2 + a) * 2 + b + 1] - t.tri_ptr[(e * 2 + a) * 2 + b]
            if n:
                examined += 1
                rjk = np.linalg.norm(pairs.vectors[pk] - pairs.vectors[pj])
                if rjk >= 1e-4 and not (only_g4[e] and rjk >= rc):
                    kept[e] += 1
                    terms += n
    got = work._triplets(pairs.ptr, species, nbr, pairs.vectors, t, only_g4)
    assert examined > kept.sum() > 0 and kept[0] == 0  # H has no angular features
    assert (got[0], got[1].tolist(), got[2]) == (examined, kept.tolist(), terms)


def test_contraction_and_coo_work():
    blocks = work.contraction_blocks(n_blocks=10, width=4, n_atoms=3, pairs=12)
    assert blocks.flops == 2 * 10 * 3 * 4 * 2
    assert blocks.bytes_read == 2 * 10 * (3 * 4 * 8 + 8) + 8 * 12 + 24 * 3
    coo = work.contraction_coo(nnz=100, n_rows=12, n_atoms=3, pairs=12)
    assert coo.flops == 400 and coo.bytes_read == 2 * 100 * 24 + 8 * 12 + 24 * 3
    conversion = work.coo(n_blocks=10, width=4, n_atoms=3, nnz=100, pairs=12)
    assert conversion.flops == 0 and conversion.bytes_written == 2400
    assert (blocks + coo).flops == blocks.flops + coo.flops and (blocks + coo).pairs == 24


def test_roofs_measured_and_applied():
    with calling_thread_only():
        one = roofs.measure(stream_bytes=2**23, repeat=1, rounds=200)
    assert one.threads == 1
    assert all(np.isfinite(v) and v > 0 for v in (one.flops, one.read, one.write, one.exp, one.libm))
    times = one.times(work.Work(flops=2e9, exps=3e6, libm_calls=1e6, bytes_read=4e9, bytes_written=1e9))
    assert times == pytest.approx({"flops": 2e9 / one.flops, "memory": 4e9 / one.read + 1e9 / one.write,
                                   "exp": 3e6 / one.exp + 1e6 / one.libm})
    assert roofs.STREAM_BYTES >= 4 * roofs.last_level_cache() or roofs.STREAM_BYTES == 2**31


def test_table_reports_against_the_best_roofs():
    from fastfp.harness import roofline

    low = roofs.Roofs(flops=1e9, read=1e9, write=1e9, exp=1e8, libm=1e7, threads=1)
    high = roofs.Roofs(flops=4e9, read=0.5e9, write=2e9, exp=1e8, libm=1e7, threads=1)
    assert roofline.best_roofs([low, high]) == roofs.Roofs(4e9, 1e9, 2e9, 1e8, 1e7, 1)
    counted = work.Work(flops=4e9, bytes_read=1e9, pairs=1000)  # 1 s at either roof of the best
    shares = [roofline.Share("gmp", "one", 2.0, counted, low), roofline.Share("coo", "one", 4.0, counted, high)]
    assert shares[0].binding == "flops" and shares[0].share == 2.0  # against its own roofs: 4 s at 1 GFLOP/s
    text = roofline.table(shares)
    assert "| gmp | one | 4000000 | 0.0 | 1000000 (1000000 + 0) | 2000.0 ms | 1000.0 ms | 1000.0 ms | 0.0 ms" in text
    assert "| 50% |" in text and "| 25% |" in text
    assert text.count("GFLOP/s") == 1 and "| 1 | 4.0 GFLOP/s | 1.0 GB/s | 2.0 GB/s | 0.10 G/s | 0.01 G/s |" in text
