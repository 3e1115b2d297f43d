"""Running asv for ``fastfp bench``: a copy of ``asv.conf.json`` with its own results
folder (and, for the fast subset, a suite of that subset alone), this machine's asv
name, and ``asv run`` in this environment with its whole output in a log file and one
short progress line per benchmark on the console.

asv runs the benchmarks in the Python running ``fastfp bench`` (``--python=same``: an
existing environment, where asv records results only with ``--set-commit-hash``), on
the fastfp found first on ``ASV_PYTHONPATH`` (the benchmark processes' ``PYTHONPATH``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

#: asv's line for a benchmark's result: ``[ 42.86%] ··· module.Class.method   status``
PROGRESS = re.compile(r"^\[\s*(\d+)(?:\.\d+)?%\] ·{3} (\S+\.\S+)\s+(.*?)\s*$")
#: wide enough that asv does not shorten benchmark names in its output
COLUMNS = "200"


def command(*args) -> list[str]:
    """``python -m asv ARGS`` with this Python."""
    return [sys.executable, "-m", "asv", *args]


def asv_config(root: Path) -> dict:
    """The checkout's ``asv.conf.json``."""
    return json.loads((root / "asv.conf.json").read_text())


#: the folders of an asv configuration (relative to the folder of the configuration file)
FOLDERS = ("repo", "benchmark_dir", "results_dir", "html_dir", "env_dir")


def write_config(root: Path, path: Path, results_dir: Path, benchmark_dir: Path | None = None,
                 html_dir: Path | None = None) -> Path:
    """The checkout's asv configuration with another results folder (and benchmark
    folder, HTML folder), written to ``path``, every folder absolute (asv works in the
    folder of its configuration); asv takes it with ``--config``."""
    conf = asv_config(root)
    conf.update({"results_dir": results_dir, "benchmark_dir": benchmark_dir or conf.get("benchmark_dir"),
                 "html_dir": html_dir or conf.get("html_dir")})
    for key in FOLDERS:
        if conf.get(key) is not None:
            conf[key] = str(root / conf[key])  # an absolute path stays as it is
    path.write_text(json.dumps(conf, indent=4))
    return path


def subset_suite(root: Path, folder: Path, modules: tuple[str, ...]) -> Path:
    """A benchmark package in ``folder`` holding the suite's ``__init__.py`` and only
    ``modules`` (links to the checkout's files, so asv names and versions their
    benchmarks as in the whole suite): asv imports every module of a suite, and the rest
    of it needs the checkout's own fastfp."""
    source = root / asv_config(root).get("benchmark_dir", "benchmarks")
    suite = folder / source.name
    suite.mkdir(parents=True)
    for name in ("__init__", *modules):
        (suite / f"{name}.py").symlink_to(source / f"{name}.py")
    return suite


def ensure_machine(env: dict, say) -> str:
    """This machine's asv name (from ``~/.asv-machine.json``, ``~`` being ``env``'s
    ``HOME``); ``asv machine --yes`` first if asv does not know it."""
    path = Path(env.get("HOME") or Path.home()) / ".asv-machine.json"
    name = socket.gethostname()
    known = json.loads(path.read_text()) if path.is_file() else {}
    if name not in known:
        say("asv does not know this machine yet: asv machine --yes")
        subprocess.run(command("machine", "--yes"), env=env, check=True, stdout=subprocess.DEVNULL)
        known = json.loads(path.read_text())
    entry = known.get(name) or next((v for v in known.values() if isinstance(v, dict)), {})
    return entry.get("machine", name)


def run(root: Path, config: Path, sha: str, env: dict, log: Path, say, bench=(), extra=()) -> int:
    """``asv run`` of commit ``sha`` in this environment (benchmarks matching any regex
    of ``bench``; all if none), samples recorded, each benchmark in a fork of one
    process that imported the suite (``--launch-method forkserver``, ~2 s saved per
    benchmark). asv's output is appended to ``log``; ``say`` gets one line per
    benchmark. Returns asv's exit code. Ctrl-C or an error stops asv and everything it
    started (its own process group) before it propagates."""
    cmd = command("run", "--config", str(config), "--python=same", "--set-commit-hash", sha,
                  "--launch-method", "forkserver", "--show-stderr", "--record-samples",
                  *(f"--bench={regex}" for regex in bench), *extra)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("+ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=root, env={**env, "PYTHONUNBUFFERED": "1", "COLUMNS": COLUMNS},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                start_new_session=True)
        try:
            for line in proc.stdout:
                fh.write(line)
                match = PROGRESS.match(line) if say else None
                if match:
                    percent, name, status = match.groups()
                    say(f"[{int(percent):3d}%] {name} {_status(status)}")
            return proc.wait()
        except BaseException:
            _stop(proc)
            raise


def _status(text: str) -> str:
    """asv's result column, shorter: "skipped" for n/a, a tracked number to 3 digits."""
    if text == "n/a":
        return "skipped"
    try:
        return f"{float(text):.3g}"
    except ValueError:
        return text


def _stop(proc: subprocess.Popen) -> None:
    """End ``proc``'s process group if anything of it still runs (asv, its forkserver,
    benchmark processes): SIGTERM, then SIGKILL after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def publish(root: Path, config: Path, env: dict, log: Path) -> str | None:
    """``asv publish`` (output appended to ``log``); None, or why it failed."""
    with open(log, "a", encoding="utf-8") as fh:
        proc = subprocess.run(command("publish", "--config", str(config)), cwd=root, env=env, stdout=fh,
                              stderr=subprocess.STDOUT)
    return None if proc.returncode == 0 else f"asv publish exited with {proc.returncode} (see {log})"


@contextlib.contextmanager
def removed_on_early_stop(paths, log: Path):
    """Of ``paths``, those that do not exist yet (or their outermost missing parent:
    what creating them creates) are removed if the block is interrupted (Ctrl-C,
    SIGTERM) or raises before asv has written to ``log``; an error after that keeps
    them, with the log that explains it."""
    created = []
    for path in map(Path, paths):
        path = path.absolute()
        if not path.exists():
            while not path.parent.exists():
                path = path.parent
            created.append(path)
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) or not (log.is_file() and log.stat().st_size):
            for path in created:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.is_file() or path.is_symlink():
                    path.unlink()
        raise
