"""Every GPU kernel compiles to PTX for sm_90 (H100/H200), with no GPU needed.

numba's CUDA simulator runs kernels as Python and so misses typing errors; this compiles
them with numba-cuda and NVVM (``cuda-toolkit[nvvm]``) instead. The kernels and their
argument types are those the host code really launches: ``device="cuda"`` runs with
NumPy for the array module and a launcher that records each launch instead of running
it (counts stay zero, so later launches get empty arrays of the same types).
"""

import re
from types import SimpleNamespace

import numpy as np
import pytest

from fastfp.frames import pack_frames
from fastfp.gpu import device, featurize, gaussian, gmp, jacobian, neighbors
from gpu_cases import DESCRIPTORS, descriptor, frames

pytestmark = pytest.mark.skipif(device.simulated(), reason="numba's CUDA simulator compiles no PTX")
pytest.importorskip("numba_cuda", reason="needs numba-cuda with NVVM (the 'test' extra: numba-cuda[cu13]); "
                                         "numba's own deprecated numba.cuda compiles differently")


def test_every_kernel_compiles_to_ptx_for_sm90(tmp_path, monkeypatch):
    from numba import cuda
    from numba.cuda import dispatcher

    try:  # numba-cuda's own type system (recent versions), else numba's
        from numba.cuda.typing.typeof import Purpose, typeof
    except ImportError:
        from numba.core.typing.typeof import Purpose, typeof

    launched = []
    for module in (neighbors, gmp, gaussian, jacobian):
        monkeypatch.setattr(module, "launch", lambda kernel, n, *args, **options: launched.append((kernel, args)))
    for module in (featurize, jacobian):
        monkeypatch.setattr(module, "array_module", lambda: np)
    # numba-cuda compiles device functions (the shared formulas) for the current
    # device's compute capability, which needs a driver: stand in a 9.0 device
    monkeypatch.setattr(dispatcher, "get_current_device", lambda: SimpleNamespace(compute_capability=(9, 0)))
    batch = list(frames().values())
    for name in DESCRIPTORS:
        for derivatives in (True, False):
            for result_dtype in ("float64", "float32"):
                descriptor(name, tmp_path).featurize(batch, derivatives=derivatives, device="cuda",
                                                     result_dtype=result_dtype)
        desc = descriptor(name, tmp_path)  # derivatives recomputed in the products (float64)
        jac = jacobian.DeviceJacobian(desc, featurize.to_device(np, pack_frames(batch, desc.numbers)))
        jac.product(np.zeros((jac.n_atoms, 3)))
        jac.transposed_product(np.zeros((jac.n_atoms, desc.n_features)))

    compiled = set()
    for kernel, args in launched:
        signature = tuple(typeof(a, Purpose.argument) for a in args)
        if (kernel, signature) in compiled:
            continue
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
        name = kernel.py_func.__name__
        assert ".target sm_90" in ptx and ".entry" in ptx, name
        if name != "_pairs" and "float32" in str(signature[-1]):  # results in float32: computed in float32
            # (libdevice's sinf and cosf reduce large arguments with a float64 multiply)
            assert not re.search(r"\b(fma\.rn|add|sub|div\.rn)\.f64", ptx), name
        compiled.add((kernel, signature))
    names = {kernel.py_func.__name__ for kernel, _ in compiled}
    assert names == {"_pairs", "gmp", "gaussian", "sum_pair_vectors"}
    # GMP descriptors of different sizes give different kernels, one for float64 and one for float32
    assert len({k for k, _ in compiled if k.py_func.__name__ == "gmp"}) == 4 * 2
