"""The vectorised exp of the descriptor kernels against libm's exp (``math.exp``: numpy's
``np.exp`` has its own SIMD exp on some CPUs, e.g. numpy 1.23 with AVX-512, which is not
libm's)."""

import math

import numpy as np

from fastfp.kernels.fastexp import exp_nonpositive


def _fast(x):
    out = np.empty_like(x)
    exp_nonpositive(x, out, np.empty(len(x), dtype=np.int64), len(x))
    return out


def test_within_one_ulp_of_libm():
    rng = np.random.default_rng(0)
    x = -np.concatenate([rng.uniform(0, 708, 200_000), rng.uniform(0, 1, 100_000), 10.0 ** rng.uniform(-300, 0, 1000)])
    got, want = _fast(x), np.array([math.exp(v) for v in x])
    assert np.all(np.abs(got - want) <= np.spacing(want))
    assert np.mean(got == want) > 0.9  # mostly the same bits


def test_edges():
    x = np.array([0.0, -0.0, -1e-320, -708.0, -708.0001, -745.2, -1e6, -np.inf])
    got = _fast(x)
    assert got[0] == got[1] == got[2] == 1.0
    assert abs(got[3] - math.exp(-708.0)) <= np.spacing(math.exp(-708.0))
    # below exp(-708) ~ 3.3e-308: 0 instead of a subnormal number
    assert np.all(got[4:] == 0.0)


def test_only_the_first_n_entries_are_written():
    x = np.full(8, -1.0)
    out = np.full(8, 7.0)
    exp_nonpositive(x, out, np.empty(8, dtype=np.int64), 5)
    assert np.allclose(out[:5], math.exp(-1.0)) and np.all(out[5:] == 7.0)
