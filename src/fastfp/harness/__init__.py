"""Benchmark and profiling harness.

:mod:`fastfp.harness.stages` defines the pipeline stages (featurize, scale, store,
collate, train one epoch, end-to-end preprocessing) once, for each backend
(``"amptorch"``, ``"fastfp"``, ``"cupy"``); the asv suite in ``benchmarks/``,
``fastfp bench`` (:mod:`fastfp.harness.bench`) and the profilers reuse them.
"""
