"""The ``amptorch-patched`` backend: AMPTorch with fastfp's patch series, in a worker process.

AMPTorch with ``patches/`` applied calls fastfp's backend hooks itself
(``config["dataset"]["fp_backend"] = "fastfp"``, no :func:`fastfp.amptorch.install`).
The harness builds that AMPTorch from the checkout ``$FASTFP_AMPTORCH_SRC`` (at
:data:`BASE`): :func:`checkout` clones it into the cache (``$FASTFP_CACHE`` or
``~/.cache/fastfp``, one folder per version of the series), applies the series with
``git am`` and builds the C++ extensions in place; the given checkout is never written.

One process imports one ``amptorch``. Where the imported one has the series
(:func:`~fastfp.harness.backends.patched_imported`), the stages run in this process; elsewhere (beside the unpatched
AMPTorch the ``amptorch`` backend uses, which the benchmarks' forkserver may have
imported already) :func:`remote` runs them in a worker process that has the patched
checkout first on its path: the stage is built there (untimed) and each call of the
returned callable runs it there once, so the caller times the work plus a message each
way (well under a millisecond).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

from .backends import BASE, SRC_ENV, StageUnavailable, patches, why_patched_unavailable

#: fastfp's entry point in AMPTorch's fingerprint-backend group (pyproject.toml)
ENTRY_POINT = ("amptorch.fp_backends", "fastfp", "fastfp.amptorch.backend")


def _git(*args, cwd=None) -> None:
    subprocess.run(["git", "-c", "user.name=fastfp harness", "-c", "user.email=fastfp@localhost", *args],
                   cwd=cwd, check=True, capture_output=True, text=True)


def checkout(cache_dir=None) -> Path:
    """The patched, built AMPTorch checkout in the cache, made on first use (about a minute:
    clone, ``git am``, ``setup.py build_ext --inplace``); a folder per version of the
    series. Built in a temporary folder beside it and renamed into place, so an
    interrupted build leaves nothing that looks complete. Raises
    :class:`~fastfp.harness.backends.StageUnavailable` with the reason when it cannot."""
    reason = why_patched_unavailable()
    if reason:
        raise StageUnavailable(reason)
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in patches())).hexdigest()[:12]
    root = Path(cache_dir or os.environ.get("FASTFP_CACHE") or Path.home() / ".cache" / "fastfp")
    target = root / "amptorch-patched" / digest
    if (target / "amptorch").is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=target.parent))
    try:
        repo = work / "amptorch"
        _git("clone", "-q", "--no-checkout", os.environ[SRC_ENV], str(repo))
        _git("checkout", "-q", "--detach", BASE, cwd=repo)
        _git("am", "-q", *map(str, patches()), cwd=repo)
        build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=repo,
                               capture_output=True, text=True)
        if build.returncode:
            raise StageUnavailable(f"building the patched AMPTorch failed: {build.stderr[-2000:]}")
        entry_points_dir(work / "entry-points")
        try:
            os.rename(work, target)
        except OSError:  # another process built it meanwhile
            pass
    except subprocess.CalledProcessError as exc:
        raise StageUnavailable(f"patching AMPTorch from {os.environ[SRC_ENV]} failed: {exc.stderr.strip()}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def entry_points_dir(directory: Path) -> Path:
    """A folder (for ``sys.path``) with a distribution declaring :data:`ENTRY_POINT`: the
    fastfp a worker imports is the one on this process's path, whose installed metadata
    may be an editable install of another checkout made before the entry point existed."""
    group, name, value = ENTRY_POINT
    info = directory / "fastfp_entry_points-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fastfp-entry-points\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {value}\n")
    return directory


def worker_env(target: Path) -> dict:
    """The environment of a worker: the patched checkout and the entry points first on
    ``PYTHONPATH``, then this process's path (so it imports this fastfp)."""
    env = dict(os.environ)
    paths = [str(target / "amptorch"), str(target / "entry-points"), *[p for p in sys.path if p]]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


class _Worker:
    """A worker process (:mod:`fastfp.harness.worker`) and its pipes: pickled requests
    in, pickled replies out."""

    def __init__(self, target: Path):
        self.process = subprocess.Popen([sys.executable, "-m", "fastfp.harness.worker"],
                                        env=worker_env(target), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._finalizer = weakref.finalize(self, _stop, self.process)

    def ask(self, message):
        pickle.dump(message, self.process.stdin)
        self.process.stdin.flush()
        try:
            kind, value = pickle.load(self.process.stdout)
        except EOFError:
            raise RuntimeError(f"the amptorch-patched worker exited ({self.process.wait()})") from None
        if kind == "unavailable":
            raise StageUnavailable(value)
        if kind == "error":
            raise RuntimeError(f"in the amptorch-patched worker: {value}")
        return value


def _stop(process) -> None:
    if process.poll() is None:
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def remote(stage: str, frames: list, options: dict):
    """A callable running ``stage`` for ``amptorch-patched`` on ``frames`` in a worker
    process (built there now); calling it runs the stage once there and returns its
    result if that is a number, or with ``options["collect"]`` (pickled over the pipe
    inside the call: for comparisons, not timings), else None (the result is dropped in
    the worker before it answers, as a timed in-process call drops it). Raises
    :class:`~fastfp.harness.backends.StageUnavailable` with the reason."""
    worker = _Worker(checkout())
    worker.ask(("build", stage, frames, options))
    collect = bool(options.get("collect"))

    def run():
        return worker.ask(("run", collect))

    run.worker = worker  # lives as long as the callable
    return run
