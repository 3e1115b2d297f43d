"""Fingerprints on a CUDA GPU: ``Descriptor.featurize(frames, device="cuda")``.

Kernels are numba-cuda (``@cuda.jit``), host code goes through an array module: CuPy on
a GPU, NumPy under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, which runs every
GPU thread in Python, for tests). Nothing here is imported by ``import fastfp`` or by the
CPU path; CuPy and numba-cuda are needed only once ``device="cuda"`` is asked for.

Modules: :mod:`.device` (which array module, errors, memory, launches), :mod:`.frames`
(frames packed on the device), :mod:`.neighbors` (batched neighbour list and derivative
block layout), :mod:`.blocks` (writing blocks from a warp), :mod:`.gmp` and
:mod:`.gaussian` (descriptor kernels), :mod:`.featurize` (the driver), :mod:`.jacobian`
(products with the derivative matrix recomputed by the kernels, for training).
"""
