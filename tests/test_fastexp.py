"""The vectorised exp of the descriptor kernels against libm's exp (``math.exp``: numpy's
``np.exp`` has its own SIMD exp on some CPUs, e.g. numpy 1.23 with AVX-512, which is not
libm's)."""

import math

import numba
import numpy as np

from fastfp.kernels.fastexp import exp_nonpositive


@numba.njit
def _fast(x):
    out = np.empty_like(x)
    for m in range(len(x)):
        out[m] = exp_nonpositive(x[m])
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


def test_a_loop_of_it_is_vectorised():
    """The point of the inline exp: a loop calling it runs on SIMD registers (packed fma)."""
    x = np.full(64, -1.0)
    _fast(x)
    asm = "".join(_fast.inspect_asm().values())
    assert "vfmadd" in asm and "pd" in asm.split("vfmadd", 1)[1][:8], "no packed fma in the exp loop"
