"""The heat-kernel split of MCSH polynomials (what the GMP kernel relies on)."""

from math import factorial

import numpy as np
import pytest

from fastfp import harmonics


def _value(terms, point):
    return sum(c * point[0] ** a * point[1] ** b * point[2] ** e for c, a, b, e in terms)


def _gaussian_moment(u, h, k):
    """E[(u + xi)^k], xi ~ Normal(0, h): P_{k+1} = u P_k + k h P_{k-1}."""
    prev, cur = 1.0, u
    if k == 0:
        return prev
    for n in range(1, k):
        prev, cur = cur, u * cur + n * h * prev
    return cur


@pytest.mark.parametrize("order", range(0, 10))
def test_heat_pieces_give_the_gaussian_average(order):
    rng = np.random.default_rng(order)
    for group in range(1, harmonics.n_groups(order) + 1):
        for e in harmonics.group_components(order, group):
            terms = harmonics.surface_terms(e)
            pieces = harmonics.heat_pieces(terms)
            m, h = rng.normal(size=3), rng.uniform(0.05, 2.0)
            want = sum(c * _gaussian_moment(m[0], h, a) * _gaussian_moment(m[1], h, b) * _gaussian_moment(m[2], h, k)
                       for c, a, b, k in terms)
            got = sum((h / 2) ** j / factorial(j) * _value(piece, m) for (j, d), piece in pieces.items())
            assert got == pytest.approx(want, rel=1e-10, abs=1e-10 * max(1.0, abs(want)))
            assert all(sum(t[1:]) == d for (j, d), piece in pieces.items() for t in piece)


@pytest.mark.parametrize("order", range(0, 10))
def test_solid_harmonics_are_harmonic(order):
    """Why the kernel takes a solid harmonic as one piece (j = 0): its Laplacian vanishes."""
    for group in range(1, harmonics.n_groups(order) + 1):
        for e in harmonics.group_components(order, group):
            assert harmonics.laplacian(harmonics.solid_terms(e)) == ()
