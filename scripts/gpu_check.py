"""Check fastfp's GPU path on a CUDA machine, time it against the CPU, write a report.

On a machine with network, from the repository root::

    python3 scripts/gpu_check.py --prepare

downloads the wheels a GPU machine lacks into ``.whl/`` (:data:`WHEELS`) and copies
what the GPU tests read of the shared data into ``.shared/``. Then on a machine with an
NVIDIA GPU (written for an H100 or H200; no network needed), with both folders copied
along, from the repository root::

    python3 scripts/gpu_check.py --out reports/gpu.md

It (1) installs the wheels in ``.whl/`` whose packages are missing or at another
version into a temporary folder put first on the import path, (2) runs the GPU
tests (``tests/gpu``) on the device, (3) builds the default workload (16,000 frames of
water on Cu(111), :func:`fastfp.harness.workloads.load_workload`, all cores), (4) times
featurizing all frames with derivatives on the GPU (the benchmark descriptor:
GMPOrderNorm, MCSH orders 0-3 x 5 sigmas 0.4-2.0 Å, cutoff 8 Å, psp_v3 pseudodensities,
float64): frames in host memory (ASE ``Atoms``) to fingerprints and derivative blocks on
the device, in batches of ``--batch-frames`` frames whose results are dropped before the
next batch, (5) times one on-the-fly training epoch on the device over all frames
(:func:`training_epoch`), and (6) times the featurization batches of (4) with fastfp on
all CPU cores, until ``--budget`` seconds of the whole run would be exceeded (the report
then says which frames both were timed on). The report names the device and the
software.

``--simulate`` runs everything that needs no GPU in numba's CUDA simulator, on the CPU
(``tests/test_gpu.py`` runs ``--simulate --frames 1`` in CI), so that a GPU run is not the
script's first run.
"""

from __future__ import annotations

import argparse
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
TARGET_GPU_S = 5.0  # 16,000 frames, issue 14
TARGET_RATIO = 20.0
TARGET_EPOCH_S = 20.0  # one on-the-fly training epoch over 16,000 frames, issue 14
TRAIN_BATCH = 256
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
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds for the whole run; the CPU timing stops at a batch boundary before it")
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


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.prepare:
        prepare(args)
        return 0
    started = time.perf_counter()
    stop_at = started + args.budget
    site = prepare_environment(args)
    report = [f"# fastfp on the GPU: `scripts/gpu_check.py` report", ""]
    ok = True
    try:
        from fastfp.config import build_descriptor
        from fastfp.gpu.device import simulated, synchronize
        from fastfp.harness.settings import descriptor_config
        from fastfp.harness.workloads import load_workload
        from fastfp.threads import num_threads

        report += [f"Run {time.strftime('%Y-%m-%d %H:%M %Z')}, commit "
                   f"{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip() or '?'}"
                   f", `{' '.join(['scripts/gpu_check.py', *(argv if argv is not None else sys.argv[1:])])}`.", ""]
        report += ["## Device", ""] + describe_device(simulated()) + [""]
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
                   f"{time.perf_counter() - step:.0f} s on {os.cpu_count()} CPUs.", ""]
        write_report(args.out, report, complete=False)

        desc = build_descriptor(descriptor_config("gmpordernorm", elements))
        groups = batches(frames, args.batch_frames)
        sizes = {}

        def on_gpu(batch):
            """Fingerprints and derivative blocks of ``batch`` on the device, the work done."""
            fps = desc.featurize(batch, device="cuda")
            synchronize()
            return fps

        def counted_on_gpu(batch):
            fps = on_gpu(batch)
            sizes["pairs_blocks"] = sizes.get("pairs_blocks", 0) + len(fps.fprime_j)
            sizes["bytes"] = sizes.get("bytes", 0) + fps.fprimes.nbytes + fps.fingerprints.nbytes

        check = frames[: args.check_frames]
        cpu_check, cpu_first_s = _timed(desc.featurize, check)  # compiles or loads the CPU kernels
        gpu_check, gpu_first_s = _timed(on_gpu, check)  # compiles the GPU kernels
        deviation = _deviation(gpu_check, cpu_check)
        del gpu_check, cpu_check
        # one untimed full-size call on each (results dropped at once): the first such GPU
        # call also grows CuPy's memory pool to a batch's size, among other first-time
        # costs (3.7 s of the 5.3 s a run without it timed for all batches on an H200,
        # against 0.23 s for each later batch: reports/gpu.md)
        gpu_warm_s = _timed(on_gpu, groups[0])[1]
        cpu_warm_s = _timed(desc.featurize, groups[0])[1]
        gpu_s = time_batches(counted_on_gpu, groups)
        try:
            epoch_lines = training_epoch(frames, elements)
        except Exception:
            ok = False
            epoch_lines = ["## On-the-fly training epoch", "", "**Failed**:", "", "```",
                           traceback.format_exc().rstrip(), "```", ""]
        cpu_s = time_batches(lambda batch: desc.featurize(batch, derivatives=True), groups, stop_at)
        n_cpu = sum(len(g) for g in groups[: len(cpu_s)])
        gpu_same = sum(gpu_s[: len(cpu_s)])
        total = sum(gpu_s)
        ratio = sum(cpu_s) / gpu_same if gpu_same > 0 else float("nan")
        subset = "all frames" if n_cpu == len(frames) else (
            f"**the first {n_cpu:,} frames only** (the first {len(cpu_s)} batches: all {len(frames):,} would not "
            f"fit in the {args.budget:.0f} s budget)")
        report += [
            "## Featurization with derivatives", "",
            "Benchmark descriptor (GMPOrderNorm, MCSH orders 0-3 x sigmas 0.4, 0.8, 1.2, 1.6, 2.0 Å, "
            "cutoff 8 Å, psp_v3, 20 features), float64. GPU: frames in host memory (ASE `Atoms`) to "
            "fingerprints and derivative blocks on the device (`featurize(batch, device=\"cuda\")` then a "
            f"device synchronize), {args.batch_frames:,} frames per call, each batch's results dropped "
            f"before the next. CPU: `featurize(batch)` on {num_threads()} threads, the same batches. "
            "Kernel compilation and a first full-size call are excluded from both (timed separately below).", "",
            "| what | frames | seconds |", "|---|---|---|",
            f"| GPU, all frames | {len(frames):,} | {total:.3g} |",
            f"| GPU, the frames timed on the CPU | {n_cpu:,} | {gpu_same:.3g} |",
            f"| CPU, {num_threads()} threads | {n_cpu:,} | {sum(cpu_s):.3g} |",
            "",
            f"Targets (issue 14, 16,000 frames on an H100/H200): GPU <= {TARGET_GPU_S:.0f} s: "
            f"{_verdict(total <= TARGET_GPU_S, len(frames), simulated())}; CPU / GPU = {ratio:.1f}x "
            f">= {TARGET_RATIO:.0f}x: {_verdict(ratio >= TARGET_RATIO, len(frames), simulated())}.",
            "",
            f"CPU timed on {subset}. Per GPU batch (s): {', '.join(f'{s:.3g}' for s in gpu_s)}. "
            f"Per CPU batch (s): {', '.join(f'{s:.3g}' for s in cpu_s)}. "
            f"Derivative blocks over all frames: {sizes.get('pairs_blocks', 0):,}, results "
            f"{sizes.get('bytes', 0) / 2**30:.1f} GiB in all. First calls on the first {len(check)} frames "
            f"(compiling, not in the times above): CPU {cpu_first_s:.1f} s, GPU {gpu_first_s:.1f} s; GPU "
            f"against CPU on them: largest difference {deviation:.1e} of the largest value (fingerprints and derivatives). "
            f"Then one untimed call on the first batch ({len(groups[0]):,} frames) on each, before the timed ones: "
            f"GPU {gpu_warm_s:.3g} s (CuPy's memory pool grows to a batch's size, among what a first call does), "
            f"CPU {cpu_warm_s:.3g} s.",
            "",
        ] + epoch_lines
        write_report(args.out, report, complete=False)
        report += kernel_profile(lambda: on_gpu(groups[0]), len(groups[0]), simulated())
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


def training_epoch(frames, elements) -> list[str]:
    """Report lines of one on-the-fly training epoch on the device over
    ``frames``, timed. What AtomsTrainer runs under ``fastfp.amptorch.install()`` with
    ``config["dataset"]["on_the_fly"]`` and ``config["optim"]["gpus"] = 1``: an
    ``OnTheFlyDataset(device="cuda")`` (feature scaler fitted on the device, untimed),
    shuffled batches featurized on ``AheadLoader``'s thread and collated as AMPTorch's
    ``ParallelCollater`` does, fastfp's ``SingleNN`` forward and force contraction, and
    AMPTorch's loss; a plain loop in place of skorch (AMPTorch is not installed here).
    Raises ``RuntimeError`` if a batch is not on the device or a loss is not finite."""
    import torch

    from fastfp.amptorch.model import singlenn_forward
    from fastfp.amptorch.onthefly import AheadLoader, OnTheFlyDataset, collate_for_trainer
    from fastfp.config import build_descriptor
    from fastfp.gpu.device import simulated, synchronize
    from fastfp.harness.settings import descriptor_config
    from fastfp.harness.stages import TRAIN_MODEL, TRAIN_OPTIM

    class SingleNN(torch.nn.Module):
        """AMPTorch's SingleNN (``amptorch/model.py``: MLP of Linear and Tanh layers,
        xavier-uniform weights, zero biases), with fastfp's forward."""

        get_forces = True

        def __init__(self, input_dim, num_layers, num_nodes):
            super().__init__()
            sizes = [input_dim] + [num_nodes] * num_layers
            layers = [m for a, b in zip(sizes, sizes[1:]) for m in (torch.nn.Linear(a, b), torch.nn.Tanh())]
            self.model = torch.nn.Sequential(*layers, torch.nn.Linear(num_nodes, 1))
            for layer in self.model:
                if isinstance(layer, torch.nn.Linear):
                    torch.nn.init.xavier_uniform_(layer.weight)
                    torch.nn.init.zeros_(layer.bias)

        def forward(self, batch):
            return singlenn_forward(self, batch)

    torch.set_default_dtype(torch.float64)  # as AtomsTrainer sets it
    torch.manual_seed(1)
    device = torch.device("cpu") if simulated() else torch.device("cuda", 0)
    desc = build_descriptor(descriptor_config("gmpordernorm", elements), amptorch=True)
    start = time.perf_counter()
    dataset = OnTheFlyDataset(frames, desc, forcetraining=True, progress=False, device="cuda")
    synchronize()
    setup_s = time.perf_counter() - start
    model = SingleNN(dataset.input_dim, TRAIN_MODEL["num_layers"], TRAIN_MODEL["num_nodes"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=TRAIN_OPTIM["lr"])
    loader = AheadLoader(dataset, batch_size=TRAIN_BATCH, shuffle=True,
                         collate_fn=lambda items: collate_for_trainer(dataset, items))
    mse = torch.nn.functional.mse_loss
    force_coefficient = TRAIN_OPTIM["force_coefficient"]  # AMPTorch's CustomLoss, as in the training stages
    losses = []
    waited = 0.0  # the training loop waiting for the next featurized batch
    start = time.perf_counter()
    batches = iter(loader)
    while True:
        step = time.perf_counter()
        try:
            (batch,), ((energy, forces),) = next(batches)
        except StopIteration:
            break
        waited += time.perf_counter() - step
        if not (batch.fingerprint.device == device and batch.fprimes.on_torch):
            raise RuntimeError(f"a batch on {batch.fingerprint.device} with NumPy blocks: not the device path")
        predicted_energy, predicted_forces = model([batch])
        loss = 0.5 * (mse(predicted_energy, energy) + force_coefficient * mse(predicted_forces, forces))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    synchronize()
    epoch_s = time.perf_counter() - start
    losses = torch.stack(losses).cpu()
    if not torch.isfinite(losses).all():
        raise RuntimeError(f"losses not finite: {losses.tolist()}")
    described = (
        f"SingleNN {TRAIN_MODEL['num_layers']}x{TRAIN_MODEL['num_nodes']} (AMPTorch's architecture), float64, "
        f"forces on, Adam lr {TRAIN_OPTIM['lr']}, AMPTorch's loss (mse, force coefficient {force_coefficient}), "
        f"batch {TRAIN_BATCH}, shuffled, on `{device}`, the benchmark descriptor. Every batch featurized with "
        "derivatives on the GPU (`OnTheFlyDataset(device=\"cuda\")`, the next on `AheadLoader`'s thread), "
        "scaled, and its forces contracted there by torch ops, as AtomsTrainer trains with `gpus` 1 under "
        "`install()`, in a plain loop instead of skorch's (no AMPTorch needed).")
    verdict = _verdict(epoch_s <= TARGET_EPOCH_S, len(frames), simulated())
    return [
        "## On-the-fly training epoch", "", described, "",
        "| what | frames | batches | seconds |", "|---|---|---|---|",
        f"| set-up: frames packed, feature scaler fitted on the device | {len(dataset):,} | | {setup_s:.3g} |",
        f"| one epoch | {len(dataset):,} | {len(losses)} | {epoch_s:.3g} |",
        f"| of which waiting for the next featurized batch | | | {waited:.3g} |", "",
        f"Target (issue 14, 16,000 frames on an H100/H200): epoch <= {TARGET_EPOCH_S:.0f} s: {verdict}. "
        f"Loss (scaled units) of the first and last step: {losses[0]:.4g}, {losses[-1]:.4g}.", "",
    ]


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
