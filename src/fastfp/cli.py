"""The ``fastfp`` command line.

Subcommands are registered with :func:`command`: one function per subcommand, taking
the parsed arguments and returning the exit code, with its arguments declared in the
decorator::

    @command("bench", help="run the benchmarks", arguments=[
        arg("--quick", action="store_true", help="..."),
    ])
    def bench(args) -> int:
        ...
        return 0

Exit codes: 0 success; 2 bad input (missing or unreadable file, bad config, bad frame,
bad store, an --out that is not free), with a one-line message on stderr; 130
interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Callable

#: name -> (help, [(flags, kwargs), ...], function(args) -> exit code)
COMMANDS: dict[str, tuple[str, list, Callable]] = {}


class CLIError(Exception):
    """A user-facing error: printed as ``fastfp <command>: error: <message>``, exit code 2."""


def arg(*flags, **kwargs):
    """One ``add_argument`` call, for :func:`command`'s ``arguments``."""
    return flags, kwargs


def command(name: str, help: str, arguments=()):
    """Register the decorated ``function(args) -> int`` as subcommand ``name``."""

    def register(func):
        COMMANDS[name] = (help, list(arguments), func)
        return func

    return register


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="fastfp", description="Fast GMP / Gaussian fingerprints with exact sparse derivatives."
    )
    parser.add_argument("--version", action="version", version=f"fastfp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_text, arguments, func) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        for flags, kwargs in arguments:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(_run=func, _name=name)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"fastfp {args._name}: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, OSError) as exc:  # FrameError, StoreError, config errors are ValueErrors
        print(f"fastfp {args._name}: error: {exc}", file=sys.stderr)
        return 2


# -- featurize -------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _cluster(text: str) -> str:
    from .cluster import check_cluster

    try:
        return check_cluster(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _inputs(args, output):
    """FRAMES, --config and --out of ``featurize`` and ``lmdb``, checked before any work:
    the inputs exist, --out names none of them, and ``output`` (a
    :class:`~fastfp.shards.ShardedDir` for --out) is free or of its kind and writable."""
    from .framefile import FrameFile

    frames = FrameFile(args.frames, args.format)
    config_path = Path(args.config)
    if not config_path.is_file():
        raise CLIError(f"config file {str(config_path)!r} not found")
    out = Path(args.out)
    for what, path in (("frames file", frames.path), ("config file", config_path)):
        if out.exists() and os.path.samefile(out, path):
            raise CLIError(f"--out {str(out)!r} is the {what}; it is left untouched (choose another output path)")
    output.check()
    return frames, config_path


#: arguments that ``featurize`` and ``lmdb`` share
SHARED_ARGUMENTS = [
    arg("--config", required=True, metavar="CONFIG.json",
        help="AMPTorch-style descriptor config (fp_scheme, fp_params, [elements], [cutoff_params])"),
    arg("--cluster", type=_cluster, default=None, metavar="SPEC",
        help="run one task per shard on Dask: local:N (N worker processes here), tcp://HOST:PORT (an existing "
             "scheduler), slurm or slurm:JOBS (dask-jobqueue, configured by Dask's jobqueue.slurm config); "
             "default: in this process, threaded"),
    arg("--shard-frames", type=_positive_int, default=500, metavar="S",
        help="frames per shard (default 500): the unit of work, of resume and of files"),
    arg("--overwrite", action="store_true",
        help="replace an existing output of the same kind (without it, an existing one is resumed if written "
             "with the same settings, and refused otherwise); anything else at --out is never replaced"),
    arg("--format", default=None, metavar="FMT", help="ASE format of FRAMES if not guessed from its name"),
    arg("--quiet", action="store_true", help="no progress bar or summary"),
]


@contextlib.contextmanager
def _interruptible():
    """Ctrl-C and SIGTERM (kill, job schedulers) raise ``KeyboardInterrupt`` in the main
    thread, once: later ones are ignored while the run cleans up (temporary files,
    cluster). Raised inside a numba kernel, the ``KeyboardInterrupt`` surfaces as another
    exception (SystemError), hence the flag; raised inside a finalizer, it is lost (and
    Python would print it as "Exception ignored in ..."; it is not printed here), hence
    :data:`fastfp.cluster.STOP`, which the task loop checks. Dask's own messages about
    the connections it loses while the cluster is torn down are silenced from then on,
    and so are tornado's about callbacks that fail then (distributed 2026.8's ``sync``,
    interrupted before its future exists, logs a ``NameError`` from its cancel callback).
    The command then prints one line, ``interrupted`` (:func:`main`)."""
    import logging
    import signal

    from .cluster import STOP

    interrupted = []
    logs = [logging.getLogger(name) for name in ("distributed", "tornado.application")]
    levels = [log.level for log in logs]

    def interrupt(signum, frame):
        if not interrupted:
            interrupted.append(signum)
            STOP.set()
            for log in logs:
                log.setLevel(logging.CRITICAL + 1)
            raise KeyboardInterrupt

    def unraisable(info):
        if not (interrupted and issubclass(info.exc_type, KeyboardInterrupt)):
            default_unraisable(info)

    handlers = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(sig) is not signal.SIG_IGN}
    default_unraisable, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    except BaseException:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        sys.unraisablehook = default_unraisable
        for log, level in zip(logs, levels):
            log.setLevel(level)
        STOP.clear()


def _shards_done(summary) -> str:
    n, k = summary["shards"], len(summary["computed"])
    return f"{k} of {n} shards computed" + (f", {n - k} already there" if k < n else "")


@command(
    "featurize",
    help="featurize frames (any ASE-readable file) into a fingerprint store (a directory of HDF5 shards)",
    arguments=[
        arg("frames", metavar="FRAMES", help="ASE-readable file of frames; FILE@SLICE selects frames, e.g. data.traj@:1000"),
        arg("--out", required=True, metavar="STORE", help="store directory to write (resumed if it exists)"),
        arg("--derivatives", action="store_true", help="also store the exact derivative blocks"),
        arg("--fprimes-dtype", "--dtype", choices=["float64", "float32"], default="float64",
            help="stored type of the derivative blocks (default float64; float32 halves the store, "
                 "relative error <= 6e-8, see fastfp.store)"),
        arg("--chunk-frames", "--chunk-size", type=_positive_int, default=32, metavar="K",
            help="frames featurized per batch (default 32); bounds memory"),
        arg("--compression", choices=["none", "lzf", "gzip"], default="none",
            help="HDF5 compression of the float datasets (default none)"),
        arg("--device", choices=["cpu", "cuda"], default="cpu",
            help="where to featurize: cpu (default) or cuda (the current CUDA GPU of each process; needs the gpu "
                 "extra); the store holds the same numbers within rounding"),
        *SHARED_ARGUMENTS,
    ],
)
def featurize(args) -> int:
    from .config import load_config, resolve_config
    from .errors import DeviceError, DeviceMemoryError, FrameError, StoreError
    from .frames import elements_of
    from .shards import ShardedDir
    from .store import FORMAT, featurize_to_store

    frames, config_path = _inputs(args, ShardedDir(args.out, FORMAT, ".h5", StoreError))
    with _interruptible():
        raw, _ = load_config(config_path)
        resolved = resolve_config(config_path, elements=None if "elements" in raw else elements_of(frames))
        try:
            summary = featurize_to_store(
                frames, resolved, args.out, derivatives=args.derivatives, fprimes_dtype=args.fprimes_dtype,
                shard_frames=args.shard_frames, chunk_frames=args.chunk_frames, cluster=args.cluster,
                overwrite=args.overwrite, progress=not args.quiet,
                metadata={"config_file": os.path.abspath(config_path)},
                compression=None if args.compression == "none" else args.compression, device=args.device,
            )
        except FrameError as exc:  # "frame N: ..." with N counted from 0 over the selected frames
            raise CLIError(f"{frames.path}: {exc}") from None
        except (DeviceError, DeviceMemoryError) as exc:
            raise CLIError(str(exc)) from None
    if not args.quiet:
        print(
            f"wrote {args.out}: {summary['n_frames']} frames, {summary['n_atoms']} atoms, "
            f"{summary['n_features']} features"
            + (f", {summary['n_blocks']} derivative blocks ({args.fprimes_dtype})" if args.derivatives else "")
            + f", {summary['bytes'] / 2**20:.1f} MiB; {_shards_done(summary)} in {summary['seconds']:.1f} s"
            + "".join(f"; peak RSS of process {pid}: {rss / 2**20:.0f} MiB" for pid, rss in summary["peak_rss"].items()),
            file=sys.stderr,
        )
    return 0


# -- bench -----------------------------------------------------------------------------


@command(
    "bench",
    help="run the asv benchmark suite in this environment (fastfp vs AMPTorch) and summarise it",
    arguments=[
        arg("--quick", action="store_true",
            help="a subset: 10, 30 and 100 frames, GMPOrderNorm featurization, supercells up to 2000 atoms, "
                 "no in-process ratios"),
        arg("--data", default=None, metavar="PATH",
            help="frames to benchmark instead of the default 16,000-frame workload (ASE-readable file, "
                 "folder or workload name)"),
        arg("--backend", default=None, metavar="LIST",
            help="comma-separated backends: amptorch, amptorch-patched (FASTFP_AMPTORCH_SRC), fastfp, cupy "
                 "(default all; unavailable ones say why)"),
        arg("--out", default="bench-results", metavar="DIR",
            help="where summary.md and time_vs_frames.png go (default bench-results/)"),
        arg("--frames", type=_positive_int, nargs="+", default=None, metavar="N",
            help="frame counts to benchmark (default 100 1000 16000; --quick: 10 30 100)"),
        arg("--descriptors", default=None, metavar="LIST",
            help="comma-separated descriptors to featurize: gmpordernorm, gmp, gaussian (default all; "
                 "--quick: gmpordernorm; the other stages use GMPOrderNorm)"),
        arg("--report", default=None, metavar="FILE.md",
            help="also write the benchmark report there (e.g. reports/benchmarks.md): what was run, the summary, "
                 "the plot beside it, the GPU figures of reports/gpu.md; only when no benchmark failed"),
        arg("--settings", action="store_true",
            help="list the FASTFP_BENCH_* variables that set what the benchmarks take (default, meaning) and exit"),
        arg("--history", nargs="*", default=None, metavar="COMMIT",
            help="instead: the fast subset (benchmarks/history.py) at each COMMIT (default: those of "
                 "benchmarks/milestones.txt and HEAD) without results on this machine yet, into asv.conf.json's "
                 "results folder (reports/asv); then redraw reports/history.png"),
        arg("--history-plot", action="store_true", help="instead: redraw reports/history.png from reports/asv"),
        arg("--compare", default=None, metavar="BASE",
            help="instead: the regression gate: the fast subset's times at commit BASE and at HEAD, asv's table; "
                 "exit 1 when HEAD is slower by more than --factor beyond the noise"),
        arg("--factor", type=float, default=None, metavar="F",
            help="--compare: the slow-down that fails the gate (default 1.2)"),
    ],
)
def bench(args) -> int:
    if args.settings:
        from .harness.settings import describe

        print(describe())
        return 0
    from .harness import history
    from .harness.bench import run_bench

    modes = [args.history is not None, args.history_plot, args.compare is not None]
    if sum(modes) > 1:
        raise CLIError("choose one of --history, --history-plot and --compare")
    if args.report is not None and any(modes):
        raise CLIError("--report goes with a run of the suite, not with --history, --history-plot or --compare")
    if args.factor is not None and (args.compare is None or args.factor <= 1):
        raise CLIError("--factor goes with --compare and must be above 1")
    if args.history is not None:
        return history.run_history(args.history, out=args.out)
    if args.history_plot:
        path = history.plot_history(history.find_checkout())
        print(f"fastfp bench: wrote {path}", file=sys.stderr)
        return 0
    if args.compare is not None:
        return history.run_compare(args.compare, out=args.out, factor=args.factor or history.FACTOR)
    return run_bench(quick=args.quick, data=args.data, backends=args.backend, out=args.out, frames=args.frames,
                     descriptors=args.descriptors, report_to=args.report)


# -- lmdb ------------------------------------------------------------------------------


def _json_arg(text: str, what: str):
    """JSON text, or the content of a JSON file named by ``text``."""
    import json

    source = "JSON"
    if os.path.isfile(text):
        source = f"file {text!r}"
        try:
            text = Path(text).read_text()
        except OSError as exc:
            raise CLIError(f"{what}: cannot read {source}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{what}: not valid JSON ({source}): {exc}") from None


@command(
    "lmdb",
    help="featurize frames with energies and forces into AMPTorch LMDB files, one per shard "
    "(for AtomsTrainer's config['dataset']['lmdb_path'])",
    arguments=[
        arg("frames", metavar="FRAMES",
            help="ASE-readable file of frames with energies (and forces), FILE@SLICE to select (e.g. data.traj@:1000); "
            "read twice (three times when the config has no elements)"),
        arg("--out", required=True, metavar="DIR",
            help="directory of LMDB files to write (resumed if it exists); fastfp.amptorch.lmdb_paths(DIR) "
                 "lists them for config['dataset']['lmdb_path']"),
        arg("--scaling", default=None, metavar="JSON",
            help="feature scaling as JSON text or a JSON file, AMPTorch's dict "
            "(default {\"type\": \"normalize\", \"range\": [0, 1], \"elementwise\": true})"),
        arg("--chunk-frames", "--chunk-size", type=_positive_int, default=16, metavar="K",
            help="frames featurized, scaled and committed together (default 16); bounds memory"),
        arg("--no-derivatives", action="store_true",
            help="energy-only data (no forces, no derivative matrices), for get_forces=False training"),
        *SHARED_ARGUMENTS,
    ],
)
def lmdb_command(args) -> int:
    try:
        from .amptorch.lmdb import FORMAT, write_lmdb_shards
    except ImportError as exc:
        raise CLIError(f"needs torch, torch_geometric and lmdb (the 'torch' extra): {exc}") from None
    from .config import load_config
    from .errors import FrameError
    from .shards import ShardedDir

    frames, config_path = _inputs(args, ShardedDir(args.out, FORMAT, ".lmdb"))
    scaling = None if args.scaling is None else _json_arg(args.scaling, "--scaling")
    raw, base_dir = load_config(config_path)
    with _interruptible():
        try:
            summary = write_lmdb_shards(frames, raw, args.out, scaling=scaling, derivatives=not args.no_derivatives,
                                        shard_frames=args.shard_frames, chunk_frames=args.chunk_frames,
                                        cluster=args.cluster, overwrite=args.overwrite, progress=not args.quiet,
                                        base_dir=base_dir)
        except ValueError as exc:
            if isinstance(exc, FrameError) or str(exc).startswith("frame "):  # no energy, bad frame: "frame N: ..."
                raise CLIError(f"{frames.path}: {exc}") from None
            raise
    if not args.quiet:
        print(f"wrote {args.out}: {summary['n_frames']} frames, {summary['n_atoms']} atoms, "
              f"{summary['n_features']} features, {summary['bytes'] / 2**20:.1f} MiB in {summary['shards']} LMDB files "
              f"({summary['scalers']} scalers); {_shards_done(summary)} in {summary['seconds']:.1f} s; "
              f"for AMPTorch: config['dataset']['lmdb_path'] = fastfp.amptorch.lmdb_paths({args.out!r})",
              file=sys.stderr)
    return 0


# -- profile ---------------------------------------------------------------------------


def _profile_arguments():
    from .harness.profile import ARGUMENTS  # imports neither torch nor the kernels: cheap here

    return [arg(*flags, **kwargs) for flags, kwargs in ARGUMENTS]


@command(
    "profile",
    help="profile a pipeline stage (AMPTorch's or fastfp's) under py-spy, scalene or line_profiler",
    arguments=_profile_arguments(),
)
def profile_command(args) -> int:
    from .harness.profile import ProfileError, run_from_args

    try:
        return run_from_args(args)
    except ProfileError as exc:
        raise CLIError(str(exc)) from None

