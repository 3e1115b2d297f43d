"""``fastfp bench --report PATH``: the benchmark report (``reports/benchmarks.md``) as
the product of one run.

The report is the run's summary (:func:`fastfp.harness.results.summary_body`) under a
header that says what was run: the commit and whether ``src/`` differed from it, the
date, machine, Python and library versions, the exact command line with the variables
that set it, the workload, the frame counts, the descriptors and AMPTorch's frame cap
with the reason. The plot is copied beside it (``<stem>-time_vs_frames.png``). A last
section holds the GPU figures of the newest ``scripts/gpu_check.py`` report
(``reports/gpu.md``): its tables, under the device, commit, date and command that
report names, marked as measured there and not in this run (:func:`read_gpu_report`).

Both files are written under temporary names in the report's folder and moved over the
old ones only when the run has finished without a failed benchmark; a run that stops,
fails or is interrupted leaves the old report as it was.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from fastfp.atomic import AtomicPath

from . import settings

#: the first line of every report: what wrote it
MARKER = "<!-- Written by `fastfp bench --report`: rerun it rather than editing this file. -->"
#: variables, besides ``FASTFP_BENCH_*``, that change what a run measures; the command
#: line in the report shows those set
COMMAND_VARIABLES = ("FASTFP_AMPTORCH_SRC", "FASTFP_AMPTORCH_PATCHES", "FASTFP_NUM_THREADS", "OMP_NUM_THREADS",
                     "MKL_NUM_THREADS", "FASTFP_SHARED", "FASTFP_GMP_DIR", "FASTFP_CACHE")
#: why AMPTorch has a frame cap at all (the cap's value is the run's)
AMPTORCH_CAP_REASON = ("AMPTorch's preprocessing runs at a few frames per second on this workload and keeps every "
                       "frame's derivative matrix in memory (7.7 MiB per frame), so 16,000 frames do not fit in 24 GB: "
                       "its real attempt at all 16,000 failed on memory at frame 2,125 "
                       "([amptorch_16k/result.md](amptorch_16k/result.md))")


class GPUReportError(ValueError):
    """A ``scripts/gpu_check.py`` report that does not name its device, commit or command."""


@dataclass
class GPUReport:
    """What the report takes from a ``scripts/gpu_check.py`` report."""

    path: Path
    device: str
    commit: str
    date: str
    command: str
    complete: bool
    tables: list = field(default_factory=list)  # (section title, [table lines])


def read_gpu_report(path) -> GPUReport:
    """Parse a ``scripts/gpu_check.py`` report: its first line starting ``Run `` gives
    the date, the commit (``commit <hash>``) and the command (the first code span naming
    ``gpu_check.py``); ``- device: **NAME**`` the device; the tables standing directly
    under a ``##`` heading (not in its ``###`` subsections) are the figures. Raises
    ``FileNotFoundError``, or :class:`GPUReportError` naming what is missing."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    run = next((ln for ln in lines if ln.startswith("Run ")), "")
    date = re.match(r"Run (\d{4}-\d\d-\d\d[ T]\d\d:\d\d(?: [A-Z]{2,5})?)", run)
    commit = re.search(r"\bcommit ([0-9a-f]{7,40})\b", run)
    command = re.search(r"`([^`]*gpu_check\.py[^`]*)`", run)
    device = next((m for m in map(re.compile(r"- device: \*\*(.+?)\*\*").match, lines) if m), None)
    missing = [what for what, found in (("a 'Run <date>' line", date), ("its commit", commit),
                                        ("its command", command), ("a '- device: **NAME**' line", device)) if not found]
    if missing:
        raise GPUReportError(f"{path} is not a scripts/gpu_check.py report: no {', no '.join(missing)}")
    tables: list = []
    section, in_sub = "", False
    for k, line in enumerate(lines):
        if line.startswith("## "):
            section, in_sub = line[3:].strip(), False
        elif line.startswith("### "):
            in_sub = True
        elif line.startswith("|") and section and not in_sub:
            if k == 0 or not lines[k - 1].startswith("|"):
                tables.append((section, []))
            tables[-1][1].append(line)
    return GPUReport(path=path, device=device[1], commit=commit[1], date=date[1], command=command[1],
                     complete=not any(ln.startswith("**Incomplete") for ln in lines), tables=tables)


def gpu_lines(gpu: GPUReport | None, link: str) -> list[str]:
    """The report's GPU section: ``gpu``'s tables under its device, commit, date and
    command (``link``: the GPU report's path relative to the report)."""
    lines = ["## GPU (from the GPU report, not this run)", ""]
    if gpu is None:
        return lines + [f"No GPU report ({link}): `scripts/gpu_check.py` on a GPU machine writes one.", ""]
    lines += [f"Measured on **{gpu.device}** at commit `{gpu.commit}`, {gpu.date}, by `{gpu.command}`: copied from "
              f"[{link}]({link}), which says how each figure was taken. Not part of this run: another machine, "
              f"another commit." + ("" if gpu.complete else " **That run was incomplete** (its report says how far "
                                                               "it got)."), ""]
    for title, table in gpu.tables:
        lines += [f"### {title}", "", *table, ""]
    return lines


def command_line(argv: list[str], environ=None) -> str:
    """The command as a shell line: the variables of :data:`settings.VARIABLES` and
    :data:`COMMAND_VARIABLES` set in ``environ`` (default ``os.environ``), then
    ``fastfp`` and ``argv``."""
    environ = os.environ if environ is None else environ
    names = [v.name for v in settings.VARIABLES if v not in (settings.SKIPS, settings.PREIMPORT)]
    names += list(COMMAND_VARIABLES)
    shown = [f"{n}={shlex.quote(environ[n])}" for n in dict.fromkeys(names) if n in environ]
    return " ".join([*shown, "fastfp", *map(shlex.quote, argv)])


def report_markdown(header: dict, body: list[str], plot_name: str, gpu: GPUReport | None, gpu_link: str,
                    amptorch_cap: str) -> str:
    """The report: :data:`MARKER`, what was run (``header``: the summary's header,
    with ``command`` and ``commit`` first), the summary ``body``, the plot, the GPU
    section and the other reports."""
    info = dict(header)
    command, commit = info.pop("command"), info.pop("commit")
    lines = [MARKER, "", "# Benchmarks: AMPTorch and fastfp", "",
             f"One run of the asv suite (`benchmarks/`) through `fastfp bench` at commit `{commit}`, AMPTorch and "
             "fastfp in the same run on one machine; everything above the GPU section is that run. Regenerate "
             "it with the command below.", "", "## What was run", "", "```sh", command, "```", "",
             f"- commit: `{commit}`"]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    lines += [f"- AMPTorch frame cap: {amptorch_cap}; {AMPTORCH_CAP_REASON}.", "",
              "## Results", "", *body, "", f"![time against frames, log-log]({plot_name})", ""]
    lines += gpu_lines(gpu, gpu_link)
    lines += ["## Other reports", "",
              "- [runs.md](runs.md): runs outside `fastfp bench` (AMPTorch and fastfp on all 16,000 frames, "
              "training on the fly and from a store, the OC20 ratios of issues 12, 21 and 22), each with its "
              "commit and command.",
              "- [findings.md](findings.md): profiles and the roofline behind fastfp's optimisations.",
              "- [history.png](history.png) and [asv/](asv): the fast subset across the project's commits "
              "(`fastfp bench --history`).", ""]
    return "\n".join(lines)


def plot_path(report) -> Path:
    """Where the report's plot goes: ``<stem>-time_vs_frames.png`` beside it."""
    report = Path(report)
    return report.with_name(f"{report.stem}-time_vs_frames.png")


def check_report_path(report) -> Path:
    """``--report``: a ``.md`` file (new, or a report this command wrote: it starts with
    :data:`MARKER`) in a writable folder. Raises ``ValueError`` naming the problem, before
    any work."""
    from fastfp.atomic import check_writable_dir

    report = Path(report)
    if report.suffix != ".md":
        raise ValueError(f"--report {str(report)!r}: a markdown file (.md) is expected")
    if report.is_dir():
        raise ValueError(f"--report {str(report)!r} is a directory")
    if report.exists():
        with open(report, encoding="utf-8", errors="replace") as fh:
            first = fh.readline().rstrip("\n")
        if first != MARKER:
            raise ValueError(f"--report {str(report)!r} exists and was not written by `fastfp bench --report` "
                             f"(its first line is not {MARKER!r}): move it away first")
    check_writable_dir(report.parent, "--report's folder")
    return report


def write_report(report, text: str, plot) -> tuple[Path, Path]:
    """Write ``text`` to ``report`` and copy the PNG ``plot`` to :func:`plot_path`, each
    under a temporary name in the same folder, then moved over the old files; on any
    error the old files stay as they were and the temporaries are removed."""
    report = Path(report)
    png = plot_path(report)
    with AtomicPath(png) as tmp_png, AtomicPath(report) as tmp_md:
        shutil.copyfile(plot, tmp_png)
        tmp_md.write_text(text, encoding="utf-8")
    return report, png
