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
    """Re-iterable, lazy frames of a file (``ase.io.iread``), read errors as :class:`CLIError`."""

    def __init__(self, path: Path, fmt: str | None = None):
        self.path = path
        self.format = fmt

    def __iter__(self):
        import ase.io

        k = 0
        try:
            for atoms in ase.io.iread(self.path, index=":", format=self.format):
                yield atoms
                k += 1
        except (CLIError, KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:  # ASE raises many kinds for unreadable or unknown files
            where = f" at frame {k}" if k else ""
            raise CLIError(f"cannot read frames from {str(self.path)!r}{where}: "
                           f"{type(exc).__name__}: {exc}") from None
        if k == 0:
            raise CLIError(f"no frames in {str(self.path)!r}")


def _count_frames(path: Path):
    """Number of frames of an ASE trajectory, cheaply; None for other formats."""
    if path.suffix != ".traj":
        return None
    try:
        from ase.io.trajectory import Trajectory

        with Trajectory(path) as traj:
            return len(traj)
    except Exception:
        return None


def _scan_elements(frames) -> tuple[list[str], int]:
    """Sorted chemical symbols found in ``frames``, and the number of frames."""
    from ase.data import chemical_symbols

    seen: set[int] = set()
    n = 0
    for atoms in frames:
        seen.update(int(z) for z in set(atoms.numbers.tolist()))
        n += 1
    return sorted(chemical_symbols[z] for z in seen if 0 < z < len(chemical_symbols)), n


@command(
    "featurize",
    help="featurize frames (any ASE-readable file) into an HDF5 fingerprint store",
    arguments=[
        arg("frames", metavar="FRAMES", help="ASE-readable file of frames (read lazily)"),
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
    from .frames import FrameError
    from .store import featurize_to_store

    source = Path(args.frames)
    if not source.exists():
        raise CLIError(f"frames file {str(source)!r} not found")
    if not source.is_file():
        raise CLIError(f"frames {str(source)!r} is not a file")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CLIError(f"output directory {str(out.parent)!r} does not exist")
    if out.is_dir():
        raise CLIError(f"--out {str(out)!r} is a directory")
    config_path = Path(args.config)
    if not config_path.is_file():
        raise CLIError(f"config file {str(config_path)!r} not found")

    raw, base_dir = load_config(config_path)
    frames = _Frames(source, args.format)
    elements = None
    total = None
    if "elements" not in raw:
        elements, total = _scan_elements(frames)
    resolved = resolve_config(raw, base_dir=base_dir, elements=elements)
    if total is None:
        total = _count_frames(source)
    try:
        summary = featurize_to_store(
            frames, resolved, out,
            derivatives=args.derivatives, workers=args.workers, chunk_size=args.chunk_size,
            total=total, progress=not args.quiet,
            metadata={"source": os.path.abspath(source), "config_file": os.path.abspath(config_path)},
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
