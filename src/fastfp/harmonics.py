"""Maxwell-Cartesian spherical harmonics (MCSH) as polynomial tables.

The MCSH of order n = a + b + c is the harmonic polynomial

    T_abc(r) = (-1)^n r^(2n+1) d^a/dx^a d^b/dy^b d^c/dz^c (1/r),

e.g. T_xxx = 15 x^3 - 9 x r^2 (X. Lei and A. J. Medford, "A universal framework for
featurization of atomistic systems", arXiv:2102.02390, Eqs. 5-8). It is built here by
the recursion T_{e + x} = (2n + 1) x T_e - r^2 dT_e/dx, keeping r^2 as a symbol R.

* The *solid* harmonics of AMPTorch (``GMPOrderNorm/solid_harmonics.cpp``) are T with
  R = x^2 + y^2 + z^2.
* The *surface* harmonics (``GMPOrderNorm/surface_harmonics.cpp``, ``GMP/gmp.cpp``) are
  T on the sphere of radius r_s: R = r_s^2 and T divided by r_s^n, so a term of degree d
  carries a factor (1/r_s)^d.

Components come in *groups*: the distinct permutations of one exponent partition
(a >= b >= c). Groups are numbered from 1 in reverse lexicographic order of the
partition, as in AMPTorch's ``helper.cpp`` (order 4: 400, 310, 220, 211), and weighted in
GMPOrderNorm by the multinomial n! / (a! b! c!).
"""

from __future__ import annotations

from functools import lru_cache
from itertools import permutations
from math import factorial

MAX_ORDER = 9


def _check_order(order: int) -> None:
    if not (isinstance(order, int) and 0 <= order <= MAX_ORDER):
        raise ValueError(f"MCSH order must be an integer in 0..{MAX_ORDER}, got {order!r}")


@lru_cache(maxsize=None)
def partitions(order: int) -> tuple[tuple[int, int, int], ...]:
    """Exponent partitions (a >= b >= c, a + b + c = order), group 1 first."""
    _check_order(order)
    parts = [
        (a, b, order - a - b)
        for a in range(order + 1)
        for b in range(order - a + 1)
        if a >= b >= order - a - b
    ]
    return tuple(sorted(parts, reverse=True))


def n_groups(order: int) -> int:
    return len(partitions(order))


def group_partition(order: int, group: int) -> tuple[int, int, int]:
    """Partition of group ``group`` (1-based) of ``order``; ``ValueError`` if absent."""
    parts = partitions(order)
    if not (isinstance(group, int) and 1 <= group <= len(parts)):
        raise ValueError(f"MCSH order {order} has groups 1..{len(parts)}, got {group!r}")
    return parts[group - 1]


def group_coefficient(order: int, group: int) -> float:
    """Multinomial weight n! / (a! b! c!) of a group in GMPOrderNorm."""
    a, b, c = group_partition(order, group)
    return factorial(order) / (factorial(a) * factorial(b) * factorial(c))


def group_components(order: int, group: int) -> tuple[tuple[int, int, int], ...]:
    """Exponents (a, b, c) of the components of a group: 1, 3 or 6 permutations."""
    return tuple(sorted(set(permutations(group_partition(order, group))), reverse=True))


@lru_cache(maxsize=None)
def _maxwell(exponents: tuple[int, int, int]) -> dict[tuple[int, int, int, int], float]:
    """T_abc as {(a, b, c, m): coefficient} meaning coefficient * x^a y^b z^c R^m."""
    if exponents == (0, 0, 0):
        return {(0, 0, 0, 0): 1.0}
    axis = next(ax for ax in range(3) if exponents[ax] > 0)
    lower = list(exponents)
    lower[axis] -= 1
    base = _maxwell(tuple(lower))
    n = sum(lower)
    out: dict[tuple[int, int, int, int], float] = {}

    def add(key, value):
        out[key] = out.get(key, 0.0) + value

    for (a, b, c, m), coef in base.items():
        e = [a, b, c]
        # (2n + 1) x_axis * term
        up = e.copy()
        up[axis] += 1
        add((*up, m), (2 * n + 1) * coef)
        # - R * d(term)/dx_axis, with dR/dx = 2 x
        if e[axis] > 0:
            down = e.copy()
            down[axis] -= 1
            add((*down, m + 1), -e[axis] * coef)
        if m > 0:
            add((*up, m), -2.0 * m * coef)
    return {k: v for k, v in out.items() if v != 0.0}


def _collect(terms) -> tuple[tuple[float, int, int, int], ...]:
    out: dict[tuple[int, int, int], float] = {}
    for coef, a, b, c in terms:
        out[(a, b, c)] = out.get((a, b, c), 0.0) + coef
    return tuple((v, *k) for k, v in sorted(out.items(), reverse=True) if v != 0.0)


@lru_cache(maxsize=None)
def solid_terms(exponents: tuple[int, int, int]) -> tuple[tuple[float, int, int, int], ...]:
    """Solid harmonic T_abc as monomials (coefficient, a, b, c), R = x^2 + y^2 + z^2."""
    terms = []
    for (a, b, c, m), coef in _maxwell(tuple(exponents)).items():
        # expand R^m = sum over i+j+k=m of m!/(i!j!k!) x^2i y^2j z^2k
        for i in range(m + 1):
            for j in range(m - i + 1):
                k = m - i - j
                mult = factorial(m) / (factorial(i) * factorial(j) * factorial(k))
                terms.append((coef * mult, a + 2 * i, b + 2 * j, c + 2 * k))
    return _collect(terms)


@lru_cache(maxsize=None)
def surface_terms(exponents: tuple[int, int, int]) -> tuple[tuple[float, int, int, int], ...]:
    """Surface harmonic T_abc as monomials (coefficient, a, b, c) for r_s = 1.

    For another r_s, multiply each coefficient by (1/r_s)^(a + b + c).
    """
    return _collect((coef, a, b, c) for (a, b, c, m), coef in _maxwell(tuple(exponents)).items())


def laplacian(terms) -> tuple[tuple[float, int, int, int], ...]:
    """The Laplacian of a polynomial given as monomials (coefficient, a, b, c)."""
    out = []
    for coef, a, b, c in terms:
        if a > 1:
            out.append((coef * a * (a - 1), a - 2, b, c))
        if b > 1:
            out.append((coef * b * (b - 1), a, b - 2, c))
        if c > 1:
            out.append((coef * c * (c - 1), a, b, c - 2))
    return _collect(out)


def heat_pieces(terms) -> dict[tuple[int, int], tuple[tuple[float, int, int, int], ...]]:
    """A polynomial T split for Gaussian averages: E[T(m + xi)], xi ~ Normal(0, h I), is
    sum_j (h/2)^j / j! (Laplacian^j T)(m) (the heat-kernel series, finite for a
    polynomial). Returns {(j, d): the monomials of degree d of Laplacian^j T}, non-empty
    pieces only."""
    pieces = {}
    j = 0
    while terms:
        for term in terms:
            pieces.setdefault((j, sum(term[1:])), []).append(term)
        terms = laplacian(terms)
        j += 1
    return {key: tuple(value) for key, value in sorted(pieces.items())}
