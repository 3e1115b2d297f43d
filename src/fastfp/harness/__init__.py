"""Benchmark and profiling harness: what measures fastfp against AMPTorch.

One module per concern:

* :mod:`~fastfp.harness.backends`: what can run here, and why not;
* :mod:`~fastfp.harness.settings`: every ``FASTFP_BENCH_*`` variable with its default,
  the descriptor settings, the memory and disk budgets;
* :mod:`~fastfp.harness.workloads`: the frames (the embedded 16,000-frame workload, the
  shared real data, any ASE file);
* :mod:`~fastfp.harness.stages`: the pipeline stages, once for every backend, which the
  asv suite in ``benchmarks/`` and the profilers time;
* :mod:`~fastfp.harness.bench` runs asv (``fastfp bench``), :mod:`~fastfp.harness.results`
  turns its results into ``summary.md`` and a plot;
* :mod:`~fastfp.harness.profile` runs the profilers (``fastfp profile``) on
  :mod:`~fastfp.harness.child`, the profiled process, and
  :mod:`~fastfp.harness.summarise` summarises what they recorded.
"""
