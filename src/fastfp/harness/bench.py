"""``fastfp bench``: run the asv suite in this environment, then summarise it.

Steps: check the inputs (``--out`` writable, a git checkout with a commit, ``--data``
frames, pseudodensities), ``asv machine --yes`` if this machine is unknown to asv,
``asv run --python=same --set-commit-hash HEAD`` (asv saves no results from an existing
environment without it; :mod:`fastfp.harness.asvrun`: one progress line per benchmark,
asv's output in ``asv.log``), more samples for the noisy rows (:func:`measure`),
``asv publish``, then :mod:`fastfp.harness.results` turns asv's results into
``summary.md`` and ``time_vs_frames.png`` in ``--out``, and with ``--report`` into the
benchmark report (:mod:`fastfp.harness.report`). asv's results and HTML go to
``.asv/bench/`` (``asv.conf.json``'s results folder holds the history, see
:mod:`fastfp.harness.history`).

What runs is chosen by the benchmark settings (:mod:`fastfp.harness.settings`), passed
to asv's processes as ``FASTFP_BENCH_*`` variables (those set in the environment, then
those the options set): the backends and descriptors are
the benchmarks' parameter values, ``--quick`` sets :data:`settings.QUICK_SETTINGS`
(benchmark classes outside the quick subset skip, saying so), and every setup that
skips records why in a file the summary reads.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastfp.atomic import check_writable_dir

from . import asvrun, report, results, settings
from .backends import why_unavailable


class BenchError(ValueError):
    """Bad input to ``fastfp bench`` (the command line prints it and exits with 2)."""


def say(*parts) -> None:
    """One line of ``fastfp bench``'s progress, on stderr."""
    print("fastfp bench:", *parts, file=sys.stderr, flush=True)


# -- checks ----------------------------------------------------------------------------


def find_checkout(start: Path | None = None) -> Path:
    """Root of the fastfp git checkout holding ``asv.conf.json`` and ``benchmarks/``
    that the working directory is in."""
    start = Path(start or os.getcwd())
    proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True)
    root = Path(proc.stdout.strip()) if proc.returncode == 0 else None
    if root is None or not (root / "asv.conf.json").is_file() or not (root / "benchmarks").is_dir():
        raise BenchError("fastfp bench runs in a git checkout of fastfp (asv.conf.json and benchmarks/ at its "
                         f"root: asv records results per commit); {start} is not in one")
    return root


def require_asv() -> None:
    """:class:`BenchError` if asv is not installed."""
    if importlib.util.find_spec("asv") is None:
        raise BenchError("asv is not installed: pip install -e '.[bench]'")


def head_commit(root: Path) -> str:
    """``git rev-parse HEAD``, or :class:`BenchError` when there is no commit."""
    proc = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"{root} has no commit yet: asv records results per commit; commit first "
                         f"({proc.stderr.strip() or 'git rev-parse HEAD failed'})")
    return proc.stdout.strip()


def check_data_path(source: str) -> None:
    """``--data`` exists (or names a workload) and, if a file, ASE reads its first frame."""
    from .workloads import is_workload, list_workloads

    path = Path(source)
    if not path.exists() and not is_workload(source):
        raise BenchError(f"--data {source!r}: no such file or directory (nor a workload name: "
                         f"{', '.join(sorted(list_workloads()))})")
    if path.is_file():
        try:
            import ase.io

            first = ase.io.read(path, index=0)
        except Exception as exc:  # ASE raises many kinds for unreadable files
            raise BenchError(f"--data {source!r} is not readable by ASE: {type(exc).__name__}: {exc}") from None
        if len(first) == 0:
            raise BenchError(f"--data {source!r}: its first frame has no atoms")


def check_data(source: str, limit: int | None = None) -> dict:
    """Load the first ``limit`` frames (all if None) of ``source`` (the default workload
    is generated here, with a progress bar, if not cached) and check that the
    pseudodensities of their elements are found; returns
    :func:`fastfp.harness.workloads.describe`'s dict."""
    from .workloads import describe, load_frames

    check_data_path(source)
    try:
        info = describe(load_frames(source, limit, progress=True), source)
    except (ValueError, OSError) as exc:
        raise BenchError(f"cannot read the benchmark frames {source!r}: {exc}") from None
    try:
        for descriptor in settings.DESCRIPTORS:
            settings.descriptor_config(descriptor, info["elements"])
    except FileNotFoundError as exc:
        raise BenchError(str(exc)) from None
    return info


def parse_names(text: str | None, variable: settings.Variable, option: str) -> list[str]:
    """``--backend`` / ``--descriptors``: comma-separated names known to ``variable``'s
    default, in that order; all of them when ``text`` is None."""
    known = variable.default.split(",")
    if text is None:
        return known
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise BenchError(f"{option} {text!r}: unknown name(s) {unknown}; choose from {','.join(known)}")
    return [k for k in known if k in names]


# -- running asv -----------------------------------------------------------------------


def bench_env(source: str, frames, quick: bool, backends: list[str], descriptors: list[str], skips: Path) -> dict:
    """Environment of the asv run: the benchmark settings (the options' over those set
    in the environment, such as ``FASTFP_BENCH_AMPTORCH_MAX_FRAMES``), and
    ``ASV_PYTHONPATH`` so that benchmark processes import this fastfp even when it is not
    installed."""
    import fastfp

    env = dict(os.environ)
    pkg_parent = str(Path(fastfp.__file__).resolve().parent.parent)
    paths = [pkg_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["ASV_PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["TQDM_DISABLE"] = "1"
    values = {settings.DATA: source, settings.PREIMPORT: "1", settings.SKIPS: str(skips), settings.QUICK: "0",
              settings.BENCH_BACKENDS: ",".join(backends), settings.BENCH_DESCRIPTORS: ",".join(descriptors)}
    values[settings.FRAMES] = " ".join(str(n) for n in frames)
    if quick:
        values.update(settings.QUICK_SETTINGS)
    for variable, value in values.items():
        env[variable.name] = value
    return env


#: what fastfp bench runs: the whole suite but the fast subset of the history
#: (benchmarks/history.py, fastfp bench --history), whose stages the suite has too
SUITE = r"^(?!history\.)"
#: where fastfp bench keeps asv's results and HTML (asv.conf.json's results_dir is the
#: history's, in the repository)
RESULTS = Path(".asv") / "bench" / "results"
HTML = Path(".asv") / "bench" / "html"
#: rounds of extra samples for the rows still noisy (each round is one asv run)
RESAMPLE_ROUNDS = 3


def selector(m: results.Measurement) -> str:
    """The ``asv run --bench`` regex of one row: its benchmark at its parameters."""
    name = f"{m.name}({', '.join(m.params)})" if m.params else m.name
    return "^" + re.escape(name) + "$"


def measure(root: Path, config: Path, sha: str, env: dict, log: Path, machine: str, skips: Path,
            budget: float) -> tuple[int, list[results.Measurement]]:
    """asv run of the suite (:data:`SUITE`) at ``sha``, then up to
    :data:`RESAMPLE_ROUNDS` more asv runs adding samples (``--append-samples``) to the
    rows that need them (:func:`results.needs_samples`: spread above ±10% or one sample,
    less than ``budget`` seconds of samples so far). Returns asv's exit code and the
    measurements."""
    started = time.time()
    folder = Path(json.loads(config.read_text())["results_dir"])

    def read():
        try:
            benchmarks, found = results.load(folder, machine, sha)
        except FileNotFoundError as exc:
            raise BenchError(f"{exc}; asv's output: {log}") from None
        return results.measurements(benchmarks, found, results.read_skips(skips), since=started)

    code = asvrun.run(root, config, sha, env, log, say, (SUITE,))
    ms = read()
    for k in range(1, RESAMPLE_ROUNDS + 1):
        noisy = [m for m in ms if results.needs_samples(m, budget)]
        if not noisy:
            break
        say(f"more samples for {len(noisy)} rows with a spread above ±{results.MAX_SPREAD:.0f}% or one sample "
            f"(round {k} of {RESAMPLE_ROUNDS})")
        asvrun.run(root, config, sha, env, log, None, [selector(m) for m in noisy], ("--append-samples",))
        ms = read()
    return code, ms


# -- the summary's header ----------------------------------------------------------------


def versions() -> str:
    """Versions of the libraries the benchmarks measure."""
    out = []
    for dist in ("fastfp", "amptorch", "numpy", "numba", "torch", "torch_geometric", "ase", "vesin", "h5py"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


def threads() -> str:
    """Threads of fastfp's kernels and of torch, and the variables that set them."""
    from fastfp.threads import num_threads

    text = f"fastfp kernels {num_threads()} (FASTFP_NUM_THREADS), {os.cpu_count()} CPUs"
    if importlib.util.find_spec("torch") is not None:
        import torch

        text += f"; torch {torch.get_num_threads()}"
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "FASTFP_NUM_THREADS") if k in os.environ}
    return text + (f" ({', '.join(f'{k}={v}' for k, v in env.items())})" if env else "")


def src_state(root: Path, sha: str) -> str:
    """The commit, and whether ``src/`` and ``benchmarks/`` of the working tree differ
    from it (what ran is the working tree)."""
    proc = subprocess.run(["git", "status", "--porcelain", "--", "src", "benchmarks"], cwd=root,
                          capture_output=True, text=True)
    changed = [line[3:] for line in proc.stdout.splitlines()]
    if not changed:
        return f"{sha[:12]} (src/ and benchmarks/ as committed)"
    return f"{sha[:12]} **with uncommitted changes** to {', '.join(changed[:5])}{' ...' * (len(changed) > 5)}"


def descriptor_settings(descriptors: list[str], elements: list[str]) -> str:
    """The benchmark descriptor settings, one line each."""
    out = []
    for name in descriptors:
        params = settings.descriptor_config(name, elements)["fp_params"]
        shown = {k: v for k, v in params.items() if k != "atom_gaussians"}
        out.append(f"{name} {json.dumps(shown, sort_keys=True)}")
    return "; ".join(out) + " (the stages after featurization use gmpordernorm)"


# -- the command -----------------------------------------------------------------------


def run_bench(quick: bool = False, data: str | None = None, backends: str | None = None,
              out: str = "bench-results", frames=None, descriptors: str | None = None,
              report_to: str | None = None) -> int:
    """``fastfp bench``; returns the exit code (1 if some benchmark failed). Raises
    :class:`BenchError` (or ``OSError``) for bad input, before any benchmark runs. A run
    that stops before asv has run, or is interrupted, removes the folders it created
    (``--out``, ``.asv``: :func:`asvrun.removed_on_early_stop`). With ``report_to``, a run
    whose benchmarks all ran or skipped also writes the report there
    (:mod:`fastfp.harness.report`); otherwise the report is left as it was."""
    t0 = time.perf_counter()
    chosen = parse_names(backends, settings.BENCH_BACKENDS, "--backend")
    featurized = (list(settings.QUICK_DESCRIPTORS) if quick and descriptors is None
                  else parse_names(descriptors, settings.BENCH_DESCRIPTORS, "--descriptors"))
    source = data or settings.DATA.default
    check_data_path(source)  # bad --data first: cheap, and the likeliest mistake
    require_asv()
    root = find_checkout()
    sha = head_commit(root)
    gpu, gpu_path = None, root / "reports" / "gpu.md"
    if report_to is not None:
        try:
            report_to = report.check_report_path(report_to)
            gpu = report.read_gpu_report(gpu_path) if gpu_path.is_file() else None
        except ValueError as exc:
            raise BenchError(str(exc)) from None
    budget = float(settings.ROW_BUDGET.get())
    out_dir = Path(out)
    log = out_dir / "asv.log"
    with asvrun.removed_on_early_stop((out_dir, root / ".asv"), log):
        check_writable_dir(out_dir, "--out")
        counts = frames or (list(settings.QUICK_FRAMES) if quick else settings.FRAMES.ints())
        info = check_data(source, max(counts))
        source = str(Path(source).resolve()) if Path(source).exists() else source
        say(f"frames: {info['source']} ({info['n_frames']} frames, {info['atoms_per_frame']:.0f} atoms per "
            f"frame, elements {' '.join(info['elements'])})")
        if not info["labels"]:
            say("note: the frames have no energies and forces: featurization and store stages only")
        for b in chosen:
            say(f"backend {b}: {why_unavailable(b) or 'ready'}")
        if info["n_frames"] < max(counts):
            counts = [n for n in counts if n < info["n_frames"]] + [info["n_frames"]]
        log.write_text("")
        with tempfile.TemporaryDirectory(prefix="fastfp-bench-") as tmp:
            skips = Path(tmp) / "skips.jsonl"
            env = bench_env(source, counts, quick, chosen, featurized, skips)
            machine = asvrun.ensure_machine(env, say)
            config = asvrun.write_config(root, Path(tmp) / "asv.conf.json", root / RESULTS, html_dir=root / HTML)
            say(f"asv run (its output: {log})")
            code, ms = measure(root, config, sha, env, log, machine, skips, budget)
            if code != 0:
                say(f"asv run exited with {code} (some benchmarks failed; see {log})")
            problem = asvrun.publish(root, config, env, log)
            say(problem or f"asv publish: html in {root / HTML}")
    table = results.table(ms)
    header = {
        "command": report.command_line(["bench", *sys.argv[2:]] if sys.argv[1:2] == ["bench"] else ["bench"]),
        "commit": src_state(root, sha),
        "machine": f"{machine} ({os.cpu_count()} CPUs)",
        "threads": threads(),
        "python": f"{sys.executable} ({sys.version.split()[0]})",
        "versions": versions(),
        "frames": f"{info['source']} ({info['atoms_per_frame']:.0f} atoms per frame, elements "
                  f"{' '.join(info['elements'])})",
        "frame counts": ", ".join(str(n) for n in counts),
        "backends": ", ".join(chosen),
        "descriptor settings": descriptor_settings(featurized, info["elements"]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "samples": f"more samples for rows with a spread above ±{results.MAX_SPREAD:.0f}% until it is below or "
                   f"{budget:.0f} s of samples are spent ({settings.ROW_BUDGET.name}); rows still above are "
                   "flagged noisy",
        "asv results": str(root / RESULTS / machine),
        "asv log": str(log),
    }
    notes = [f"**No {b} column: {why_unavailable(b)}.**" for b in chosen if why_unavailable(b)]
    if "amptorch" in chosen and why_unavailable("amptorch"):
        notes.append("To compare with AMPTorch: install AMPTorch into its own environment, `pip install -e` this "
                     "checkout there, and run `fastfp bench` with that environment's Python.")
    text = results.summary_markdown(table, header, notes)
    (out_dir / "summary.md").write_text(text)
    plot = results.plot_time_vs_frames(table, out_dir / "time_vs_frames.png", title=f"fastfp bench, {sha[:8]}")
    print(text)
    say(f"wrote {out_dir / 'summary.md'} and {plot} in {time.perf_counter() - t0:.0f} s")
    if report_to is not None and code != 0:
        say(f"{report_to} left as it was: some benchmarks failed (see {log})")
    elif report_to is not None:
        cap = settings.AMPTORCH_MAX_FRAMES
        cap_text = (f"{env[cap.name]} frames ({cap.name}; default {cap.default})" if cap.name in env
                    else f"{cap.default} frames ({cap.name}'s default)")
        del header["asv log"]  # in --out, not kept with the report
        text = report.report_markdown(header, results.summary_body(table, notes), report.plot_path(report_to).name,
                                      gpu, os.path.relpath(gpu_path, report_to.parent), cap_text)
        written = report.write_report(report_to, text, plot)
        say(f"wrote {written[0]} and {written[1]}")
    return 0 if code == 0 else 1
