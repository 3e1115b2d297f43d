"""exp(x) for x <= 0 as a function the compiler inlines and vectorises in the loops calling it.

The descriptor kernels evaluate 20-40 Gaussian decays exp(c r^2) per pair; numba calls
libm's scalar ``exp`` for each (no SVML in numba builds without it). This is the classic
Cody-Waite scheme (W. J. Cody and W. Waite, *Software Manual for the Elementary
Functions*, 1980): x = k ln 2 + r with |r| <= ln 2 / 2, exp(r) by its degree-13 Taylor
polynomial (truncation < 1e-17 relative), 2^k put into the exponent bits (a bit cast,
:func:`_as_float`, so no memory round trip). Within 1 ulp of glibc's exp
(tests/test_fastexp.py); results below exp(-708) ~ 3.3e-308 are returned as 0 rather
than as subnormal numbers.
"""

import math

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125  # ln 2 split so that k * _LN2_HI is exact for |k| < 2^11
_LN2_LO = 1.42860682030941723212e-6
_SHIFTER = 6755399441055744.0  # 1.5 * 2^52: adding it rounds to an integer kept in the low bits
_SHIFTER_BITS = 0x4338000000000000
_LOWEST = -708.0
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = (1.0 / math.factorial(n) for n in range(2, 14))


@intrinsic
def _as_float(typingctx, bits):
    """The float64 whose bits are the int64 ``bits`` (a bit cast, no conversion)."""
    if bits != types.int64:
        return None
    return types.float64(types.int64), lambda context, builder, sig, args: builder.bitcast(args[0], ir.DoubleType())


@intrinsic
def _as_bits(typingctx, value):
    """The int64 whose bits are those of the float64 ``value``."""
    if value != types.float64:
        return None
    return types.int64(types.float64), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(64))


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def exp_nonpositive(x):
    """exp(``x``) for ``x <= 0`` (float64). Positive ``x`` are not supported (the result
    is wrong).

    LLVM inlines it into the compiled loops that call it, keeping its own fused
    multiply-adds (numba's ``inline="always"`` would take the caller's fastmath flags
    instead), and vectorises them."""
    v = max(x, _LOWEST)
    t = v * _LOG2E + _SHIFTER
    k = t - _SHIFTER
    r = (v - k * _LN2_HI) - k * _LN2_LO
    p = _C13 * r + _C12
    p = p * r + _C11
    p = p * r + _C10
    p = p * r + _C9
    p = p * r + _C8
    p = p * r + _C7
    p = p * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * r + 1.0
    p = p * r + 1.0
    # 2^k: the integer k sits in the low bits of t
    scale = _as_float((_as_bits(t) - _SHIFTER_BITS + 1023) << 52)
    return p * scale if x >= _LOWEST else 0.0
