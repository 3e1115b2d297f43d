"""Check fastfp's GPU path on a CUDA machine, time it against the CPU, write a report.

On a machine with network, from the repository root::

    python3 scripts/gpu_check.py --prepare

downloads the wheels a GPU machine lacks into ``.whl/`` (:data:`WHEELS`) and copies
what the GPU tests read of the shared data into ``.shared/``. Then on a machine with an
NVIDIA GPU (written for an H100 or H200; no network needed), with both folders copied
along, from the repository root::

    python3 scripts/gpu_check.py --out reports/gpu.md

It (1) installs the wheels in ``.whl/`` whose packages are missing or at another
version into a temporary folder put first on the import path, (2) runs the GPU tests
(``tests/gpu``) on the device, (3) builds the default workload (16,000 frames of water on
Cu(111), :func:`fastfp.harness.workloads.load_workload`, all cores), (4) measures the
device's roofs (:func:`fastfp.gpu.roofs.measure_roofs`: FMA and exp rates in float64 and
float32, write bandwidth), (5) finds the CPU's fastest batch size and its scaling with
threads, then, ``--runs`` times (2, to show the spread): (6) times featurizing all frames
with derivatives on the GPU in float64 and in float32 (the benchmark descriptor:
GMPOrderNorm, MCSH orders 0-3 x 5 sigmas 0.4-2.0 Å, cutoff 8 Å, psp_v3 pseudodensities):
frames in host memory (ASE ``Atoms``) to fingerprints and derivative blocks on the device,
in batches of ``--batch-frames`` frames whose results are dropped before the next, (7)
takes one batch apart (:func:`batch_parts`: the host's part, each stage's device time, the
GMP kernel's share of its roof from :func:`kernel_counts`), (8) times one on-the-fly
training epoch on the device (:class:`EpochRun`) with derivative blocks (the GPU's
default) and with derivatives recomputed in the force contraction
(``fastfp_fprimes="recomputed"``), and (9) times all frames with fastfp on
all CPU cores at the CPU's fastest batch size, until ``--budget`` seconds of the whole run
would be exceeded (the report then says which frames it was timed on). The report names
the device and the software, and sets each figure beside issue 23's target.

``--simulate`` runs everything that needs no GPU in numba's CUDA simulator, on the CPU
(``tests/test_gpu.py`` runs ``--simulate --frames 1`` in CI), so that a GPU run is not the
script's first run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# issue 23's targets on an H100 or H200, for 16,000 frames
TARGET_GPU_S = 0.5  # featurized with derivatives, float64
TARGET_GPU32_S = 0.25  # the same in float32
TARGET_SHARE = 0.25  # the GMP kernel's share of the roof that binds it
TARGET_EPOCH_S = 1.0  # one on-the-fly training epoch, float64
TARGET_RATIO = 50.0  # CPU (all cores, its fastest batch size) over GPU
TRAIN_BATCH = 256
#: how the on-the-fly epoch's batches hand over their derivatives, each timed
#: (``OnTheFlyDataset(..., fprimes=...)``): blocks (the GPU's default) and recomputed
FPRIMES = ("blocks", "recomputed")
# What a GPU machine without network lacks (its image: Python 3.12, CUDA 13, torch, CuPy,
# numba, numba-cuda, h5py, torch_geometric): ASE, vesin and matscipy; pydantic (fastfp's
# typed parameters) with the versions of its dependencies it was tested with, where the
# image has none or others; and a NumPy below 2.5, since numba-cuda 0.30.4's CUDA target
# registers np.row_stack, which NumPy 2.5 (the image's) removed ("AttributeError: module
# 'numpy' has no attribute 'row_stack'" at the first kernel compilation, seen on an H200
# on 2026-11-27).
WHEELS = ("ase==3.29.0", "vesin==0.6.2", "matscipy==1.3.1", "numpy==2.4.6", "pydantic==2.14.4",
          "pydantic-core==2.50.5", "annotated-types==0.8.0", "typing-inspection==0.4.5", "typing-extensions==4.16.0")
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                   "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
# of an AMPTorch reference file, what the GPU tests read (settings and frames: they
# compare the GPU with the CPU); the rest (AMPTorch's results) would not fit in what a
# device call carries (64 MiB)
REFERENCE_KEYS = re.compile(r"config|nframes|(numbers|positions|cell|pbc)_\d+")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "gpu.md", help="markdown report to write")
    parser.add_argument("--frames", type=int, default=16_000, help="frames of the default workload (16,000)")
    parser.add_argument("--batch-frames", type=int, default=2000, help="frames per featurize call (2,000)")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds for the whole run; the CPU timing stops at a batch boundary before it")
    parser.add_argument("--runs", type=int, default=2, help="times the figures are measured, to show their spread (2)")
    parser.add_argument("--check-frames", type=int, default=8,
                        help="frames compared with the CPU path after the first (compiling, untimed) GPU call")
    parser.add_argument("--simulate", action="store_true", help="numba's CUDA simulator on the CPU (no GPU)")
    parser.add_argument("--tests", default="", help="pytest -k expression selecting GPU tests (default: all)")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl",
                        help="wheels to install where the package is missing or at another version")
    parser.add_argument("--prepare", action="store_true",
                        help="on a machine with network: download the wheels into --wheels and copy what the "
                             "GPU tests read of the shared data into .shared/, then exit")
    parser.add_argument("--shared", type=Path, default=None,
                        help="shared data folder (gmp/, reference/); default $FASTFP_SHARED, else .shared/ "
                             "in the repository if present, else ../shared")
    return parser.parse_args(argv)


def prepare_environment(args) -> Path | None:
    """Simulator flag, import path, wheels, shared data; returns a temporary folder to
    remove at the end (installed wheels), or None."""
    if args.simulate:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba is first imported
    paths = [str(ROOT / "src")]
    site = None
    wheels = _to_install(sorted(args.wheels.glob("*.whl")))
    if wheels:
        site = Path(tempfile.mkdtemp(prefix="fastfp-wheels-"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(site), *map(str, wheels)], check=True)
        paths.append(str(site))
    sys.path[:0] = paths
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    try:
        import ase  # noqa: F401
        import matscipy  # noqa: F401
        import threadpoolctl  # noqa: F401
        import vesin  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"{exc}, and no wheel for it in {args.wheels} (README, section GPU)") from None
    shared = args.shared or os.environ.get("FASTFP_SHARED")
    if shared is None:
        shared = ROOT / ".shared" if (ROOT / ".shared").is_dir() else ROOT.parent / "shared"
    os.environ["FASTFP_SHARED"] = str(Path(shared).resolve())
    os.environ["FASTFP_GMP_DIR"] = str(Path(shared).resolve() / "gmp")
    return site


def _to_install(wheels: list[Path]) -> list[Path]:
    """The ``wheels`` this Python can install whose distributions are missing or at
    another version (wheels built for another Python or platform are left alone)."""
    from importlib import metadata

    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    supported = set(sys_tags())
    chosen = []
    for wheel in wheels:
        name, version, _, tags = parse_wheel_filename(wheel.name)
        if supported.isdisjoint(tags):
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != str(version):
            chosen.append(wheel)
    return chosen


def prepare(args) -> None:
    """Download :data:`WHEELS` for CPython 3.12 on x86-64 Linux into ``args.wheels`` and
    copy into ``.shared/`` in the repository the GMP pseudodensities and, of each AMPTorch
    reference file, :data:`REFERENCE_KEYS`; both git-ignored. Each folder is built beside
    its place and then put there, replacing an older one."""
    source = Path(args.shared or os.environ.get("FASTFP_SHARED") or ROOT.parent / "shared")
    if not (source / "reference").is_dir() or not (source / "gmp").is_dir():
        raise SystemExit(f"{source}: no gmp/ and reference/ here; name the shared folder with --shared")
    import numpy as np

    exclude = Path(subprocess.run(["git", "rev-parse", "--git-path", "info/exclude"], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout.strip())
    exclude = exclude if exclude.is_absolute() else ROOT / exclude
    exclude.parent.mkdir(parents=True, exist_ok=True)
    ignored = exclude.read_text().splitlines() if exclude.is_file() else []
    for path in (args.wheels, ROOT / ".shared"):
        line = f"/{path.resolve().relative_to(ROOT)}/"
        if line not in ignored:
            with exclude.open("a") as out:
                out.write(line + "\n")

    def replace(target: Path, fill) -> None:
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            fill(staging)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def download(folder: Path) -> None:
        platforms = [arg for name in WHEEL_PLATFORMS for arg in ("--platform", name)]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder),
                        *WHEELS], check=True)

    def copy_shared(folder: Path) -> None:
        shutil.copytree(source / "gmp", folder / "gmp")
        (folder / "reference").mkdir()
        for path in sorted((source / "reference").glob("*.npz")):
            with np.load(path) as data:
                np.savez_compressed(folder / "reference" / path.name,
                                    **{key: data[key] for key in data.files if REFERENCE_KEYS.fullmatch(key)})

    replace(args.wheels, download)
    replace(ROOT / ".shared", copy_shared)
    sizes = {path: sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) for path in (args.wheels, ROOT / ".shared")}
    print(", ".join(f"{path}: {size / 2**20:.1f} MiB" for path, size in sizes.items()))


def describe_device(simulated: bool) -> list[str]:
    """Lines naming the device and the software."""
    import numba
    import numpy

    lines = [f"- host: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
             f"NumPy {numpy.__version__}, numba {numba.__version__}"]
    if simulated:
        return ["- device: **numba's CUDA simulator on the CPU** (no GPU; timings are not GPU timings)"] + lines
    import cupy
    from numba import cuda

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    free, total = cupy.cuda.Device().mem_info
    lines.insert(0, f"- device: **{props['name'].decode()}**, compute capability {props['major']}.{props['minor']}, "
                    f"{props['multiProcessorCount']} SMs, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free)")
    lines.append(f"- CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, driver {cupy.cuda.runtime.driverGetVersion()}, "
                 f"numba.cuda: {getattr(cuda, 'implementation', '?')}; "
                 + ", ".join(f"{name} {_version(name)}" for name in ("cupy-cuda13x", "cupy-cuda12x", "numba-cuda", "torch")))
    return lines


def _version(distribution: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def run_gpu_tests(selection: str) -> tuple[bool, str]:
    """``pytest tests/gpu`` in a subprocess (this environment: GPU or simulator)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/gpu"]
    if selection:
        command += ["-k", selection]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines()
    summary = next((line for line in reversed(lines) if re.search(r"\d+ (passed|failed|error)", line)), "no summary")
    ok = done.returncode == 0 and "passed" in summary
    failures = "\n".join(line for line in lines if line.startswith(("FAILED", "ERROR")))
    return ok, summary + (f"\n\n```\n{failures}\n```" if failures else "")


def batches(frames, size):
    return [frames[k : k + size] for k in range(0, len(frames), size)]


def _timed(run, batch) -> tuple:
    """``(run(batch), seconds it took)``."""
    start = time.perf_counter()
    result = run(batch)
    return result, time.perf_counter() - start


def time_batches(featurize, groups, stop_at=None) -> list[float]:
    """Seconds of ``featurize(batch)`` for each batch, stopping before a batch that would
    end after ``stop_at`` (time.perf_counter() value), judged by the mean so far."""
    seconds = []
    for batch in groups:
        if stop_at is not None and seconds and time.perf_counter() + sum(seconds) / len(seconds) > stop_at:
            break
        seconds.append(_timed(featurize, batch)[1])
    return seconds


# -- the device's roofs and the kernels' shares of them ---------------------------------


def kernel_counts(desc, n_pairs: int, pair_species, n_blocks: int, n_atoms: int, itemsize: int) -> dict:
    """The work of one batch for the GMP kernel: ``{"flops", "exps", "bytes"}``, the
    arithmetic of one evaluation of the per-pair formulas (:mod:`fastfp.kernels.formulas`;
    the kernel's second pass computes the pair's terms again, not counted) read off the
    descriptor's tables, and the bytes the kernel cannot avoid moving (pairs and block
    layout read, fingerprints and derivative blocks written).

    ``pair_species`` (n_elements,): the pairs whose neighbour is of each element.
    (The CPU kernel works on monomial moments, not these per-pair formulas, so
    :func:`fastfp.harness.work.gmp` counts a different algorithm.)
    """
    import numpy as np

    t = desc.tables
    n_probe, _, n_slots = t.overlap_pref.shape
    gaussians = np.diff(t.gauss_ptr)
    exps = n_probe * float(np.dot(pair_species, gaussians))
    terms = t.term_exp
    gradient = float((terms > 0).sum())  # a gradient term per non-zero exponent
    per_pair = (5 + 3 * t.max_degree  # |D|^2 and the powers of D
                + 4 * len(terms) + 5 * gradient  # Q_p and grad Q_p
                + 2 * int(np.diff(t.comp_piece_ptr)[t.chan_comp].sum())  # mu_c
                + 8 * len(t.poly_term_piece) + 14 * len(t.poly_slot))  # d feature / dD
    flops = n_pairs * per_pair + n_probe * float(np.dot(pair_species, gaussians)) * (1 + 4 * n_slots)
    width = 3 * t.n_features
    moved = (n_pairs * (8 + 8 + 3 * itemsize)  # j, its block, the vector
             + n_blocks * (8 + width * itemsize)  # the block's first pair, the block
             + n_atoms * (16 + t.n_features * itemsize))  # the pointers, the fingerprint row
    return {"flops": flops, "exps": exps, "bytes": float(moved)}


def kernel_share(seconds: float, counts: dict, roofs: dict, bits: int) -> tuple[float, str]:
    """The share of the binding roof a kernel reached in ``seconds``, and which roof:
    each of the arithmetic (flops at the ``bits`` FMA rate plus exps at the exp rate)
    and the memory (bytes at the write rate) gives a least time; the larger binds."""
    compute = counts["flops"] / roofs[f"fp{bits}"] + counts["exps"] / roofs[f"exp{bits}"]
    memory = counts["bytes"] / roofs["write"]
    return max(compute, memory) / seconds, ("arithmetic" if compute >= memory else "memory")


class StageTimes:
    """``stage(name)`` for :func:`fastfp.gpu.featurize.featurize_packed`: each stage's
    device and wall seconds (:func:`fastfp.gpu.roofs.timing`)."""

    def __init__(self):
        self.device = {}
        self.wall = {}

    @contextlib.contextmanager
    def __call__(self, name):
        from fastfp.gpu.roofs import timing

        with timing() as times:
            yield
        self.device[name], self.wall[name] = times["device"], times["wall"]


def batch_parts(desc, batch, roofs, repeats: int = 3) -> dict:
    """One batch taken apart, fastest of ``repeats``: seconds of packing on the host,
    each stage of :func:`~fastfp.gpu.featurize.featurize_packed` (device and wall), the
    whole call with a synchronize at the end, the host's part (the whole call less the
    device time of its stages); the GMP kernel's work, and its share of the roof."""
    import numpy as np

    from fastfp.frames import pack_frames
    from fastfp.gpu.device import array_module, synchronize
    from fastfp.gpu.featurize import featurize_packed
    from fastfp.gpu.frames import to_device
    from fastfp.gpu.neighbors import neighbor_pairs

    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        packed = pack_frames(batch, desc.numbers)
        pack = time.perf_counter() - start
        stages = StageTimes()
        featurize_packed(desc, packed, derivatives=True, result_dtype=np.dtype(np.float64), stage=stages)
        start = time.perf_counter()
        desc.featurize(batch, device="cuda")
        synchronize()
        whole = time.perf_counter() - start
        part = {"pack": pack, "whole": whole, "device": stages.device, "wall": stages.wall}
        if best is None or whole < best["whole"]:
            best = part
    best["host"] = best["whole"] - sum(best["device"].values())
    xp = array_module()
    packed = pack_frames(batch, desc.numbers)
    pairs = neighbor_pairs(xp, to_device(xp, packed), desc.cutoff, self_pairs=True, blocks=True)
    species = xp.asarray(desc.species_of)[xp.asarray(packed.numbers)][pairs.j]
    pair_species = np.asarray(xp.bincount(species, minlength=len(desc.elements)).tolist())
    counts = kernel_counts(desc, len(pairs.j), pair_species, len(pairs.block_j), packed.n_atoms, 8)
    best["counts"] = counts
    if roofs is not None:
        best["share"] = kernel_share(best["device"]["descriptor kernel"], counts, roofs, 64)
    return best


# -- the CPU ---------------------------------------------------------------------------


def cpu_batch_sizes(desc, frames, sizes, stop_at) -> dict[int, float]:
    """Seconds per frame of fastfp on the CPU (all threads) featurizing ``frames`` in
    batches of each of ``sizes`` frames (one untimed batch first), as far as ``stop_at``."""
    per_frame = {}
    for size in sizes:
        groups = batches(frames, size)
        desc.featurize(groups[0])
        seconds = time_batches(desc.featurize, groups, stop_at)
        per_frame[size] = sum(seconds) / sum(len(g) for g in groups[: len(seconds)])
    return per_frame


def cpu_scaling(desc, frames, thread_counts) -> dict[int, float]:
    """Seconds of featurizing ``frames`` (one call) on each number of threads
    (``FASTFP_NUM_THREADS``), fastest of two."""
    saved = os.environ.get("FASTFP_NUM_THREADS")
    seconds = {}
    try:
        for threads in thread_counts:
            os.environ["FASTFP_NUM_THREADS"] = str(threads)
            seconds[threads] = min(_timed(desc.featurize, frames)[1] for _ in range(2))
    finally:
        if saved is None:
            os.environ.pop("FASTFP_NUM_THREADS", None)
        else:
            os.environ["FASTFP_NUM_THREADS"] = saved
    return seconds


# -- the run ----------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.prepare:
        prepare(args)
        return 0
    started = time.perf_counter()
    stop_at = started + args.budget
    site = prepare_environment(args)
    report = ["# fastfp on the GPU: `scripts/gpu_check.py` report", ""]
    ok = True
    try:
        from fastfp.config import build_descriptor
        from fastfp.gpu.device import simulated, synchronize
        from fastfp.gpu.roofs import measure_roofs
        from fastfp.harness.settings import descriptor_config
        from fastfp.harness.workloads import load_workload
        from fastfp.threads import num_threads

        sim = simulated()
        report += [f"Run {time.strftime('%Y-%m-%d %H:%M %Z')}, commit "
                   f"{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip() or '?'}"
                   f", `{' '.join(['scripts/gpu_check.py', *(argv if argv is not None else sys.argv[1:])])}`.", ""]
        report += ["## Device", ""] + describe_device(sim) + [""]
        write_report(args.out, report, complete=False)

        step = time.perf_counter()
        tests_ok, summary = run_gpu_tests(args.tests)
        ok &= tests_ok
        report += ["## GPU tests (`tests/gpu`)", "",
                   f"{'passed' if tests_ok else '**FAILED**'} in {time.perf_counter() - step:.0f} s: {summary}", ""]
        write_report(args.out, report, complete=False)

        step = time.perf_counter()
        cache = Path(tempfile.mkdtemp(prefix="fastfp-workload-"))
        try:
            frames = load_workload("water-metal", n_frames=args.frames, cache_dir=cache, progress=False)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        atoms = sum(len(a) for a in frames)
        elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
        report += ["## Workload", "",
                   f"`water-metal`, first {len(frames):,} frames, {atoms:,} atoms ({elements}), built in "
                   f"{time.perf_counter() - step:.0f} s on {os.cpu_count()} CPUs. The benchmark descriptor: "
                   "GMPOrderNorm, MCSH orders 0-3 x sigmas 0.4, 0.8, 1.2, 1.6, 2.0 Å, cutoff 8 Å, psp_v3, 20 "
                   "features.", ""]
        write_report(args.out, report, complete=False)

        roofs = measure_roofs()
        report += roof_lines(roofs, sim)
        desc = build_descriptor(descriptor_config("gmpordernorm", elements))
        groups = batches(frames, args.batch_frames)

        def on_gpu(batch, result_dtype="float64"):
            """Fingerprints and derivative blocks of ``batch`` on the device, the work done."""
            fps = desc.featurize(batch, device="cuda", result_dtype=result_dtype)
            synchronize()
            return fps

        check = frames[: args.check_frames]
        cpu_check, cpu_first_s = _timed(desc.featurize, check)  # compiles or loads the CPU kernels
        gpu_check, gpu_first_s = _timed(on_gpu, check)  # compiles the GPU kernels
        deviation = _deviation(gpu_check, cpu_check)
        on_gpu(check, "float32")
        del gpu_check, cpu_check
        # one untimed full-size call each: the first grows CuPy's memory pool to a batch's
        # size, among other first-time costs (3.7 s on an H200 against 0.23 s for each
        # later batch: reports/gpu.md)
        gpu_warm_s = _timed(on_gpu, groups[0])[1] if not sim else float("nan")
        cpu_warm_s = _timed(desc.featurize, groups[0])[1]
        report += [f"GPU against CPU on the first {len(check)} frames: largest difference {deviation:.1e} of "
                   f"the largest value (fingerprints and derivatives, float64). First calls (compiling, not timed "
                   f"below): CPU {cpu_first_s:.1f} s, GPU {gpu_first_s:.1f} s; then one untimed call on "
                   f"{len(groups[0]):,} frames each: GPU {gpu_warm_s:.3g} s, CPU {cpu_warm_s:.3g} s.", ""]
        write_report(args.out, report, complete=False)

        # the CPU's fastest batch size and its scaling with threads, once
        subset = frames[: min(len(frames), 1024)]
        sizes = [size for size in (16, 64, 256, 1024) if size <= len(subset)] or [len(subset)]
        per_frame = cpu_batch_sizes(desc, subset, sizes, stop_at)
        cpu_batch = min(per_frame, key=per_frame.get)
        thread_counts = sorted({n for n in (1, 2, 4, 8, 16, 32, 64) if n < num_threads()} | {num_threads()})
        scaling = cpu_scaling(desc, frames[: min(len(frames), 128)], thread_counts)

        epoch = EpochRun(frames, elements, sim)
        runs = []
        for run in range(args.runs):
            result = {"gpu64": time_batches(on_gpu, groups),
                      "gpu32": time_batches(lambda batch: on_gpu(batch, "float32"), groups),
                      "parts": batch_parts(desc, groups[min(1, len(groups) - 1)], None if sim else roofs,
                                           repeats=1 if sim else 3)}
            for fprimes in FPRIMES:
                try:
                    result[f"epoch {fprimes}"] = epoch.run(fprimes)
                except Exception:
                    ok = False
                    result[f"epoch {fprimes} error"] = traceback.format_exc().rstrip()
            result["cpu"] = time_batches(desc.featurize, batches(frames, cpu_batch), stop_at)
            runs.append(result)
        report += results_lines(runs, frames, groups, cpu_batch, per_frame, scaling, epoch, sim, args)
        write_report(args.out, report, complete=False)
        report += kernel_profile(lambda: on_gpu(groups[0]), len(groups[0]), sim)
    except Exception:
        ok = False
        report += ["## Error", "", "```", traceback.format_exc().rstrip(), "```", ""]
    finally:
        if site is not None:
            shutil.rmtree(site, ignore_errors=True)
    report += [f"Whole run: {time.perf_counter() - started:.0f} s.", ""]
    write_report(args.out, report, complete=True)
    print("\n".join(report))
    return 0 if ok else 1


def roof_lines(roofs: dict, sim: bool) -> list[str]:
    """Report lines of :func:`fastfp.gpu.roofs.measure_roofs`."""
    if sim:
        return ["## The device's roofs", "", "Micro-benchmarks ran in the simulator: rates not measured.", ""]
    return ["## The device's roofs", "",
            "Micro-benchmarks (numba-cuda kernels, best of three): independent fused multiply-adds (2 flops each), "
            "exps, and writes to fresh device memory.", "",
            "| roof | rate |", "|---|---|",
            f"| float64 FMA | {roofs['fp64'] / 1e12:.1f} Tflop/s |",
            f"| float32 FMA | {roofs['fp32'] / 1e12:.1f} Tflop/s |",
            f"| float64 exp | {roofs['exp64'] / 1e9:.0f} G/s |",
            f"| float32 exp | {roofs['exp32'] / 1e9:.0f} G/s |",
            f"| writes | {roofs['write'] / 1e9:.0f} GB/s |", ""]


def results_lines(runs, frames, groups, cpu_batch, per_frame, scaling, epoch, sim, args) -> list[str]:
    """Report lines of the two runs: the issue's figures side by side, then the parts."""
    from fastfp.threads import num_threads

    n = len(frames)
    cpu_frames = [sum(len(g) for g in batches(frames, cpu_batch)[: len(r["cpu"])]) for r in runs]
    rows = []

    def row(what, values, target, fmt="{:.3g}", met=None):
        cells = " | ".join(fmt.format(v) if v is not None else "failed" for v in values)
        verdicts = ", ".join(_verdict(m, n, sim) for m in met) if met else ""
        rows.append(f"| {what} | {cells} | {target} | {verdicts} |")

    gpu64 = [sum(r["gpu64"]) for r in runs]
    gpu32 = [sum(r["gpu32"]) for r in runs]
    cpu = [sum(r["cpu"]) * n / f for r, f in zip(runs, cpu_frames)]
    shares = [r["parts"].get("share", (float("nan"), "?"))[0] * 100 for r in runs]
    epochs = {fprimes: [r[f"epoch {fprimes}"].seconds if f"epoch {fprimes}" in r else None for r in runs]
              for fprimes in FPRIMES}
    row(f"GPU, {n:,} frames with derivatives, float64 (s)", gpu64, f"<= {TARGET_GPU_S}",
        met=[v <= TARGET_GPU_S for v in gpu64])
    row("GPU, the same in float32 (s)", gpu32, f"<= {TARGET_GPU32_S}", met=[v <= TARGET_GPU32_S for v in gpu32])
    row("GMP kernel, share of its binding roof (%)", shares, f">= {TARGET_SHARE:.0%}", "{:.1f}",
        met=[v >= 100 * TARGET_SHARE for v in shares])
    for fprimes, values in epochs.items():
        row(f"on-the-fly epoch, SingleNN 3x20, batch {TRAIN_BATCH}, forces, float64, derivatives {fprimes} (s)",
            values, f"<= {TARGET_EPOCH_S}", met=[v is not None and v <= TARGET_EPOCH_S for v in values])
    row(f"CPU, {num_threads()} threads, batches of {cpu_batch} frames (s, for {n:,} frames)", cpu, "")
    row("CPU / GPU (float64)", [c / g for c, g in zip(cpu, gpu64)], f">= {TARGET_RATIO:.0f}", "{:.1f}",
        met=[c / g >= TARGET_RATIO for c, g in zip(cpu, gpu64)])
    names = [f"run {k}" for k in range(1, len(runs) + 1)]
    lines = [f"## Results: {len(runs)} run{'s' * (len(runs) > 1)}", "",
             f"GPU: frames in host memory (ASE `Atoms`) to fingerprints and derivative blocks on the device "
             f"(`featurize(batch, device=\"cuda\")` then a device synchronize), {args.batch_frames:,} frames per "
             f"call, each batch's results dropped before the next. CPU: fastfp's `featurize(batch)` on all "
             f"{num_threads()} threads at its fastest batch size ({cpu_batch} frames, below)"
             + ("" if set(cpu_frames) == {n} else f", timed on the first {', '.join(f'{f:,}' for f in cpu_frames)} "
                f"frames within the {args.budget:.0f} s budget and scaled to {n:,}") + ".", "",
             f"| figure | {' | '.join(names)} | target (issue 23) | verdict |", "|---|" + "---|" * (len(runs) + 2),
             *rows, ""]
    for k, r in enumerate(runs, 1):
        lines.append(f"Run {k}: GPU batches float64 (s) {', '.join(f'{s:.3g}' for s in r['gpu64'])}; float32 "
                     f"{', '.join(f'{s:.3g}' for s in r['gpu32'])}; CPU batches "
                     f"{_spread(r['cpu'])}.")
    lines += ["", "### The host's part of a batch", "",
              f"One batch of {len(groups[min(1, len(groups) - 1)]):,} frames taken apart (fastest of three), float64: "
              "packing the frames on the host, then `featurize_packed` stage by stage with the device idle "
              "between stages (device time from CUDA events, wall time on the host), then the whole call as "
              "timed above. The host's part is the whole call less the device time of its stages: packing, "
              "copies, launches, allocation, the neighbour list's one copy of its sizes to the host, "
              "synchronisation.", "",
              "| part | " + " | ".join(f"{name} device (ms) | {name} wall (ms)" for name in names) + " |",
              "|---|" + "---|---|" * len(runs)]
    stages = list(runs[0]["parts"]["device"])
    lines.append("| pack frames (host) | | " + " | | ".join(f"{r['parts']['pack'] * 1e3:.3g}" for r in runs) + " |")
    for name in stages:
        lines.append(f"| {name} | " + " | ".join(f"{r['parts']['device'][name] * 1e3:.3g} | {r['parts']['wall'][name] * 1e3:.3g}"
                                              for r in runs) + " |")
    lines.append("| whole call | | " + " | | ".join(f"{r['parts']['whole'] * 1e3:.3g}" for r in runs) + " |")
    lines.append("| **the host's part** | | " + " | | ".join(f"**{r['parts']['host'] * 1e3:.3g}**" for r in runs) + " |")
    counts = runs[0]["parts"]["counts"]
    lines += ["", "### The GMP kernel's share of its roof", "",
              f"Work of the batch (`kernel_counts`: one evaluation of the per-pair formulas, from the tables; "
              f"compulsory bytes): {counts['flops'] / 1e9:.3g} Gflop, {counts['exps'] / 1e6:.3g} M exps, "
              f"{counts['bytes'] / 1e9:.3g} GB. Share: the least time the binding roof allows over the kernel's "
              "device time: " + "; ".join(
                  f"run {k}: {r['parts']['share'][0] * 100:.1f}% of the {r['parts']['share'][1]} roof"
                  if "share" in r["parts"] else f"run {k}: not measured (simulator)" for k, r in enumerate(runs, 1))
              + ".", ""]
    lines += ["### The CPU", "",
              "Seconds per frame by batch size (frames per `featurize` call, all threads, the first "
              f"{min(n, 1024):,} frames): " + ", ".join(f"{size}: {s * 1e3:.3g} ms" for size, s in per_frame.items())
              + f"; fastest: {cpu_batch}. Scaling, one call on the first {min(n, 128)} frames (fastest of two): "
              + ", ".join(f"{t} thread{'s' * (t > 1)}: {s:.3g} s ({scaling[min(scaling)] / s:.2f}x)"
                          for t, s in scaling.items()) + ".", ""]
    lines += epoch.lines(runs, n, sim)
    return lines


def _spread(seconds) -> str:
    """``min-max (n batches)`` of some batch times."""
    return f"{min(seconds):.3g}-{max(seconds):.3g} s ({len(seconds)} batches)" if seconds else "none"


class EpochRun:
    """One on-the-fly training epoch on the device over ``frames``, as AtomsTrainer runs
    it under ``fastfp.amptorch.install()`` with ``config["dataset"]["on_the_fly"]`` and
    ``config["optim"]["gpus"] = 1`` (:mod:`fastfp.harness.training`: SingleNN 3x20, batch
    256, forces, Adam, AMPTorch's loss; a plain loop for skorch's, no AMPTorch needed).
    The data set (frames and labels copied to the device, feature scaler fitted there) is
    built once, timed; each :meth:`run` is an epoch from the same weights, its batches'
    derivatives handed over as blocks or recomputed (:data:`FPRIMES`)."""

    def __init__(self, frames, elements, sim: bool):
        import torch

        from fastfp.amptorch.onthefly import OnTheFlyDataset
        from fastfp.config import build_descriptor
        from fastfp.gpu.device import synchronize
        from fastfp.harness.settings import descriptor_config

        torch.set_default_dtype(torch.float64)  # as AtomsTrainer sets it
        self.device = torch.device("cpu") if sim else torch.device("cuda", 0)
        desc = build_descriptor(descriptor_config("gmpordernorm", elements), amptorch=True)
        start = time.perf_counter()
        dataset = OnTheFlyDataset(frames, desc, forcetraining=True, progress=False, device="cuda")
        synchronize()
        self.setup_s = time.perf_counter() - start
        # the same frames, labels and scalers, derivatives handed over each way
        self.datasets = {}
        for fprimes in FPRIMES:
            self.datasets[fprimes] = copy.copy(dataset)
            self.datasets[fprimes].fprimes = fprimes

    def run(self, fprimes: str):
        import torch

        from fastfp.gpu.device import synchronize
        from fastfp.harness.stages import TRAIN_OPTIM
        from fastfp.harness.training import SingleNN, train_epoch

        torch.manual_seed(1)
        dataset = self.datasets[fprimes]
        model = SingleNN(dataset.input_dim).to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=TRAIN_OPTIM["lr"])
        return train_epoch(model, optimizer, dataset, batch_size=TRAIN_BATCH, synchronize=synchronize)

    def lines(self, runs, n: int, sim: bool) -> list[str]:
        lines = ["### The on-the-fly epoch", "",
                 f"Set-up (frames and labels copied to the device, feature scaler fitted there): {self.setup_s:.3g} s, "
                 f"once. Each batch featurized on fastfp's side stream while the step before trains "
                 f"on the default one, on `{self.device}`.", ""]
        for k, r in enumerate(runs, 1):
            for fprimes in FPRIMES:
                if f"epoch {fprimes}" in r:
                    e = r[f"epoch {fprimes}"]
                    lines.append(f"Run {k}, derivatives {fprimes}: {len(e.losses)} batches in {e.seconds:.3g} s, of "
                                 f"which {e.waited:.3g} s waiting for the next featurized batch; loss (scaled units) "
                                 f"of the first and last step {e.losses[0]:.4g}, {e.losses[-1]:.4g}.")
                else:
                    lines += [f"Run {k}, derivatives {fprimes} **failed**:", "", "```", r[f"epoch {fprimes} error"],
                              "```"]
            if all(f"epoch {fprimes}" in r for fprimes in FPRIMES):
                blocks, recomputed = (r[f"epoch {fprimes}"].losses for fprimes in FPRIMES)
                difference = float((recomputed - blocks).abs().max() / blocks.abs().max())
                lines.append(f"Run {k}: the step losses with derivatives recomputed differ from those with blocks "
                             f"by {difference:.2g} at most (relative to the largest).")
        return lines + [""]


def kernel_profile(run, n_frames: int, simulated: bool) -> list[str]:
    """Report lines: one call of ``run`` (featurizing ``n_frames`` frames) under torch's
    profiler (Kineto/CUPTI, which records every kernel in the process, numba's and CuPy's
    included): its wall time and the kernels by device time. A profiler failure is
    reported, not raised."""
    if simulated:
        return []
    lines = ["### Where the time of one GPU batch goes", ""]
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            run()
            wall = time.perf_counter() - start
        table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60)
    except Exception:
        return lines + ["Profiler failed:", "", "```", traceback.format_exc().rstrip(), "```", ""]
    return lines + [f"One call on {n_frames:,} frames under torch's profiler: {wall:.3g} s wall (profiled). "
                    "Kernels by device time (the rest of the wall time is host work: packing frames, "
                    "launches, reading counts):", "", "```", table.rstrip(), "```", ""]



def write_report(path: Path, lines: list[str], complete: bool) -> None:
    """Write the report atomically; one that is not ``complete`` says so at its end (a run
    stopped by a time limit leaves what it had measured, marked as such)."""
    if not complete:
        lines = lines + ["**Incomplete: the run had got this far when this was written.**", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)


def _deviation(gpu, cpu) -> float:
    """Largest |GPU - CPU| relative to the largest |CPU| value, of the fingerprints and of
    the derivative blocks (matched by (centre, j)), whichever is worse."""
    import numpy as np

    fingerprints = np.abs(gpu.to_numpy().fingerprints - cpu.fingerprints).max() / np.abs(cpu.fingerprints).max()
    (_, _, a), (_, _, b) = gpu.blocks_by_atom(), cpu.blocks_by_atom()
    return float(max(fingerprints, np.abs(a - b).max() / np.abs(b).max()))


def _verdict(met: bool, n_frames: int, simulated: bool) -> str:
    if simulated or n_frames < 16_000:
        return "not assessed (" + ("simulator" if simulated else f"{n_frames:,} frames") + ")"
    return "**met**" if met else "**not met**"


if __name__ == "__main__":
    sys.exit(main())
