"""Profile the pipeline stages under py-spy, scalene and line_profiler.

``fastfp profile`` (and :func:`profile`) runs one stage of :mod:`fastfp.harness.stages`
(the same callables the benchmarks time) for one backend, in a child Python process
started under the profiler:

* **py-spy** ``record --native -f raw`` (collapsed stacks with C/C++ frames) →
  ``pyspy-raw.txt``, summarised by :mod:`fastfp.harness.summarise` into
  ``pyspy.md``/``pyspy.json`` and a flame graph ``pyspy.svg`` coloured by stage. py-spy
  starts the child itself, which needs no extra permission; where the system forbids
  reading another process's memory at all, the run stops with an explanation.
* **scalene** (1.5 or 2.x) with profiling switched on only around the measured work →
  ``scalene.json`` (+ ``scalene.html`` where a 2.x viewer is available), summarised
  into ``scalene.md`` (CPU split Python / native / system, memory).
* **line_profiler** on the hot Python functions of the backend → ``line_profiler.txt``
  (and ``.json``). fastfp's numba kernels are compiled code and cannot be line-profiled;
  the report lists them.

Each run writes ``OUT/<backend>-<stage>/`` (``run.json`` with the command, machine and
versions); every run also refreshes ``OUT/overview.md`` and ``OUT/stages.png`` from all
the py-spy summaries in ``OUT``.

Only the measured work is attributed to the stage (see :mod:`fastfp.harness.child`):
loading frames, building inputs (for training: the preprocessed data set and the
initialised network) and a first untimed run of the stage are not profiled.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastfp.atomic import check_writable_dir

from . import settings, summarise
from .backends import BACKENDS, why_unavailable
from .child import CHILD_SCRIPT

TOOLS = ("py-spy", "scalene", "line-profiler")
#: ``--stage all``: the stages AMPTorch's users wait for
DEFAULT_STAGES = ("preprocess", "train_epoch")

PTRACE_HELP = (
    "py-spy reads the profiled process's memory (process_vm_readv, the ptrace permission). "
    "Launching the program under py-spy as its parent needs no extra rights, but this "
    "system forbids it (seccomp or kernel.yama.ptrace_scope=3). Allow it with "
    "'docker run --cap-add SYS_PTRACE' (Kubernetes: securityContext.capabilities.add: "
    "[SYS_PTRACE]) or 'sysctl kernel.yama.ptrace_scope=1', or use --tool scalene / "
    "--tool line-profiler, which need no such permission"
)


class ProfileError(Exception):
    """A user-facing failure (bad input, missing tool, forbidden tracing): one message."""


# -- environment checks ----------------------------------------------------------------


def find_pyspy() -> str | None:
    """The py-spy executable: beside this Python, else on PATH."""
    here = Path(sys.executable).parent / ("py-spy.exe" if os.name == "nt" else "py-spy")
    if here.is_file():
        return str(here)
    return shutil.which("py-spy")


def tool_version(tool: str) -> str | None:
    dist = {"py-spy": "py-spy", "scalene": "scalene", "line-profiler": "line-profiler"}[tool]
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def tool_missing(tool: str) -> str | None:
    """None if ``tool`` can be used, else why not (with the install command)."""
    if tool == "py-spy":
        if find_pyspy() is None:
            return "py-spy is not installed: pip install py-spy"
        return None
    if tool == "scalene":
        if importlib.util.find_spec("scalene") is None:
            return "scalene is not installed: pip install scalene"
        return None
    if tool == "line-profiler":
        if importlib.util.find_spec("line_profiler") is None:
            return "line_profiler is not installed: pip install line-profiler"
        return None
    raise ValueError(f"unknown tool {tool!r}")


def pyspy_permitted(timeout: float = 60) -> tuple[bool, str]:
    """Whether py-spy can sample a child process here: ``(True, "")`` or ``(False, why)``."""
    exe = find_pyspy()
    if exe is None:
        return False, "py-spy is not installed: pip install py-spy"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.txt"
        cmd = [exe, "record", "-r", "50", "-f", "raw", "-o", str(out), "--", sys.executable, "-c",
               "import time\nt = time.time()\nwhile time.time() - t < 0.4: pass"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, "py-spy probe timed out"
        text = proc.stdout + proc.stderr
        if proc.returncode != 0 or not out.exists():
            return False, _pyspy_failure(text) or f"py-spy failed (exit {proc.returncode}): {_tail(text, 3)}"
    return True, ""


_PERM = re.compile(r"(?i)(permission denied|operation not permitted|os error 1\b|EPERM|ptrace|process_vm_readv)")


def _pyspy_failure(text: str) -> str | None:
    """An explanation if py-spy's output says it was not allowed to read the process."""
    for line in text.splitlines():
        if _PERM.search(line):
            return f"py-spy was not allowed to sample the child ({line.strip()}). {PTRACE_HELP}"
    return None


def _tail(text: str, n: int = 15) -> str:
    lines = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def _git_commit() -> str | None:
    """The commit of the git checkout the working directory is in (``+dirty`` when it
    has uncommitted changes), or None."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine_info() -> dict:
    """CPU model, core count, memory and load of this machine."""
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        pass
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal"):
                info["memory_gb"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    try:
        info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        pass
    return info


# -- running the tools -----------------------------------------------------------------


def _profile_only_paths() -> list[str]:
    """Path fragments scalene profiles: the pipeline's packages and torch's optimisers.
    Time in other libraries (torch, torch_geometric, numpy) and in native code counts
    to the innermost of these lines that called it."""
    out = []
    for mod in ("fastfp", "amptorch", "skorch"):
        spec = importlib.util.find_spec(mod)
        if spec is not None and spec.submodule_search_locations:
            out.append(str(Path(list(spec.submodule_search_locations)[0])) + os.sep)
    torch_spec = importlib.util.find_spec("torch")
    if torch_spec is not None and torch_spec.submodule_search_locations:
        out.append(str(Path(list(torch_spec.submodule_search_locations)[0]) / "optim") + os.sep)
    return out


def _scalene_major() -> int:
    version = tool_version("scalene") or "0"
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def _scalene_viewer() -> list[str] | None:
    """A ``scalene`` >= 2 command that can render HTML (``scalene view --html``):
    this Python's if it is 2.x, else ``FASTFP_SCALENE_VIEWER`` or a ``scalene`` on PATH
    that is 2.x."""
    if _scalene_major() >= 2:
        return [sys.executable, "-m", "scalene"]
    candidates = [os.environ.get("FASTFP_SCALENE_VIEWER"), shutil.which("scalene")]
    for exe in filter(None, candidates):
        try:
            proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        m = re.search(r"version (\d+)\.", proc.stdout + proc.stderr)
        if m and int(m.group(1)) >= 2:
            return [exe]
    return None


class _Run:
    """One (tool, backend, stage) run: its directory, child arguments and results."""

    def __init__(self, tool, backend, stage, directory: Path, child_args: list[str], script: Path):
        self.tool = tool
        self.backend = backend
        self.stage = stage
        self.dir = directory
        self.child_args = child_args
        self.script = script
        self.status_path = directory / f".status-{tool}.json"
        self.log_path = directory / f"{tool_slug(tool)}.log"

    def child(self, extra=()) -> list[str]:
        return [sys.executable, str(self.script), "--tool", self.tool, "--status", str(self.status_path),
                *self.child_args, *extra]

    def execute(self, cmd: list[str], timeout: float | None) -> tuple[int, str]:
        if self.status_path.exists():
            self.status_path.unlink()
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("TQDM_DISABLE", "1")
        try:
            # the profiler's temporaries (scalene leaves a /tmp/scalene* folder per run) go
            # to a folder of this run's, removed when it ends
            with open(self.log_path, "w", encoding="utf-8") as log, \
                    tempfile.TemporaryDirectory(prefix="fastfp-profile-") as tmp:
                log.write("$ " + shlex.join(cmd) + "\n")
                log.flush()
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(env, TMPDIR=tmp),
                                      timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProfileError(f"{self.tool} run of {self.backend} {self.stage} took longer than {timeout:.0f} s "
                               f"(log: {self.log_path}); use fewer --frames") from None
        return proc.returncode, self.log_path.read_text(encoding="utf-8", errors="replace")

    def status(self, rc: int, text: str) -> dict:
        """The child's status, or a :class:`ProfileError` saying why it failed."""
        if self.status_path.exists():
            status = json.loads(self.status_path.read_text())
            self.status_path.unlink()
            if status.get("unavailable"):
                raise ProfileError(f"{self.stage} cannot run for {self.backend} here: {status['unavailable']}")
            if status.get("ok"):
                return status
        raise ProfileError(f"the profiled program failed (exit {rc}); last lines of {self.log_path}:\n"
                           f"{_tail(text)}")


def tool_slug(tool: str) -> str:
    return {"py-spy": "pyspy", "scalene": "scalene", "line-profiler": "line_profiler"}[tool]


def _run_pyspy(run: _Run, rate: int, native: bool, timeout) -> dict:
    raw = run.dir / "pyspy-raw.txt"
    if raw.exists():
        raw.unlink()
    cmd = [find_pyspy(), "record", "-r", str(rate), "-f", "raw", "--full-filenames", "-o", str(raw)]
    if native:
        cmd.append("--native")
    cmd += ["--", *run.child()]
    rc, text = run.execute(cmd, timeout)
    if not raw.exists():
        why = _pyspy_failure(text)
        if why:
            raise ProfileError(why)
    status = run.status(rc, text)
    if not raw.exists():
        raise ProfileError(f"py-spy wrote no samples (exit {rc}); last lines of {run.log_path}:\n{_tail(text)}")
    m = re.search(r"Samples: (\d+) Errors: (\d+)", text)
    if m:
        status["pyspy_samples"], status["pyspy_errors"] = int(m.group(1)), int(m.group(2))
    status["pyspy_native"] = native
    data = pyspy_products(run.dir, run.backend, run.stage, status)
    return {"status": status, "summary": data, "files": ["pyspy-raw.txt", "pyspy.svg", "pyspy.md", "pyspy.json"]}


def pyspy_products(directory: Path, backend: str, stage: str, status: dict) -> dict:
    """``pyspy.svg``, ``pyspy.md`` and ``pyspy.json`` from ``directory/pyspy-raw.txt``;
    ``status``: ``n_frames``, ``n_atoms``, ``seconds`` (and py-spy's sample/error counts)."""
    samples = summarise.stage_samples(summarise.read_collapsed(directory / "pyspy-raw.txt"))
    summary = summarise.summarise_stacks(samples)
    title = f"{backend} {stage}: {status['n_frames']} frames ({status['n_atoms']} atoms)"
    mode = "py-spy --native" if status.get("pyspy_native", True) else "py-spy (Python frames only)"
    summarise.flamegraph_svg(samples, directory / "pyspy.svg", title=f"{title} — {mode}, {summary.total} samples")
    md = summarise.stacks_markdown(summary, title=f"py-spy: {title}", seconds=sum(status["seconds"]))
    note = ""
    if status.get("pyspy_errors") and status.get("pyspy_samples"):
        frac = status["pyspy_errors"] / max(status["pyspy_samples"], 1)
        if frac > 0.05:
            note = f"\nNote: py-spy reported {status['pyspy_errors']} sampling errors ({100 * frac:.0f}%).\n"
    (directory / "pyspy.md").write_text(md + note + "\nFlame graph: [pyspy.svg](pyspy.svg)\n", encoding="utf-8")
    data = summary.to_json()
    data.update({"backend": backend, "stage": stage, "seconds": status["seconds"],
                 "n_frames": status["n_frames"], "n_atoms": status["n_atoms"],
                 "native": status.get("pyspy_native", True)})
    (directory / "pyspy.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    return data


def _run_scalene(run: _Run, timeout) -> dict:
    out_json = run.dir / "scalene.json"
    if out_json.exists():
        out_json.unlink()
    only = ",".join(_profile_only_paths() + [str(run.script.parent) + os.sep])
    child = run.child()[1:]  # the script and its arguments
    if _scalene_major() >= 2:
        cmd = [sys.executable, "-m", "scalene", "run", "-o", str(out_json), "--off", "--memory", "--profile-all",
               "--profile-only", only, "--cpu-percent-threshold", "0", child[0], "---", *child[1:]]
    else:
        cmd = [sys.executable, "-m", "scalene", "--json", "--outfile", str(out_json), "--cli", "--no-browser",
               "--off", "--memory", "--profile-all", "--profile-only", only, "--cpu-percent-threshold", "0",
               child[0], "---", *child[1:]]
    rc, text = run.execute(cmd, timeout)
    status = run.status(rc, text)
    if not out_json.exists():
        raise ProfileError(f"scalene wrote no profile (exit {rc}); last lines of {run.log_path}:\n{_tail(text)}")
    files = ["scalene.json"]
    viewer = _scalene_viewer()
    html_note = ""
    if viewer:
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([*viewer, "view", "--html", str(out_json.resolve())], cwd=tmp,
                                  capture_output=True, text=True, timeout=300)
            made = Path(tmp) / "scalene-profile.html"
            if proc.returncode == 0 and made.exists():
                shutil.move(str(made), run.dir / "scalene.html")
                files.append("scalene.html")
    else:
        html_note = ("\nNo HTML: scalene < 2 has no 'view' command; render with a scalene 2.x: "
                     "`scalene view --html scalene.json` (or set FASTFP_SCALENE_VIEWER).\n")
    s = scalene_products(run.dir, run.backend, run.stage, status, html_note)
    return {"status": status, "summary": s, "files": files + ["scalene.md", "scalene-summary.json"]}


def scalene_products(directory: Path, backend: str, stage: str, status: dict, note: str = "") -> dict:
    """``scalene.md`` and ``scalene-summary.json`` from ``directory/scalene.json``."""
    s = summarise.summarise_scalene(directory / "scalene.json")
    title = f"{backend} {stage}: {status['n_frames']} frames ({status['n_atoms']} atoms)"
    version = status.get("tool_version") or tool_version("scalene")
    md = summarise.scalene_markdown(s, title=f"scalene {version}: {title}")
    if (directory / "scalene.html").exists():
        note += "\nInteractive view: scalene.html (not in git; regenerate with `scalene view --html scalene.json`).\n"
    (directory / "scalene.md").write_text(md + note, encoding="utf-8")
    s.update({"backend": backend, "stage": stage, "seconds": status["seconds"]})
    (directory / "scalene-summary.json").write_text(json.dumps(s, indent=1), encoding="utf-8")
    return s


def resummarise(out) -> list[Path]:
    """Rewrite the summaries, flame graphs and overview of every run in ``out`` from the
    raw outputs kept there (``pyspy-raw.txt``, ``scalene.json``) and ``run.json``, e.g.
    after the stage rules in :mod:`fastfp.harness.summarise` change."""
    done = []
    for info_path in sorted(Path(out).glob("*/run.json")):
        info = json.loads(info_path.read_text())
        directory = info_path.parent
        for tool, products in (("py-spy", pyspy_products), ("scalene", scalene_products)):
            t = info.get("tools", {}).get(tool)
            raw = directory / ("pyspy-raw.txt" if tool == "py-spy" else "scalene.json")
            if not t or not raw.exists():
                continue
            status = {"n_frames": t.get("frames"), "n_atoms": t.get("atoms"), "seconds": t.get("stage_seconds"),
                      "pyspy_samples": t.get("samples"), "pyspy_errors": t.get("errors"),
                      "pyspy_native": t.get("native", True),
                      "tool_version": t.get("version")}
            products(directory, info["backend"], info["stage"], status)
            if directory not in done:
                done.append(directory)
    write_overview(out)
    return done


def _run_line_profiler_tool(run: _Run, timeout) -> dict:
    prefix = run.dir / "line_profiler"
    rc, text = run.execute(run.child(["--lp-out", str(prefix)]), timeout)
    status = run.status(rc, text)
    data = json.loads(Path(f"{prefix}.json").read_text())
    return {"status": status, "summary": data, "files": ["line_profiler.txt", "line_profiler.json"]}


def _stages_to_run(backend: str, stages_, log) -> list[str]:
    """The stages to profile: ``stages_`` (each must be able to run for ``backend``), or
    with None :data:`DEFAULT_STAGES`, leaving out with a message those that cannot."""
    from .stages import STAGES, why_not

    for stage in stages_ or ():
        if stage not in STAGES:
            raise ProfileError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
        reason = why_not(stage, backend)
        if reason:
            raise ProfileError(f"stage {stage!r} cannot run for {backend} here: {reason}")
    if stages_:
        return list(stages_)
    chosen = []
    for stage in DEFAULT_STAGES:
        reason = why_not(stage, backend)
        if reason:
            log(f"skipping stage {stage}: {reason}")
        else:
            chosen.append(stage)
    if not chosen:
        raise ProfileError(f"none of the stages {', '.join(DEFAULT_STAGES)} can run for {backend} here")
    return chosen


def profile(tools, backend: str, stages_=None, frames: int = 20, data: str | None = None,
            out="fastfp-profile", descriptor: str = "gmpordernorm", repeat: int | None = None,
            rate: int = 100, native: bool = True, timeout: float | None = None, command: str | None = None,
            log=print) -> list[dict]:
    """Run each of ``tools`` on each stage of ``stages_`` (names of
    :data:`fastfp.harness.stages.STAGES`; None: :data:`DEFAULT_STAGES`, those that can
    run) for ``backend``, on the first ``frames`` frames of ``data`` (default: the
    benchmark frames, ``FASTFP_BENCH_DATA``); return one dict per run (``tool``,
    ``backend``, ``stage``, ``dir``, ``status``, ``summary``, ``files``). Tools that are
    not installed are skipped with a message when several are asked for, an error when
    only one is. Raises :class:`ProfileError` for bad input, before any run."""
    from .workloads import is_workload

    tools = list(tools)
    for t in tools:
        if t not in TOOLS:
            raise ProfileError(f"unknown tool {t!r}; known: {', '.join(TOOLS)}")
    if backend not in BACKENDS:
        raise ProfileError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if frames < 1:
        raise ProfileError(f"--frames must be at least 1, got {frames}")
    data = data or settings.DATA.get()
    if not Path(data).exists() and not is_workload(data):
        raise ProfileError(f"--data {data!r}: no such file, directory or workload")
    reason = why_unavailable(backend)
    if reason:
        raise ProfileError(f"cannot profile backend {backend!r}: {reason}")
    chosen = _stages_to_run(backend, stages_, log)
    try:
        out = check_writable_dir(Path(out))
    except OSError as exc:
        raise ProfileError(str(exc)) from None
    usable = []
    for t in tools:
        why = tool_missing(t)
        if why and len(tools) == 1:
            raise ProfileError(why)
        if why:
            log(f"skipping {t}: {why}")
        else:
            usable.append(t)
    if "py-spy" in usable:
        ok, why = pyspy_permitted()
        if not ok and len(usable) == 1:
            raise ProfileError(why)
        if not ok:
            log(f"skipping py-spy: {why}")
            usable.remove("py-spy")
    results = []
    with tempfile.TemporaryDirectory(prefix="fastfp-profile-") as tmp:
        script = Path(tmp) / "fastfp_profile_child.py"
        script.write_text(CHILD_SCRIPT)
        for stage in chosen:
            n_repeat = repeat or (2 if stage == "train_epoch" else 1)
            directory = out / f"{backend}-{stage}"
            directory.mkdir(exist_ok=True)
            child_args = ["--backend", backend, "--stage", stage, "--frames", str(frames), "--data", str(data),
                          "--descriptor", descriptor, "--repeat", str(n_repeat)]
            for tool in usable:
                run = _Run(tool, backend, stage, directory, child_args, script)
                log(f"{tool}: {backend} {stage} ({frames} frames, {descriptor}) -> {directory}")
                t0 = time.perf_counter()
                if tool == "py-spy":
                    res = _run_pyspy(run, rate, native, timeout)
                elif tool == "scalene":
                    res = _run_scalene(run, timeout)
                else:
                    res = _run_line_profiler_tool(run, timeout)
                res.update({"tool": tool, "backend": backend, "stage": stage, "dir": str(directory),
                            "wall_s": time.perf_counter() - t0})
                _write_run_json(run, res, frames, data, descriptor, n_repeat, command)
                results.append(res)
                log(f"  done in {res['wall_s']:.0f} s (stage {sum(res['status']['seconds']):.1f} s): "
                    + ", ".join(str(directory / f) for f in res["files"] if not f.endswith(".json")))
    write_overview(out)
    return results


def _write_run_json(run: _Run, res: dict, frames, data, descriptor, repeat, command) -> None:
    path = run.dir / "run.json"
    try:
        info = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        info = {}
    status = res["status"]
    info.update({
        "backend": run.backend, "stage": run.stage, "descriptor": descriptor,
        "data": data or "default workload (fastfp.harness.stages.data_source())",
        "commit": _git_commit(), "machine": machine_info(), "versions": status.get("versions"),
        "torch_threads": status.get("torch_threads"),
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
                       if k in os.environ},
    })
    info.setdefault("tools", {})[run.tool] = {
        "version": tool_version(run.tool),
        "command": command,
        "frames": status.get("n_frames"), "atoms": status.get("n_atoms"), "repeat": repeat,
        "stage_seconds": status.get("seconds"), "setup_seconds": status.get("setup_s"),
        "wall_seconds": res["wall_s"], "files": res["files"],
        **({"samples": status.get("pyspy_samples"), "errors": status.get("pyspy_errors"),
            "native": status.get("pyspy_native")}
           if run.tool == "py-spy" else {}),
    }
    path.write_text(json.dumps(info, indent=1), encoding="utf-8")


def write_overview(out) -> Path | None:
    """``OUT/overview.md`` and ``OUT/stages.png`` from every ``OUT/*/pyspy.json``
    (and the scalene CPU splits from ``OUT/*/scalene-summary.json``)."""
    out = Path(out)
    runs = []
    order = {"amptorch": 0, "fastfp": 1}
    for p in sorted(out.glob("*/pyspy.json"), key=lambda p: (p.parent.name.split("-", 1)[-1],
                                                            order.get(p.parent.name.split("-")[0], 9))):
        d = json.loads(p.read_text())
        runs.append({"label": f"{d['backend']} {d['stage']} ({d['n_frames']} frames)", "shares": d["shares"],
                     "seconds": sum(d["seconds"]), "link": f"{p.parent.name}/pyspy.md",
                     "native": d.get("native", True)})
    scal = []
    for p in sorted(out.glob("*/scalene-summary.json")):
        d = json.loads(p.read_text())
        cpu = d["cpu_split"]
        user = cpu["python"] + cpu["native"]
        py_of_user = f"{100 * cpu['python'] / user:.0f}%" if user > 0 else ""
        scal.append(f"| [{d['backend']} {d['stage']}]({p.parent.name}/scalene.md) | {sum(d['seconds']):.1f} "
                    f"| {100 * cpu['python']:.1f}% | {100 * cpu['native']:.1f}% "
                    f"| {100 * cpu['system']:.1f}% | {py_of_user} | {d.get('max_footprint_mb') or 0:.0f} |")
    if not runs and not scal:
        return None
    text = ["# Profiles\n", "Written by `fastfp profile`; one folder per backend and stage.\n"]
    if runs:
        chart = summarise.stage_chart(runs, out / "stages.png")
        summarise.stage_chart(runs, out / "stages-seconds.png", absolute=True,
                              title="Time by stage (py-spy samples x stage seconds)")
        mode = "py-spy --native" if all(r["native"] for r in runs) else \
            "py-spy" if not any(r["native"] for r in runs) else "py-spy, some runs without --native"
        text += [f"## Share of time by stage ({mode} samples of the measured work)\n",
                 "Seconds are those of the measured work under py-spy, which slows it down "
                 "(more for native-heavy code): compare them with the benchmarks' timings, not as timings.\n",
                 summarise.overview_markdown(runs)]
        if chart:
            text.append("\n![stage breakdown](stages.png)\n\n![seconds by stage](stages-seconds.png)\n")
    if scal:
        text += ["\n## CPU time split (scalene)\n",
                 "Shares of the profiled stage's time as scalene reports them. Scalene's 'system' is the "
                 "wall time not spent in user code (kernel time and, on a loaded machine, time waiting "
                 "for a CPU), so 'Python / (Python + native)' is the fairer split.\n",
                 "| run | seconds | Python | native | system | Python / (Python + native) | peak MB |",
                 "|---|---:|---:|---:|---:|---:|---:|", *scal, ""]
    path = out / "overview.md"
    path.write_text("\n".join(text), encoding="utf-8")
    return path


# -- command line ----------------------------------------------------------------------


#: ``fastfp profile``'s options, as ``(flags, add_argument keywords)``
ARGUMENTS = [
    (("--tool",), dict(choices=(*TOOLS, "all"), default="all",
                       help="profiler to run (default all: py-spy, scalene, line-profiler)")),
    (("--backend",), dict(choices=BACKENDS, default=None,
                          help="'amptorch' (AMPTorch's own code) or 'fastfp' (fastfp, or AMPTorch with "
                               "fastfp.amptorch.install() where the stage is AMPTorch's); required unless "
                               "--resummarise")),
    (("--stage",), dict(default="all", metavar="STAGE",
                        help="a stage of fastfp.harness.stages (featurize, scale, store_write, store_read, collate, "
                             f"force_contraction, train_epoch, preprocess), or all (default: "
                             f"{' and '.join(DEFAULT_STAGES)}, those that can run here)")),
    (("--frames",), dict(type=int, default=20, metavar="N", help="number of frames (default 20)")),
    (("--data",), dict(default=None, metavar="PATH",
                       help="frames: ASE-readable file, directory or workload name "
                            f"(default: the benchmark frames, {settings.DATA.name} or {settings.DATA.default})")),
    (("--out",), dict(default="fastfp-profile", metavar="DIR", help="output directory (default fastfp-profile)")),
    (("--descriptor",), dict(choices=settings.DESCRIPTORS, default="gmpordernorm",
                             help="descriptor settings of fastfp.harness.settings (default gmpordernorm)")),
    (("--repeat",), dict(type=int, default=None, metavar="K",
                         help="run the measured work K times (default 1; train_epoch: 2 epochs)")),
    (("--rate",), dict(type=int, default=100, metavar="HZ", help="py-spy samples per second (default 100)")),
    (("--no-native",), dict(action="store_true", help="py-spy without --native (Python frames only)")),
    (("--timeout",), dict(type=float, default=None, metavar="S", help="time limit per profiled run, seconds")),
    (("--resummarise",), dict(nargs="+", default=None, metavar="DIR",
                              help="rebuild the summaries, flame graphs and overview of earlier runs in DIR "
                                   "from their raw outputs (after the stage rules changed), and profile nothing")),
]


def run_from_args(args) -> int:
    """``fastfp profile``: raises :class:`ProfileError` with a one-line reason on bad input."""
    if args.resummarise:
        for out in args.resummarise:
            for directory in resummarise(out):
                print(f"re-summarised {directory}", file=sys.stderr)
        return 0
    if args.backend is None:
        raise ProfileError("--backend is required (amptorch or fastfp)")
    tools = list(TOOLS) if args.tool == "all" else [args.tool]
    for name, value in (("--frames", args.frames), ("--repeat", args.repeat or 1), ("--rate", args.rate)):
        if value < 1:
            raise ProfileError(f"{name} must be a positive integer, got {value}")
    command = "fastfp profile " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 and sys.argv[1] == "profile" else None
    results = profile(tools, args.backend, None if args.stage == "all" else [args.stage], frames=args.frames,
                      data=args.data, out=args.out, descriptor=args.descriptor, repeat=args.repeat, rate=args.rate,
                      native=not args.no_native, timeout=args.timeout, command=command,
                      log=lambda m: print(m, file=sys.stderr))
    overview = Path(args.out) / "overview.md"
    if overview.exists():
        print(f"overview: {overview}", file=sys.stderr)
    return 0 if results else 1
