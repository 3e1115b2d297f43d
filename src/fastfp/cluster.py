"""Where shard tasks run: in this process, or on a Dask cluster (dask.distributed).

``cluster`` (the CLI's ``--cluster``) is one of:

- ``None``: in this process, one shard after another, the kernels threaded
  (:mod:`fastfp.threads`);
- ``"local:N"``: a ``distributed.LocalCluster`` of N worker processes on this machine,
  one task at a time each, the CPUs shared between them (``FASTFP_NUM_THREADS``);
- ``"tcp://HOST:PORT"`` (or ``tls://``): the workers of an existing Dask scheduler (they
  must import the same fastfp and read the same paths);
- ``"slurm"`` or ``"slurm:JOBS"``: dask-jobqueue's ``SLURMCluster`` with ``JOBS`` batch
  jobs (default 1), configured by Dask's own configuration, key ``jobqueue.slurm``
  (e.g. ``~/.config/dask/jobqueue.yaml``: cores, memory, processes, queue, account,
  walltime, job-extra-directives; see dask-jobqueue's documentation); each worker
  thread runs one shard with single-threaded kernels;
- a ``distributed.Client``, used as it is (not closed).

Tasks are plain functions of small arguments (a :class:`~fastfp.framefile.FrameFile`,
the config, shard bounds): each worker reads its own frames and writes its own shard,
and only a small summary travels back. A worker lost mid-task (killed, out of memory)
has its task rerun elsewhere by the scheduler. :func:`run_tasks` cancels what is left
and closes the cluster it started (its worker processes end) when it is interrupted or
a task fails. Workers of a ``LocalCluster`` ignore SIGINT (this module is their preload,
:func:`dask_setup`), so Ctrl-C in a terminal reaches only the process that owns them,
which shuts them down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import threading
import time

#: set to make :func:`run_tasks` raise ``KeyboardInterrupt`` at its next check (before each
#: task in this process, every 50 ms while waiting for a cluster): the command line's
#: signal handlers set it, so that an interruption that Python swallowed (raised inside a
#: finalizer, say) still stops the run
STOP = threading.Event()
_LOCAL = re.compile(r"local:(\d+)$")
_SLURM = re.compile(r"slurm(?::(\d+))?$")
_ADDRESS = re.compile(r"(tcp|tls)://[^\s:/]+:\d+$")


def check_cluster(text: str) -> str:
    """``text`` if it names a cluster (see the module docstring), else ``ValueError``."""
    m = _LOCAL.match(text) or _SLURM.match(text)
    if (m and (m.group(1) is None or int(m.group(1)) >= 1)) or _ADDRESS.match(text):
        return text
    raise ValueError(f"cluster {text!r}: expected local:N, tcp://HOST:PORT, slurm or slurm:JOBS (N, JOBS >= 1)")


def dask_setup(worker) -> None:
    """Preload of the ``LocalCluster`` workers: ignore SIGINT (the owning process closes
    them), and do not log the tasks :func:`run_tasks` cancels (an interrupted run would
    print a ``CancelledError`` warning for each running task)."""
    import logging
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)


#: the scheduler of a cluster started here has no dashboard (its other HTTP routes on a
#: free port, not on 8787, which a second cluster would find taken and warn about)
NO_DASHBOARD = {"dashboard": False, "dashboard_address": ":0"}


def slurm_cluster():
    """dask-jobqueue's ``SLURMCluster``, configured by ``jobqueue.slurm`` in Dask's config,
    with ``export FASTFP_NUM_THREADS=1`` added to the job script's prologue and the
    scheduler's dashboard off unless ``jobqueue.slurm.scheduler-options`` asks for it.
    Raises ``ValueError`` (dask-jobqueue's) if the config lacks cores or memory."""
    import dask
    from dask_jobqueue import SLURMCluster

    prologue = list(dask.config.get("jobqueue.slurm.job-script-prologue", None) or [])
    options = dict(dask.config.get("jobqueue.slurm.scheduler-options", None) or {})
    return SLURMCluster(job_script_prologue=prologue + ["export FASTFP_NUM_THREADS=1"],
                        scheduler_options={**NO_DASHBOARD, **options})


@contextlib.contextmanager
def connect(cluster):
    """A ``distributed.Client`` for ``cluster`` (None gives None); a cluster started here is
    closed on exit, its worker processes with it."""
    if cluster is None:
        yield None
        return
    try:
        from distributed import Client
    except ImportError as exc:
        raise ValueError(f"a cluster needs dask.distributed (the 'cluster' extra: pip install fastfp[cluster]): {exc}") from None

    if isinstance(cluster, Client):
        yield cluster
        return
    check_cluster(cluster)
    # after an exception (an interruption, a failed task), closing a local cluster stops
    # workers in the middle of a task: their nannies (in this process) kill them after a
    # few seconds and log a warning each; the run has said why it stopped, so they are quiet
    nanny = logging.getLogger("distributed.nanny")
    level = nanny.level
    with contextlib.ExitStack() as stack:
        stack.callback(nanny.setLevel, level)  # the last thing done on the way out
        if cluster.startswith("local:"):
            from distributed import LocalCluster

            n = int(cluster.split(":")[1])
            threads = max(1, len(os.sched_getaffinity(0)) // n)
            started = stack.enter_context(LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                scheduler_kwargs=NO_DASHBOARD, preload=[__name__], env={"FASTFP_NUM_THREADS": str(threads)}))
            address = started
        elif cluster.startswith("slurm"):
            jobs = int(cluster.split(":")[1]) if ":" in cluster else 1
            started = stack.enter_context(slurm_cluster())
            started.scale(jobs=jobs)
            address = started
        else:
            address = cluster
        try:
            client = stack.enter_context(Client(address, timeout="30s"))
        except OSError as exc:
            raise OSError(f"cannot connect to the Dask scheduler at {cluster}: {exc}") from None
        try:
            yield client
        except BaseException:
            nanny.setLevel(logging.ERROR)
            raise


def run_tasks(func, tasks: list, *, client=None, name: str = "fastfp"):
    """Run ``func(*args)`` for each ``args`` in ``tasks``, in this process (``client``
    None) or as one Dask task each; yields ``(index in tasks, result)`` as tasks finish.

    A task's exception is raised here after the other tasks are cancelled; so is an
    interruption (``KeyboardInterrupt``, or :data:`STOP` set). Results must be small (they travel through the
    scheduler)."""
    def check():
        if STOP.is_set():
            raise KeyboardInterrupt

    if client is None:
        for i, args in enumerate(tasks):
            check()
            yield i, func(*args)
        return
    from distributed import as_completed

    token = secrets.token_hex(4)
    futures = [client.submit(func, *args, key=f"{name}-{token}-{i}", pure=False) for i, args in enumerate(tasks)]
    index = {f.key: i for i, f in enumerate(futures)}
    done = as_completed(futures)
    try:
        while done.count():
            batch = done.next_batch(block=False)
            if not batch:
                check()
                time.sleep(0.05)
            for future in batch:
                yield index[future.key], future.result()
    finally:
        client.cancel([f for f in futures if not f.done()], force=True)
