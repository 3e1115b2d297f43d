"""Compiled (numba) kernels. Each takes flat arrays and returns flat arrays."""
