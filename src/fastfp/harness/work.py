"""What each kernel does, counted from its formulas and the descriptor's tables: the
operations of a roofline (:mod:`fastfp.harness.roofline`).

One function per kernel returns a :class:`Work`: floating-point operations, calls to
``exp`` (and to the other elementary functions of libm), and bytes read and written.
The counts take the descriptor's settings from ``desc.tables``
(:mod:`fastfp.kernels.tables`: probes, Gaussians per element, MCSH pieces and terms,
features; G2 terms, radial and angular groups) and the frames from arrays (pairs,
blocks, triplets, COO entries), so they hold on any device; the machine's roofs are
measured elsewhere (:mod:`fastfp.harness.roofs` for the CPU).

Conventions:

* a flop is one addition, subtraction, multiplication, division or square root, as
  the formulas are written in the kernels (:mod:`fastfp.kernels.gmp`,
  :mod:`fastfp.kernels.gaussian`, :mod:`fastfp.kernels.formulas`); products of
  constants the compiler folds or hoists out of the loop over pairs are not counted;
  ``fma`` counts 2;
* ``exps`` counts the vectorised ``exp`` of :mod:`fastfp.kernels.fastexp` (GMP),
  ``libm_calls`` the scalar calls of libm's ``exp``, ``cos``, ``sin`` and ``pow``
  (Gaussian), each costed at libm ``exp``'s rate; neither is counted in the flops;
* bytes are the arrays' compulsory traffic between the caches and memory: inputs read
  once, outputs written once; per-centre scratch (powers, pieces, radial parts, a
  centre's derivatives before they reach their blocks) stays in the caches and is not
  counted.

The counts follow the formulas as the kernels evaluate them (one exp per probe,
Gaussian and pair, say): a kernel that changes the work changes its count here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numba
import numpy as np

from ..kernels.formulas import COSINE, triplet_geometry
from ..kernels.tables import GaussianTables, GMPTables

#: bytes of a float64 value and of an int64 index
F64 = I64 = 8


@dataclass(frozen=True)
class Work:
    """What a kernel does: ``flops``, ``exps`` (vectorised fastexp), ``libm_calls``,
    ``bytes_read``, ``bytes_written``, for ``pairs`` pairs of atoms (the unit of the
    per-pair figures)."""

    flops: float = 0.0
    exps: float = 0.0
    libm_calls: float = 0.0
    bytes_read: float = 0.0
    bytes_written: float = 0.0
    pairs: int = 0

    def __add__(self, other: "Work") -> "Work":
        return Work(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def per_pair(self) -> dict:
        """Every count divided by :attr:`pairs`."""
        return {f.name: getattr(self, f.name) / max(self.pairs, 1) for f in fields(self) if f.name != "pairs"}


def _per_atom_inputs(n_atoms: int, n_features: int, n_blocks: int) -> Work:
    """Traffic of a featurization call besides the pairs (``Descriptor._run_kernel``):
    the pair and block pointers read (8 B per atom each), the fingerprints written
    (8 B per feature and atom), the block layout and blocks written
    (:func:`~fastfp.kernels.blocks.pair_blocks`: 8 B of ``block_j``, 24 B per feature
    of the (n_features, 3) block)."""
    return Work(bytes_read=2 * I64 * n_atoms,
                bytes_written=F64 * n_features * n_atoms + (I64 + 3 * F64 * n_features) * n_blocks)


#: per pair: ``pairs.j`` read twice (neighbour species, block layout), vectors (24 B),
#: neighbour species and pair block written (8 B each) and read back by the kernel
PAIR_BYTES_READ = 2 * I64 + 3 * F64 + 2 * I64
PAIR_BYTES_WRITTEN = 2 * I64


def gmp(tables: GMPTables, ptr: np.ndarray, nbr_species: np.ndarray, n_blocks: int) -> Work:
    """:func:`~fastfp.kernels.gmp.gmp_kernel` with derivatives (mode ``BLOCKS``) on the
    pairs of ``ptr`` (n_atoms + 1,), neighbour species ``nbr_species`` (n_pairs,) (index
    into the tables' elements), ``n_blocks`` derivative blocks (GMPOrderNorm and GMP
    alike). Every feature is counted as having a derivative (the kernel skips those of
    zero slope), and the padding positions of a centre's species are not counted.

    Per pair (``_radial``, ``_monomials``, ``_channels``, ``_pair_derivatives``):

    * r^2 = x^2 + y^2 + z^2: 5;
    * per probe s and Gaussian g of the neighbour's element: the argument C2 r^2 (1),
      one exp, and per slot r: R_sr += A exp, dR_sr += (A C2) exp (4);
    * each monomial but the first, one product of a lower one (1);
    * the moments: per probe, slot r and monomial of its degree d_r, R_sr M_m summed (2);
    * per polynomial P_fr of a feature's derivative: of degree 0, 2 c dR (D) added to
      the feature's row (8); of degree d > 0, its gradient from the monomials of degree
      d - 1, three at a time (18 per three), D . grad P (5), 2/d dR (D . grad P) (2) and
      R grad P + that D added to the row (12);
    * per feature and component, the row summed into the centre's own block (1); the
      pair's block is set from the row (no flop).

    Per centre: per channel's piece terms c S (2); per member channel w mu^2 (3) and
    d/d mu (2); per feature its value (2: sqrt, 1/2 sqrt); per derivative polynomial's
    (piece, member) its weight (1) and per term of the piece its coefficient (2) and
    per nonzero exponent its gradient coefficient (2).
    """
    n_atoms = len(ptr) - 1
    n_pairs = int(ptr[-1])
    n_probes, n_slots, n_features = tables.n_probes, tables.n_slots, tables.n_features
    gaussians = np.diff(tables.gauss_ptr)[nbr_species].sum()  # sum over pairs of the neighbour's Gaussians
    decays = n_probes * gaussians  # one exp per probe, Gaussian and pair
    monomials_of = np.diff(tables.mono_ptr)  # by degree
    degree = tables.slot_d[tables.poly_slot]
    passes = -(-(degree * (degree + 1) // 2) // 3)  # gradient passes, three monomials of degree d - 1 each
    per_pair = (5 + int(tables.mono_ptr[-1]) - 1 + 2 * n_probes * int(monomials_of[tables.slot_d].sum())
                + int(np.where(degree == 0, 8, 18 * passes + 19).sum()) + 3 * n_features)
    piece_terms = np.diff(tables.piece_ptr)
    nonzero = np.concatenate(([0], np.cumsum(np.count_nonzero(tables.term_exp, axis=1))))
    piece_gradients = nonzero[tables.piece_ptr[1:]] - nonzero[tables.piece_ptr[:-1]]  # nonzero exponents per piece
    pieces = tables.poly_term_piece
    channel_terms = sum(int(piece_terms[tables.comp_piece_ptr[k] : tables.comp_piece_ptr[k + 1]].sum())
                        for k in tables.chan_comp)
    per_centre = (2 * channel_terms + 5 * len(tables.feat_chan) + 2 * n_features
                  + len(pieces) + int((2 * piece_terms[pieces] + 2 * piece_gradients[pieces]).sum()))
    return Work(flops=float(per_pair * n_pairs + (1 + 4 * n_slots) * decays + per_centre * n_atoms),
                exps=float(decays), bytes_read=float(PAIR_BYTES_READ * n_pairs),
                bytes_written=float(PAIR_BYTES_WRITTEN * n_pairs), pairs=n_pairs) + _per_atom_inputs(
        n_atoms, n_features, n_blocks)


#: flops and libm calls of a cutoff function f_c(r), df_c/dr (:func:`~fastfp.kernels.formulas.cutoff_function`):
#: cosine r / R_c (1), 0.5 (1 + cos(pi x)) (3), -0.5 pi sin(pi x) / R_c (3), cos and sin;
#: polynomial x (1), 1 + gamma x^g x - (gamma + 1) x^g (5), its derivative (3), pow
CUTOFF = {COSINE: (7, 2), 1: (9, 1)}


@numba.njit(cache=True)
def _triplets(ptr, species, nbr_species, vectors, tables, only_g4):
    """The kernel's triplet loop without its arithmetic: ``(examined, kept per centre
    element, feature terms)``, examined = pairs (j < k) of pairs within the centre's
    cutoff with angular features, kept = those :func:`triplet_geometry` keeps."""
    t = tables
    n_sp = len(t.cutoffs)
    kept = np.zeros(n_sp, dtype=np.int64)
    examined = terms = 0
    dist = np.empty(vectors.shape[0])
    for p in range(vectors.shape[0]):  # as the kernel computes it
        x, y, z = vectors[p, 0], vectors[p, 1], vectors[p, 2]
        dist[p] = np.sqrt(x * x + y * y + z * z)
    for i in range(len(ptr) - 1):
        e = species[i]
        rc = t.cutoffs[e]
        for pj in range(ptr[i], ptr[i + 1]):
            if dist[pj] >= rc:
                continue
            for pk in range(pj + 1, ptr[i + 1]):
                if dist[pk] >= rc:
                    continue
                a, b = nbr_species[pj], nbr_species[pk]
                key = (e * n_sp + min(a, b)) * n_sp + max(a, b)
                n = t.tri_ptr[key + 1] - t.tri_ptr[key]
                if n == 0:
                    continue
                examined += 1
                rjk = triplet_geometry(vectors, pj, pk, dist[pj], dist[pk], rc, only_g4[e], t.cutoff_kind,
                                       t.cutoff_gamma)[0]
                if rjk >= 0.0:
                    kept[e] += 1
                    terms += n
    return examined, kept, terms


def gaussian(tables: GaussianTables, n_features: int, ptr: np.ndarray, species: np.ndarray,
             nbr_species: np.ndarray, vectors: np.ndarray, n_blocks: int) -> Work:
    """:func:`~fastfp.kernels.gaussian.gaussian_kernel` with derivatives, ``n_features``
    wide, on the pairs of ``ptr`` (n_atoms + 1,) with ``vectors`` (n_pairs, 3) Å, centre
    ``species`` (n_atoms,), neighbour species ``nbr_species`` (n_pairs,), ``n_blocks``
    blocks.

    Per pair: r (5 and a sqrt). Per pair within the centre element's cutoff: f_c and
    df_c/dr (:data:`CUTOFF`), df_c/dr / r (1); per radial group exp(-eta r^2) (2, an
    exp); per G2 term (:func:`~fastfp.kernels.formulas.g2_term`: r - R_s, the exp's
    argument, exp f_c, its derivative by D over r: 11, an exp), its sum (1) and its
    derivative added to the pair's (6); its derivative added to its block and to the
    centre's own (6 per feature).

    Per triplet examined (:func:`~fastfp.kernels.formulas.triplet_geometry`): D_jk and
    r_jk (9). Per triplet kept: f_c(r_jk) (:data:`CUTOFF`) and cos (7); per radial group
    the pair exps' product (1) and :func:`~fastfp.kernels.formulas.triplet_radial` (G4:
    25 and an exp; G5: 12); per angular group
    :func:`~fastfp.kernels.formulas.angular_term` (6, and zeta - 1 multiplications or a
    pow); per feature A R added (2), :func:`~fastfp.kernels.formulas.triplet_coefficients`
    (17) and the two pairs' derivatives (24).
    """
    n_atoms = len(ptr) - 1
    n_pairs = int(ptr[-1])
    n_sp = len(tables.cutoffs)
    centre = np.repeat(species, np.diff(ptr))
    x, y, z = vectors.T
    active = np.sqrt(x * x + y * y + z * z) < tables.cutoffs[centre]
    n_rad = np.diff(tables.rad_ptr)
    g2_terms = np.diff(tables.g2_ptr)[centre * n_sp + nbr_species]
    cut_flops, cut_calls = CUTOFF[tables.cutoff_kind]
    pair_flops = 6 * n_pairs + np.sum(active * (cut_flops + 1 + 2 * n_rad[centre] + 18 * g2_terms + 6 * n_features))
    pair_calls = np.sum(active * (cut_calls + n_rad[centre] + g2_terms))
    # per centre element: its radial groups (G4 or G5) and angular groups (integer powers or pow)
    g4 = np.array([tables.rad_g4[tables.rad_ptr[e] : tables.rad_ptr[e + 1]].sum() for e in range(n_sp)])
    g5 = n_rad - g4
    only_g4 = (g5 == 0) & (n_rad > 0)
    powers = [tables.ang_int_power[tables.ang_ptr[e] : tables.ang_ptr[e + 1]] for e in range(n_sp)]
    ang_flops = np.array([6 * len(p) + p[p >= 0].sum() for p in powers])
    ang_calls = np.array([np.count_nonzero(p < 0) for p in powers])
    examined, kept, terms = _triplets(ptr, species, nbr_species, vectors, tables, only_g4)
    triplet_flops = 9 * examined + (kept * (cut_flops + 7 + 26 * g4 + 13 * g5 + ang_flops)).sum() + 43 * terms
    triplet_calls = (kept * (cut_calls + g4 + ang_calls)).sum()
    return Work(flops=float(pair_flops + triplet_flops), libm_calls=float(pair_calls + triplet_calls),
                bytes_read=float(PAIR_BYTES_READ * n_pairs + I64 * n_atoms),
                bytes_written=float(PAIR_BYTES_WRITTEN * n_pairs + I64 * n_atoms), pairs=n_pairs) + _per_atom_inputs(
        n_atoms, n_features, n_blocks)


def coo(n_blocks: int, width: int, n_atoms: int, nnz: int, pairs: int) -> Work:
    """:meth:`~fastfp.fingerprints.Fingerprints.coo_frames` of ``n_blocks`` blocks
    ``width`` features wide (of ``n_atoms`` centres, ``pairs`` pairs) into ``nnz`` COO
    entries: the blocks read twice (24 B per feature: counting, then filling, with 8 B of
    ``fprime_j``), the pointers (8 B per atom, twice), each entry written (row and
    column indices and value, 24 B). No floating-point arithmetic: comparisons and
    copies."""
    return Work(bytes_read=float(2 * 3 * F64 * width * n_blocks + I64 * n_blocks + 2 * I64 * n_atoms),
                bytes_written=float(3 * F64 * nnz), pairs=pairs)


def contraction_coo(nnz: int, n_rows: int, n_atoms: int, pairs: int) -> Work:
    """Force contraction forward and backward on a COO matrix of ``nnz`` entries
    (:func:`fastfp.amptorch.forces.contract_forces`: ``out[col] -= val * x[row]``, then
    ``out[row] -= val * g[col]``): per entry and pass the value and both indices read
    (24 B; x and g stay in the caches) and a multiply-subtract (2); the forces (24 B per
    atom) and dE/dG's gradient (8 B per row) written."""
    return Work(flops=float(4 * nnz), bytes_read=float(2 * 3 * F64 * nnz + F64 * n_rows + 3 * F64 * n_atoms),
                bytes_written=float(3 * F64 * n_atoms + F64 * n_rows), pairs=pairs)


def contraction_blocks(n_blocks: int, width: int, n_atoms: int, pairs: int) -> Work:
    """Force contraction forward and backward on ``n_blocks`` pair blocks ``width``
    features wide (:class:`fastfp.amptorch.frame_blocks.BlockDiagonal`, and
    :class:`fastfp.amptorch.forces.DerivativeBlocks` alike): per block and pass its
    3 x width values and its atom index read (24 B per feature + 8 B) and 3 x width
    multiply-adds (6 per feature); the forces (24 B per atom) and dE/dG's gradient (8 B
    per atom and feature) written, dE/dG and the loss's gradient by the forces read."""
    n_rows = n_atoms * width
    return Work(flops=float(2 * 6 * width * n_blocks),
                bytes_read=float(2 * (3 * F64 * width + I64) * n_blocks + F64 * n_rows + 3 * F64 * n_atoms),
                bytes_written=float(3 * F64 * n_atoms + F64 * n_rows), pairs=pairs)
