"""What runs inside the profiled process.

:mod:`fastfp.harness.profile` starts ``python CHILD_SCRIPT --tool T --backend B --stage S
...`` under a profiler. The child loads the frames and builds the stage
(:func:`fastfp.harness.stages.build`, which also loads the compiled kernels; not
profiled), then runs the measured work inside :func:`_profiled_stage` (the name the
profile summaries cut the stacks at,
:data:`fastfp.harness.summarise.MARKER`), with scalene switched on or line_profiler
enabled only there. It writes what happened to the ``--status`` JSON file.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import platform
import sys
import time
from pathlib import Path

from .summarise import MARKER, short_path

#: the program the profilers run (written to a temporary file: run as a script from
#: this package's folder, the harness's module names would shadow the standard library's)
CHILD_SCRIPT = """\
# written by fastfp.harness.profile: the program the profilers run
import sys
from fastfp.harness.child import main
sys.exit(main(sys.argv[1:]))
"""

#: exit code of the child when the stage cannot run here
UNAVAILABLE = 3


def _profiled_stage(run, repeat: int) -> list[float]:
    """The measured work, ``repeat`` times; the profilers keep only what happens in here
    (its name is :data:`fastfp.harness.summarise.MARKER`)."""
    seconds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - t0)
    return seconds


assert _profiled_stage.__name__ == MARKER


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastfp-profile-child")
    p.add_argument("--tool", choices=("py-spy", "scalene", "line-profiler", "none"), default="none")
    p.add_argument("--backend", required=True)
    p.add_argument("--stage", required=True)
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--descriptor", default="gmpordernorm")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--status", required=True)
    p.add_argument("--lp-out", default=None)
    return p


def versions() -> dict:
    """Versions of Python and of the libraries a profile depends on."""
    out = {"python": platform.python_version()}
    for dist in ("fastfp", "numpy", "torch", "torch_geometric", "numba", "vesin", "ase", "skorch", "amptorch",
                 "py-spy", "scalene", "line-profiler"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def main(argv=None) -> int:
    """Entry point of the profiled child process (see :data:`CHILD_SCRIPT`)."""
    args = _parser().parse_args(argv)
    status_path = Path(args.status)
    t0 = time.perf_counter()
    from fastfp.threads import calling_thread_only

    from . import stages, workloads
    from .backends import StageUnavailable

    status = {"ok": False, "backend": args.backend, "stage": args.stage, "tool": args.tool}
    try:
        frames = workloads.load_frames(args.data, args.frames)
        # set-up in this thread alone: the profiles count all samples of worker threads
        # as the measured stage's (summarise.stage_samples)
        with calling_thread_only():
            run = stages.build(args.stage, args.backend, frames, descriptor=args.descriptor)
    except StageUnavailable as exc:
        status["unavailable"] = str(exc)
        status_path.write_text(json.dumps(status, indent=1))
        print(f"stage unavailable: {exc}", file=sys.stderr)
        return UNAVAILABLE
    status["setup_s"] = time.perf_counter() - t0
    status["n_frames"] = len(frames)
    status["n_atoms"] = int(sum(len(a) for a in frames))

    if args.tool == "line-profiler":
        seconds = _run_line_profiler(run, args)
    elif args.tool == "scalene":
        from scalene import scalene_profiler

        scalene_profiler.start()
        try:
            seconds = _profiled_stage(run, args.repeat)
        finally:
            scalene_profiler.stop()
    else:
        seconds = _profiled_stage(run, args.repeat)
    status["ok"] = True
    status["seconds"] = seconds
    status["versions"] = versions()
    try:
        import torch

        status["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    status_path.write_text(json.dumps(status, indent=1))
    return 0


# -- line_profiler targets -------------------------------------------------------------

#: functions line_profiler times, as ``module:qualname``; those that do not exist in the
#: installed versions are skipped (and listed in the report)
LINE_TARGETS = {
    "amptorch": [
        "amptorch.preprocessing.utils:FeatureScaler.norm",
        "amptorch.preprocessing.utils:FeatureScaler.__init__",
        "amptorch.preprocessing.utils:TargetScaler.norm",
        "amptorch.preprocessing.utils:sparse_block_diag",
        "amptorch.preprocessing.atoms_to_data:AtomsToData.convert",
        "amptorch.preprocessing.atoms_to_data:AtomsToData.convert_all",
        "amptorch.descriptor.base_descriptor:BaseDescriptor.prepare_fingerprints",
        "amptorch.descriptor.base_descriptor:BaseDescriptor._compute_fingerprints_nodb",
        "amptorch.descriptor.GMPOrderNorm:GMPOrderNorm.calculate_fingerprints",
        "amptorch.descriptor.GMP:GMP.calculate_fingerprints",
        "amptorch.descriptor.Gaussian:Gaussian.calculate_fingerprints",
        "amptorch.dataset:AtomsDataset.process",
        "amptorch.dataset:DataCollater.__call__",
        "amptorch.model:BPNN.forward",
        "amptorch.model:SingleNN.forward",
        "amptorch.model:CustomLoss.forward",
    ],
    "fastfp": [
        "fastfp.amptorch.scaling:norm_features",
        "fastfp.amptorch.scaling:_scale_tables",
        "fastfp.amptorch.scaling:FeatureScaler.__init__",
        "fastfp.amptorch.scaling:TargetScaler.norm",
        "amptorch.preprocessing.utils:FeatureScaler.__init__",  # install() keeps AMPTorch's fit
        "fastfp.amptorch.data:images_to_data",
        "fastfp.amptorch.data:image_to_data",
        "fastfp.amptorch.descriptors:AMPTorchInterface.prepare_fingerprints",
        "fastfp.amptorch.descriptors:AMPTorchInterface.frame_outputs",
        "fastfp.descriptors.base:Descriptor.featurize",
        "fastfp.descriptors.base:Descriptor._compute",
        "fastfp.frames:pack_frames",
        "fastfp.neighbors:neighbor_pairs",
        "fastfp.fingerprints:Fingerprints.coo",
        "fastfp.amptorch.collate:sparse_block_diag",
        "amptorch.dataset:AtomsDataset.process",
        "amptorch.dataset:DataCollater.__call__",
        "fastfp.amptorch.model:energy_and_forces",
        "fastfp.amptorch.model:bpnn_atomic_energies",
        "fastfp.amptorch.model:singlenn_atomic_energies",
        "fastfp.amptorch.forces:contract_forces",
        "amptorch.model:CustomLoss.forward",
    ],
}

#: modules whose numba-compiled kernels are listed as not line-profilable
NUMBA_MODULES = ("fastfp.kernels.gmp", "fastfp.kernels.gaussian", "fastfp.kernels.blocks")


def resolve(spec: str):
    """``module:qualname`` -> the function (unwrapping classmethods/staticmethods), or None."""
    module_name, _, qualname = spec.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception:
        return None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    obj = getattr(obj, "__func__", obj)
    return obj if hasattr(obj, "__code__") else None


def numba_kernels() -> list[str]:
    """Names of fastfp's numba-compiled functions (``module.name``)."""
    out = []
    for name in NUMBA_MODULES:
        try:
            mod = importlib.import_module(name)
        except Exception:
            continue
        for attr, value in vars(mod).items():
            if hasattr(value, "py_func") and hasattr(value, "signatures"):
                out.append(f"{name}.{attr}")
    return sorted(out)


def _run_line_profiler(run, args) -> list[float]:
    from line_profiler import LineProfiler

    lp = LineProfiler()
    found, missing = [], []
    for spec in LINE_TARGETS[args.backend]:
        func = resolve(spec)
        if func is None:
            missing.append(spec)
        else:
            lp.add_function(func)
            found.append(spec)
    lp.enable_by_count()
    try:
        seconds = _profiled_stage(run, args.repeat)
    finally:
        lp.disable_by_count()
    prefix = Path(args.lp_out)
    stats = lp.get_stats()
    functions = []
    for (filename, first_line, name), timings in stats.timings.items():
        if not timings:
            continue
        total = sum(t for _, _, t in timings) * stats.unit
        functions.append({"function": name, "file": filename, "first_line": first_line, "total_s": total,
                          "lines": [[ln, hits, t * stats.unit] for ln, hits, t in timings]})
    functions.sort(key=lambda f: -f["total_s"])
    kernels = numba_kernels() if args.backend == "fastfp" else []
    with open(f"{prefix}.txt", "w", encoding="utf-8") as fh:
        fh.write(f"# line_profiler: backend {args.backend}, stage {args.stage}, {args.frames} frames, "
                 f"descriptor {args.descriptor}, {args.repeat} run(s), {sum(seconds):.2f} s under the profiler\n")
        fh.write("# times in ms; each function's table covers only its own lines (callees included in the line "
                 "that calls them)\n#\n# function totals:\n")
        for f in functions:
            fh.write(f"#   {f['total_s']:10.3f} s  {f['function']}  ({short_path(f['file'])}:{f['first_line']})\n")
        if missing:
            fh.write("# not found in the installed versions (skipped): " + ", ".join(missing) + "\n")
        if kernels:
            fh.write("# numba-compiled kernels cannot be line-profiled (compiled machine code, no Python line "
                     "events); their time shows on the line that calls them: " + ", ".join(kernels) + "\n")
        fh.write("#\n")
        lp.print_stats(stream=fh, output_unit=1e-3, stripzeros=True)
    with open(f"{prefix}.json", "w", encoding="utf-8") as fh:
        json.dump({"target": args.backend, "stage": args.stage, "seconds": seconds, "profiled": found,
                   "missing": missing, "numba_kernels": kernels, "functions": functions}, fh, indent=1)
    return seconds
