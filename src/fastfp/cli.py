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
bad store), with a one-line message on stderr; 130 interrupted.
"""

from __future__ import annotations

import argparse
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
    parser = argparse.ArgumentParser(
        prog="fastfp", description="Fast GMP / Gaussian fingerprints with exact sparse derivatives."
    )
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


class _Frames:
    """Re-iterable, lazy frames of a file (``ase.io.iread``), read errors as :class:`CLIError`.

    ``text`` is a path, optionally with ASE's frame selection: ``frames.traj@:8000``,
    ``frames.traj@-100:``. Raises :class:`CLIError` if the file does not exist."""

    def __init__(self, text: str, fmt: str | None = None):
        from ase.io.formats import parse_filename

        path, index = parse_filename(text)
        self.path = Path(path)
        self.index = ":" if index is None else index
        self.format = fmt
        if not self.path.is_file():
            raise CLIError(f"frames file {str(self.path)!r} " + ("is not a file" if self.path.exists() else "not found"))

    def __iter__(self):
        import ase.io

        k = 0
        try:
            for atoms in ase.io.iread(self.path, index=self.index, format=self.format):
                yield atoms
                k += 1
        except (CLIError, KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:  # ASE raises many kinds for unreadable or unknown files
            where = f" at frame {k}" if k else ""
            raise CLIError(f"cannot read frames from {str(self.path)!r}{where}: "
                           f"{type(exc).__name__}: {exc}") from None
        if k == 0:
            raise CLIError(f"no frames in {str(self.path)!r} (selection {self.index!r})")

    def count(self):
        """Number of frames selected from an ASE trajectory, cheaply; None for other formats."""
        if self.path.suffix != ".traj":
            return None
        try:
            from ase.io.trajectory import Trajectory

            with Trajectory(self.path) as traj:
                n = len(traj)
        except Exception:
            return None
        if isinstance(self.index, slice):
            return len(range(*self.index.indices(n)))
        return 1 if isinstance(self.index, int) else None


def _inputs(args) -> tuple[_Frames, Path, Path]:
    """FRAMES, --out and --config of ``featurize`` and ``lmdb``, checked before any work."""
    frames = _Frames(args.frames, args.format)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CLIError(f"output directory {str(out.parent)!r} does not exist")
    if out.is_dir():
        raise CLIError(f"--out {str(out)!r} is a directory")
    config_path = Path(args.config)
    if not config_path.is_file():
        raise CLIError(f"config file {str(config_path)!r} not found")
    return frames, out, config_path


@command(
    "featurize",
    help="featurize frames (any ASE-readable file) into an HDF5 fingerprint store",
    arguments=[
        arg("frames", metavar="FRAMES", help="ASE-readable file of frames (read lazily); FILE@SLICE selects frames, e.g. data.traj@:1000"),
        arg("--config", required=True, metavar="CONFIG.json",
            help="AMPTorch-style descriptor config (fp_scheme, fp_params, [elements], [cutoff_params])"),
        arg("--out", required=True, metavar="STORE", help="store to write (replaced atomically on success)"),
        arg("--derivatives", action="store_true", help="also store the exact derivative blocks"),
        arg("--workers", type=_positive_int, default=1, metavar="N", help="processes (default 1)"),
        arg("--chunk-size", type=_positive_int, default=32, metavar="K",
            help="frames featurized per batch (default 32); bounds memory"),
        arg("--format", default=None, metavar="FMT", help="ASE format of FRAMES if not guessed from its name"),
        arg("--compression", choices=["none", "lzf", "gzip"], default="none",
            help="HDF5 compression of the float datasets (default none)"),
        arg("--quiet", action="store_true", help="no progress bar or summary"),
    ],
)
def featurize(args) -> int:
    from .config import load_config, resolve_config
    from .frames import FrameError, elements_of
    from .store import featurize_to_store

    frames, out, config_path = _inputs(args)
    source = frames.path

    raw, base_dir = load_config(config_path)
    resolved = resolve_config(raw, base_dir=base_dir, elements=None if "elements" in raw else elements_of(frames))
    total = frames.count()
    try:
        summary = featurize_to_store(
            frames, resolved, out,
            derivatives=args.derivatives, workers=args.workers, chunk_size=args.chunk_size,
            total=total, progress=not args.quiet,
            metadata={"source": os.path.abspath(args.frames), "config_file": os.path.abspath(config_path)},
            compression=None if args.compression == "none" else args.compression,
        )
    except FrameError as exc:  # "frame N: ..." with N counted from 0 over the whole file
        raise CLIError(f"{source}: {exc}") from None
    if not args.quiet:
        size = out.stat().st_size
        print(
            f"wrote {out}: {summary['n_frames']} frames, {summary['n_atoms']} atoms, "
            f"{summary['n_features']} features"
            + (f", {summary['n_blocks']} derivative blocks" if args.derivatives else "")
            + f", {size / 2**20:.1f} MiB in {summary['seconds']:.1f} s",
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
            help="comma-separated backends: amptorch, fastfp (default all; unavailable ones say why)"),
        arg("--out", default="bench-results", metavar="DIR",
            help="where summary.md and time_vs_frames.png go (default bench-results/)"),
        arg("--frames", type=_positive_int, nargs="+", default=None, metavar="N",
            help="frame counts to benchmark (default 100 1000 16000; --quick: 10 30 100)"),
        arg("--descriptors", default=None, metavar="LIST",
            help="comma-separated descriptors to featurize: gmpordernorm, gmp, gaussian (default all; "
                 "--quick: gmpordernorm; the other stages use GMPOrderNorm)"),
    ],
)
def bench(args) -> int:
    from .harness.bench import run_bench

    return run_bench(quick=args.quick, data=args.data, backends=args.backend, out=args.out, frames=args.frames,
                     descriptors=args.descriptors)


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
    help="featurize frames with energies and forces into an AMPTorch LMDB dataset "
    "(for AtomsTrainer's config['dataset']['lmdb_path'])",
    arguments=[
        arg("frames", metavar="FRAMES",
            help="ASE-readable file of frames with energies (and forces), FILE@SLICE to select (e.g. data.traj@:1000); read lazily, twice "
            "(three times when the config has no elements)"),
        arg("--config", required=True, metavar="CONFIG.json",
            help="AMPTorch-style descriptor config (fp_scheme, fp_params, [elements], [cutoff_params])"),
        arg("--out", required=True, metavar="DATA.lmdb", help="LMDB file to write (replaced atomically on success)"),
        arg("--scaling", default=None, metavar="JSON",
            help="feature scaling as JSON text or a JSON file, AMPTorch's dict "
            "(default {\"type\": \"normalize\", \"range\": [0, 1], \"elementwise\": true})"),
        arg("--chunk-size", type=_positive_int, default=16, metavar="K",
            help="frames featurized, scaled and committed together (default 16); bounds memory"),
        arg("--no-derivatives", action="store_true",
            help="energy-only data (no forces, no derivative matrices), for get_forces=False training"),
        arg("--format", default=None, metavar="FMT", help="ASE format of FRAMES if not guessed from its name"),
        arg("--quiet", action="store_true", help="no progress bars or summary"),
    ],
)
def lmdb_command(args) -> int:
    try:
        from .amptorch.lmdb import write_lmdb
    except ImportError as exc:
        raise CLIError(f"needs torch, torch_geometric and lmdb (the 'torch' extra): {exc}") from None
    from .config import load_config

    frames, out, config_path = _inputs(args)
    source = frames.path
    scaling = None if args.scaling is None else _json_arg(args.scaling, "--scaling")
    raw, base_dir = load_config(config_path)

    # Ctrl-C and SIGTERM (kill, job schedulers) interrupt the write, which removes its
    # temporary file; exit code 130. Raised inside a numba kernel, the KeyboardInterrupt
    # surfaces as a SystemError, hence the flag.
    import signal

    interrupted = []

    def interrupt(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    handlers = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        summary = write_lmdb(frames, raw, out, scaling=scaling, progress=not args.quiet,
                             chunk_frames=args.chunk_size, base_dir=base_dir, derivatives=not args.no_derivatives,
                             total=frames.count())
    except BaseException as exc:
        if interrupted:
            raise KeyboardInterrupt from None
        if isinstance(exc, ValueError) and str(exc).startswith("frame"):  # no energy, bad frame: "frame N: ..."
            raise CLIError(f"{source}: {exc}") from None
        raise
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if not args.quiet:
        print(f"wrote {out}: {summary['n_frames']} frames, {summary['n_atoms']} atoms, "
              f"{summary['n_features']} features, {summary['bytes'] / 2**20:.1f} MiB in {summary['seconds']:.1f} s "
              f"({summary['scalers']} scalers)", file=sys.stderr)
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

