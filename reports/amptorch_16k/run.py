"""AMPTorch's own end-to-end preprocessing (``AtomsDataset`` with derivatives, i.e.
forcetraining) on the default 16,000-frame ``water-metal`` workload, run for real under
a hard address-space cap, with its progress bars and memory logged over time (issue 4).

Run from the repository root (the command used for result.md)::

    nice -n 10 /work/amptorch-env/bin/python reports/amptorch_16k/run.py \
        --frames 16000 --budget-gib 16 --wall-min 100 --log-dir /tmp/amptorch_16k

What it does
------------
This file is both the monitor (parent) and the worker (``--child``).

The worker imports torch, AMPTorch and fastfp's harness, loads the frames with
``fastfp.harness.stages.load_bench_frames`` (the cached workload), computes the
harness's own memory estimate (``stages.estimate_bytes("preprocess", ...)``), then reads
its virtual size (VmSize) and sets ``RLIMIT_AS = VmSize + budget`` (RLIMIT_AS counts
address space, and torch/numba/AMPTorch already map about 1 GiB at import, so the cap is
the address space mapped after setup plus the resident budget). Then it calls
``stages.build("preprocess", "amptorch", frames)`` (``FASTFP_BENCH_MEMORY_GB`` set very
high so the harness's memory check lets the real attempt through) and the returned
callable, which is ``AtomsDataset(frames, gmpordernorm setup, forcetraining=True,
save_fps=False, scaling=normalize)`` with ``fastfp.amptorch.install()`` not in effect.
Any exception (MemoryError, RuntimeError from torch's allocator, ...) is printed with
its traceback; a crash in C code shows as the exit signal (faulthandler is on).

The monitor starts the worker, timestamps every progress line it writes (tqdm's ``\\r``
updates included) into ``progress_raw.txt`` (full) and ``progress.txt`` (trimmed: each
bar's first and last line, one line per 30 s, every non-bar line), samples the worker's
VmRSS / VmHWM / VmSize and the machine's MemAvailable every 10 s into ``rss.tsv``, and
writes ``result.json``. Safety nets: it kills the worker if MemAvailable falls below
``--min-avail-gib`` (other people's processes share the machine) or after ``--wall-min``.

fastfp is taken from a snapshot of ``git HEAD`` (``git archive HEAD src``) unless
``--fastfp-src`` names a folder: other people edit the working tree while this runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GiB = 2**30


def now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def proc_status(pid="self") -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                out[key] = val.strip()
    except OSError:
        pass
    return out


def kib(status: dict, key: str) -> int:
    v = status.get(key, "0 kB").split()
    return int(v[0]) if v else 0


def mem_available_kib() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


# -- worker -------------------------------------------------------------------------


def child(args) -> int:
    import faulthandler
    import resource
    import traceback

    faulthandler.enable()

    def mark(**kw):
        kw["t"] = now()
        st = proc_status()
        kw.update(VmSize_MiB=kib(st, "VmSize") // 1024, VmRSS_MiB=kib(st, "VmRSS") // 1024)
        print("@@ " + json.dumps(kw), flush=True)

    t0 = time.perf_counter()
    import numpy as np
    import torch

    import amptorch
    import amptorch.dataset  # noqa: F401  (the code under test)
    import fastfp
    from fastfp.harness import stages

    mark(event="imported", seconds=round(time.perf_counter() - t0, 1), python=sys.version.split()[0],
         torch=torch.__version__, numpy=np.__version__, amptorch=amptorch.__file__, fastfp=fastfp.__file__,
         torch_threads=torch.get_num_threads())
    t = time.perf_counter()
    frames = stages.load_bench_frames(args.frames)
    info = stages.describe_data(frames=frames, limit=None)
    mark(event="frames loaded", seconds=round(time.perf_counter() - t, 1), source=stages.data_source(),
         n_frames=info["n_frames"], atoms=int(sum(len(a) for a in frames)), elements=info["elements"],
         labels=info["labels"], atoms_per_frame=round(info["atoms_per_frame"], 2))
    t = time.perf_counter()
    est = stages.estimate_bytes("preprocess", frames)
    mark(event="harness estimate", seconds=round(time.perf_counter() - t, 1), estimate_GiB=round(est / GiB, 1),
         sizes_per_atom={k: round(v, 1) for k, v in next(iter(stages._SIZES.values())).items()},
         FASTFP_BENCH_MEMORY_GB=os.environ.get(stages.ENV_MEMORY))

    vm = kib(proc_status(), "VmSize") * 1024
    cap = vm + int(args.budget_gib * GiB)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    mark(event="cap set", VmSize_before_cap_GiB=round(vm / GiB, 3), budget_GiB=args.budget_gib,
         RLIMIT_AS_bytes=cap, RLIMIT_AS_GiB=round(cap / GiB, 3))

    try:
        t = time.perf_counter()
        run = stages.build("preprocess", "amptorch", frames)
        mark(event="built", seconds=round(time.perf_counter() - t, 1), run=repr(run))
        t = time.perf_counter()
        data = run()
        seconds = time.perf_counter() - t
        nnz = sum(int(d.fprimes._nnz()) for d in data)
        mark(event="completed", seconds=round(seconds, 1), n_data=len(data), fprimes_nnz=nnz,
             frames_per_s=round(len(data) / seconds, 2))
        return 0
    except BaseException as exc:  # MemoryError, RuntimeError, KeyboardInterrupt ...
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        sys.stderr.flush()
        try:
            mark(event="failed", seconds=round(time.perf_counter() - t, 1), exc_type=type(exc).__name__,
                 exc_msg=str(exc)[:2000])
        except BaseException:
            print("@@ failed " + type(exc).__name__, flush=True)
        return 3


# -- monitor ------------------------------------------------------------------------

BAR = re.compile(r"^(?P<desc>[^:|]*?):\s+\d+%\|")


def monitor(args) -> int:
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("FASTFP_BENCH_MEMORY_GB", "100000")  # let stages.build's memory check pass
    if "FASTFP_SHARED" not in env and (REPO.parent / "shared").is_dir():
        env["FASTFP_SHARED"] = str(REPO.parent / "shared")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    if args.fastfp_src:
        src = Path(args.fastfp_src).resolve()
    else:  # a snapshot of HEAD, immune to edits of the working tree during the run
        snap = log_dir / "fastfp-head"
        subprocess.run(["rm", "-rf", str(snap)], check=True)
        snap.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD", "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(snap)], input=archive.stdout, check=True)
        src = snap / "src"
    env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"

    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--frames", str(args.frames),
           "--budget-gib", str(args.budget_gib)]
    meta = {"start": now(), "cmd": cmd, "fastfp_commit": commit, "fastfp_src": str(src),
            "cwd": os.getcwd(), "nice": os.nice(0), "args": vars(args),
            "env": {k: env[k] for k in ("FASTFP_BENCH_MEMORY_GB", "FASTFP_SHARED", "PYTHONPATH") if k in env}}
    (log_dir / "result.json").write_text(json.dumps(meta, indent=1))

    raw = open(log_dir / "progress_raw.txt", "w")
    trimmed = open(log_dir / "progress.txt", "w")
    rss = open(log_dir / "rss.tsv", "w")
    rss.write("time\telapsed_s\tVmRSS_MiB\tVmHWM_MiB\tVmSize_MiB\tMemAvailable_MiB\tstate\n")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    last_kept = {"desc": None, "t": -1e9, "line": None}
    markers, killed, peak = [], None, {"VmHWM_MiB": 0, "VmRSS_MiB": 0, "min_MemAvailable_MiB": 10**9}
    next_sample = 0.0

    def handle(line: str):
        el = time.monotonic() - t0
        stamp = f"{now()} +{el:8.1f}s "
        raw.write(stamp + line + "\n")
        m = BAR.match(line.strip())
        if line.startswith("@@ "):
            try:
                markers.append(json.loads(line[3:]))
            except ValueError:
                markers.append({"raw": line})
        if m:
            desc = m.group("desc")
            if desc != last_kept["desc"]:
                if last_kept["line"] is not None and last_kept["line"][1] != "kept":
                    trimmed.write(last_kept["line"][0])
                trimmed.write(stamp + line.strip() + "\n")
                last_kept.update(desc=desc, t=el, line=(stamp + line.strip() + "\n", "kept"))
            elif el - last_kept["t"] >= args.keep_every:
                trimmed.write(stamp + line.strip() + "\n")
                last_kept.update(t=el, line=(stamp + line.strip() + "\n", "kept"))
            else:
                last_kept["line"] = (stamp + line.strip() + "\n", "pending")
        elif line.strip():
            if last_kept["line"] is not None and last_kept["line"][1] != "kept":
                trimmed.write(last_kept["line"][0])
                last_kept["line"] = (last_kept["line"][0], "kept")
            trimmed.write(stamp + line.rstrip() + "\n")
        raw.flush()
        trimmed.flush()

    while True:
        try:
            chunk = proc.stdout.read(65536)
        except BlockingIOError:
            chunk = None
        if chunk:
            buf += chunk
            parts = re.split(rb"[\r\n]", buf)
            buf = parts.pop()
            for p in parts:
                if p:
                    handle(p.decode("utf-8", "replace"))
        el = time.monotonic() - t0
        done = proc.poll() is not None
        if el >= next_sample or done:
            next_sample = el + args.sample_s
            st = proc_status(proc.pid)
            avail = mem_available_kib() // 1024
            row = (kib(st, "VmRSS") // 1024, kib(st, "VmHWM") // 1024, kib(st, "VmSize") // 1024)
            if st:
                rss.write(f"{now()}\t{el:.0f}\t{row[0]}\t{row[1]}\t{row[2]}\t{avail}\t{st.get('State', '?')[:1]}\n")
                rss.flush()
                peak["VmHWM_MiB"] = max(peak["VmHWM_MiB"], row[1])
                peak["VmRSS_MiB"] = max(peak["VmRSS_MiB"], row[0])
            peak["min_MemAvailable_MiB"] = min(peak["min_MemAvailable_MiB"], avail)
            if not done and killed is None:
                if avail < args.min_avail_gib * 1024:
                    killed = f"MemAvailable {avail} MiB < {args.min_avail_gib} GiB: worker killed to protect the machine"
                elif el > args.wall_min * 60:
                    killed = f"wall limit {args.wall_min} min reached: worker killed"
                if killed:
                    handle("@@ " + json.dumps({"event": "monitor kill", "why": killed, "t": now()}))
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
        if done:
            rest = proc.stdout.read() or b""
            for p in re.split(rb"[\r\n]", buf + rest):
                if p:
                    handle(p.decode("utf-8", "replace"))
            break
        time.sleep(0.5)

    if last_kept["line"] is not None and last_kept["line"][1] != "kept":
        trimmed.write(last_kept["line"][0])
    rc = proc.returncode
    meta.update(end=now(), wall_s=round(time.monotonic() - t0, 1), returncode=rc,
                signal=signal.Signals(-rc).name if rc is not None and rc < 0 else None,
                monitor_kill=killed, peak=peak, markers=markers)
    (log_dir / "result.json").write_text(json.dumps(meta, indent=1))
    for fh in (raw, trimmed, rss):
        fh.close()
    print(json.dumps({k: meta[k] for k in ("start", "end", "wall_s", "returncode", "signal", "monitor_kill", "peak")}))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=16000)
    ap.add_argument("--budget-gib", type=float, default=16.0,
                    help="resident budget: RLIMIT_AS = VmSize after setup + this")
    ap.add_argument("--wall-min", type=float, default=100.0, help="kill the worker after this many minutes")
    ap.add_argument("--min-avail-gib", type=float, default=1.5,
                    help="kill the worker if the machine's MemAvailable drops below this")
    ap.add_argument("--sample-s", type=float, default=10.0, help="seconds between memory samples")
    ap.add_argument("--keep-every", type=float, default=30.0, help="seconds between kept progress lines")
    ap.add_argument("--log-dir", default="/tmp/amptorch_16k")
    ap.add_argument("--fastfp-src", default=None, help="fastfp source folder (default: snapshot of git HEAD)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    return child(args) if args.child else monitor(args)


if __name__ == "__main__":
    sys.exit(main())
