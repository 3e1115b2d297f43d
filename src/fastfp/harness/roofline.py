"""A roofline of fastfp's CPU kernels: each kernel's time against the time its work
would take at the machine's roofs.

For a kernel on real frames with the benchmark settings (:func:`kernel_run`), the work
is counted from its formulas (:mod:`fastfp.harness.work`: flops, exp calls, bytes), the
roofs are measured on this machine (:mod:`fastfp.harness.roofs`), and the kernel is
timed, all in one process and with the same threads (:func:`measure`). The time at a
roof is the work's count over the roof's rate (flops, memory: reads and writes at their
rates, exp: fastexp and libm calls at theirs); the largest of the three is the roof that
binds the kernel, and its **share** is that time over the kernel's measured time: 100%
is a kernel that runs at the roof that binds it, 25% one that takes four times as long.

Kernels (:data:`KERNELS`):

``gmpordernorm``, ``gmp``, ``gaussian``
    fingerprints with derivatives (``Descriptor`` kernels on a neighbour list found
    beforehand), the benchmark descriptors of :func:`fastfp.harness.settings.descriptor_config`,
    in batches of :data:`BATCH_FRAMES` frames;
``coo``
    the derivative blocks of ``gmpordernorm`` to AMPTorch's COO entries
    (:meth:`~fastfp.fingerprints.Fingerprints.coo_frames`, AMPTorch's 1e-5 threshold);
``contract_coo``, ``contract_blocks``
    the force contraction stage (:mod:`fastfp.harness.stages`: forces, a loss of them and
    its backward on every batch of 16) on AMPTorch's COO matrices and on the pair blocks
    of fastfp's data set (:mod:`fastfp.amptorch.frame_blocks`), ``gmpordernorm``.

``python scripts/roofline.py --data FRAMES --frames 100`` prints the table
(:func:`table`; ``reports/findings.md``); the asv benchmark ``roofline.Roofline`` tracks
the shares.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..config import build_descriptor
from ..frames import pack_frames
from ..kernels.blocks import pair_blocks
from ..threads import calling_thread_only
from . import roofs, settings, stages, work, workloads
from .backends import StageUnavailable, missing_torch

KERNELS = ("gmpordernorm", "gmp", "gaussian", "coo", "contract_coo", "contract_blocks")
#: frames per call of the featurization kernels, as training's batches call them: each
#: call's derivative blocks are memory of the call before (:mod:`fastfp.buffers`), as
#: there, not fresh memory whose page faults a single call over all frames would time
BATCH_FRAMES = 16
#: the threads a kernel runs on: the calling thread alone, or fastfp's default threads
THREADS = ("one", "default")


@dataclass(frozen=True)
class KernelRun:
    """A kernel ready to time: ``run()`` does the work counted by ``work``."""

    kernel: str
    run: Callable[[], Any]
    work: work.Work


def _featurization(kernel: str, frames, elements) -> KernelRun:
    desc = build_descriptor(settings.descriptor_config(kernel, elements))
    batches = []
    counted = work.Work()
    for start in range(0, len(frames), BATCH_FRAMES):
        packed = pack_frames(frames[start : start + BATCH_FRAMES], desc.numbers)
        pairs = desc.neighbor_pairs(packed)
        n_blocks = len(pair_blocks(pairs.ptr, pairs.j)[1])
        settings.check_memory(3 * 8 * desc.n_features * n_blocks, f"{kernel} on {packed.n_frames} frames")
        nbr_species = desc.species_of[packed.numbers[pairs.j]]
        if kernel == "gaussian":
            counted += work.gaussian(desc.tables, desc.n_features, pairs.ptr, desc.species_of[packed.numbers],
                                     nbr_species, pairs.vectors, n_blocks)
        else:
            counted += work.gmp(desc.tables, pairs.ptr, nbr_species, n_blocks)
        batches.append((packed, pairs))
    desc.featurize(frames[:1])  # loads the compiled kernel

    def run():
        for packed, pairs in batches:
            desc.featurize_pairs(packed, pairs)  # the blocks dropped at once: the next batch reuses their memory

    return KernelRun(kernel, run, counted)


def _coo(frames, elements) -> KernelRun:
    desc = build_descriptor(settings.descriptor_config("gmpordernorm", elements), amptorch=True)
    packed = pack_frames(frames, desc.numbers)
    pairs = desc.neighbor_pairs(packed)
    fps = desc.featurize_pairs(packed, pairs)

    def run():
        return fps.coo_frames(desc.prime_threshold)

    nnz = sum(len(val) for _, val, _ in run())
    counted = work.coo(len(fps.fprime_j), desc.n_features, len(fps.numbers), nnz, int(pairs.ptr[-1]))
    return KernelRun("coo", run, counted)


def _contraction(kernel: str, frames, elements) -> KernelRun:
    reason = missing_torch()
    if reason:
        raise StageUnavailable(reason)
    if not workloads.has_labels(frames):
        raise StageUnavailable(stages.NO_LABELS)
    import torch

    from ..amptorch.data import blocks_in_data, images_to_data

    torch.set_default_dtype(torch.float64)  # as AtomsTrainer does
    desc = build_descriptor(settings.descriptor_config("gmpordernorm", elements), amptorch=True)
    blocks = kernel == "contract_blocks"
    with blocks_in_data() if blocks else contextlib.nullcontext():
        data = images_to_data(desc, frames, True, True, True, disable_tqdm=True)
    pairs = int(desc.neighbor_pairs(pack_frames(frames, desc.numbers), amptorch_binning=True).ptr[-1])
    n_atoms = sum(d.num_nodes for d in data)
    width = data[0].fingerprint.shape[1]
    if blocks:
        counted = work.contraction_blocks(sum(len(d.fprimes.fprime_j) for d in data), width, n_atoms, pairs)
    else:
        counted = work.contraction_coo(sum(d.fprimes._nnz() for d in data), n_atoms * width, n_atoms, pairs)
    return KernelRun(kernel, stages.build("force_contraction", "fastfp", frames, data=data, elements=elements),
                     counted)


def kernel_run(kernel: str, frames, elements) -> KernelRun:
    """The :data:`KERNELS` entry ``kernel`` on ``frames`` (ASE ``Atoms``) with the
    benchmark settings for ``elements``. Raises
    :class:`~fastfp.harness.backends.StageUnavailable` where it cannot run (the force
    contraction needs torch and frames with energies and forces), ``ValueError`` for an
    unknown kernel. Raises StageUnavailable too where the derivative blocks would not
    fit in memory (:func:`~fastfp.harness.settings.check_memory`: the Gaussian benchmark
    settings give thousands of features to OC20's fifty elements)."""
    if kernel in ("gmpordernorm", "gmp", "gaussian"):
        return _featurization(kernel, frames, elements)
    if kernel == "coo":
        return _coo(frames, elements)
    if kernel in ("contract_coo", "contract_blocks"):
        return _contraction(kernel, frames, elements)
    raise ValueError(f"unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")


@dataclass(frozen=True)
class Share:
    """A kernel's measured ``seconds`` on ``threads`` against the time its ``work``
    takes at each roof of ``roofs``."""

    kernel: str
    threads: str
    seconds: float
    work: work.Work
    roofs: roofs.Roofs

    @property
    def times(self) -> dict:
        """Seconds at the flops, memory and exp roofs (:meth:`~fastfp.harness.roofs.Roofs.times`)."""
        return self.roofs.times(self.work)

    @property
    def binding(self) -> str:
        """The roof whose time is the longest."""
        times = self.times
        return max(times, key=times.get)

    @property
    def share(self) -> float:
        """Time at the binding roof / measured time."""
        return self.times[self.binding] / self.seconds


def best_roofs(measured) -> roofs.Roofs:
    """Each rate the best of the :class:`~fastfp.harness.roofs.Roofs` ``measured`` (of one
    thread count): a roof is what the machine can give, and other processes' load lowers
    a single measurement."""
    return roofs.Roofs(*(max(rates) for rates in zip(*(dataclasses.astuple(r) for r in measured))))


#: the roofs measured in this process, by thread count (:func:`best_roofs` of them)
_ROOFS: dict[int, roofs.Roofs] = {}


def _measured_roofs() -> roofs.Roofs:
    """The roofs on :func:`~fastfp.threads.num_threads` threads, measured now, each
    rate the best of this measurement and the earlier ones of this process."""
    now = roofs.measure()
    _ROOFS[now.threads] = best_roofs([now, _ROOFS.get(now.threads, now)])
    return _ROOFS[now.threads]


def measure(run: KernelRun, threads: str, repeat: int = 3) -> Share:
    """Time ``run`` (the best of ``repeat`` calls) on ``threads`` (:data:`THREADS`) and
    compare it with the roofs of those threads, measured just before and just after (and
    earlier in this process: :func:`_measured_roofs`)."""
    if threads not in THREADS:
        raise ValueError(f"threads must be one of {THREADS}, got {threads!r}")
    with calling_thread_only() if threads == "one" else contextlib.nullcontext():
        _measured_roofs()
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            run.run()
            best = min(best, time.perf_counter() - t0)
        machine = _measured_roofs()
    return Share(run.kernel, threads, best, run.work, machine)


def table(shares: list[Share]) -> str:
    """Markdown: per kernel and threads, the work per pair, the measured time, the time
    at each roof, the binding roof and the share, all against the best roofs of the
    shares' thread count (:func:`best_roofs`); then those roofs."""
    machine = {n: best_roofs([s.roofs for s in shares if s.roofs.threads == n])
               for n in {s.roofs.threads for s in shares}}
    lines = ["| kernel | threads | flops / pair | exp / pair | bytes / pair (read + written) | time | "
             "at flops | at memory | at exp | binding | share |", "|" + "---|" * 11]
    ms = "{:.1f} ms".format
    for s in (dataclasses.replace(s, roofs=machine[s.roofs.threads]) for s in shares):
        p = s.work.per_pair()
        exps = p["exps"] + p["libm_calls"]
        times = s.times
        lines.append(f"| {s.kernel} | {s.threads} | {p['flops']:.0f} | {exps:.1f} | "
                     f"{p['bytes_read'] + p['bytes_written']:.0f} ({p['bytes_read']:.0f} + {p['bytes_written']:.0f}) | "
                     f"{ms(1e3 * s.seconds)} | {ms(1e3 * times['flops'])} | {ms(1e3 * times['memory'])} | "
                     f"{ms(1e3 * times['exp'])} | {s.binding} | {100 * s.share:.0f}% |")
    lines += ["", "| threads | flops | read | write | fastexp | libm exp |", "|---|---|---|---|---|---|"]
    for n, r in sorted(machine.items()):
        lines.append(f"| {n} | {r.flops / 1e9:.1f} GFLOP/s | {r.read / 1e9:.1f} GB/s | {r.write / 1e9:.1f} GB/s "
                     f"| {r.exp / 1e9:.2f} G/s | {r.libm / 1e9:.2f} G/s |")
    return "\n".join(lines) + "\n"
