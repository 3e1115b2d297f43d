"""``fastfp bench``: run the asv suite in this environment, then summarise it.

Steps: check the inputs (git checkout with a commit, ``--data`` frames, pseudodensities),
``asv machine --yes`` if this machine is unknown to asv, ``asv run --python=same
--set-commit-hash HEAD`` (asv saves no results from an existing environment without
it) with ``--bench`` filters for the chosen backends, ``asv publish``, then read asv's
results JSON and write a table (``summary.md``: stage × backend, median time, peak
memory, speed-up over AMPTorch) and a plot (``time_vs_frames.png``) to ``--out``.

The benchmarks get their settings through environment variables (see
``benchmarks/common.py``): ``FASTFP_BENCH_DATA``, ``FASTFP_BENCH_FRAMES``,
``FASTFP_BENCH_MAX_FRAMES`` (100 with ``--quick``), ``FASTFP_BENCH_MAX_ATOMS``.
"""

from __future__ import annotations

import ast
import datetime
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import stages

#: ``--quick``: frames and supercell atoms benchmarked at most
QUICK_FRAMES = 100
QUICK_ATOMS = 2000
QUICK_AMPTORCH_ATOMS = 500
DEFAULT_FRAMES = (100, 1000, 16000)


class BenchError(ValueError):
    """Bad input to ``fastfp bench`` (the command line prints it and exits with 2)."""


def _say(*parts) -> None:
    print("fastfp bench:", *parts, file=sys.stderr, flush=True)


# -- checks ----------------------------------------------------------------------------


def find_checkout(start: Path | None = None) -> Path:
    """Root of the fastfp git checkout holding ``asv.conf.json`` and ``benchmarks/``:
    the working directory's repository, else the one this fastfp was installed from."""
    candidates = []
    start = Path(start or os.getcwd())
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True,
                             text=True, check=True).stdout.strip()
        candidates.append(Path(top))
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates.append(Path(__file__).resolve().parents[3])  # src/fastfp/harness/bench.py
    for root in candidates:
        if (root / "asv.conf.json").is_file() and (root / "benchmarks").is_dir():
            if not (root / ".git").exists():
                raise BenchError(f"{root} is not a git checkout: asv records results per commit; "
                                 "run fastfp bench from a git clone of fastfp")
            return root
    raise BenchError("fastfp bench runs from a git checkout of fastfp (asv.conf.json and benchmarks/ "
                     f"at its root); none found from {start}")


def head_commit(root: Path) -> str:
    """``git rev-parse HEAD``, or :class:`BenchError` when there is no commit."""
    proc = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"{root} has no commit yet: asv records results per commit; commit first "
                         f"({proc.stderr.strip() or 'git rev-parse HEAD failed'})")
    return proc.stdout.strip()


def check_data_path(source: str) -> None:
    """``--data`` exists (or names a workload) and, if a file, ASE reads its first frame."""
    path = Path(source)
    if not path.exists() and not stages._is_workload(source):
        raise BenchError(f"--data {source!r}: no such file or directory (nor a workload name: "
                         f"{', '.join(_workload_names())})")
    if path.is_file():
        try:
            import ase.io

            first = ase.io.read(path, index=0)
        except Exception as exc:  # ASE raises many kinds for unreadable files
            raise BenchError(f"--data {source!r} is not readable by ASE: {type(exc).__name__}: {exc}") from None
        if len(first) == 0:
            raise BenchError(f"--data {source!r}: its first frame has no atoms")


def _workload_names() -> list[str]:
    from fastfp.harness.workloads import list_workloads

    return sorted(list_workloads())


def check_data(source: str | None, limit: int | None = None) -> dict:
    """Validate ``--data`` (or the default workload, generated here with a progress bar
    if not cached) and the pseudodensities; returns
    :func:`~fastfp.harness.stages.describe_data`'s dict for the first ``limit`` frames
    (all if None)."""
    if source is not None:
        check_data_path(source)
        path = Path(source)
        source = str(path.resolve()) if path.exists() else source
    try:
        frames = None
        name = (source or stages.data_source()).partition(":")[0]
        if not Path(source or stages.data_source()).exists() and name == stages.DEFAULT_WORKLOAD:
            from fastfp.harness.workloads import load_workload

            _say(f"loading the {name} workload (generated and cached on first use)")
            frames = load_workload(name, n_frames=limit or stages.WORKLOAD_FRAMES, progress=True)
        info = stages.describe_data(source, limit=limit, frames=frames)
    except stages.StageUnavailable as exc:
        raise BenchError(f"--data {source!r}: {exc}") from None
    except (ValueError, OSError) as exc:
        raise BenchError(f"cannot read the benchmark frames {source or stages.data_source()!r}: {exc}") from None
    except Exception as exc:
        raise BenchError(f"cannot read the benchmark frames {source or stages.data_source()!r}: "
                         f"{type(exc).__name__}: {exc}") from None
    try:
        for descriptor in stages.DESCRIPTORS:
            stages.descriptor_setup(descriptor, info["elements"])
    except FileNotFoundError as exc:
        raise BenchError(str(exc)) from None
    return info


def _parse_names(text: str, known, option: str, what: str) -> list[str]:
    """Comma-separated names from ``known``, in order, without repeats; ``BenchError``
    naming ``option`` for an unknown name or an empty list."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise BenchError(f"{option} {text!r}: unknown {what}(s) {unknown}; choose from {','.join(known)}")
    return list(dict.fromkeys(names))


def parse_backends(text: str) -> list[str]:
    """``--backend``: names of :data:`stages.BACKENDS`."""
    return _parse_names(text, stages.BACKENDS, "--backend", "backend")


#: ``--quick``: the benchmarks run (asv ``--bench`` regexes; ``{B}`` is the backend
#: parameter). Left out: the gmp and gaussian descriptors, standalone scaling (it is
#: inside end-to-end preprocessing), peak memory of preprocessing and the in-process
#: ratios (the speed-up column is computed from the times instead): AMPTorch alone
#: would need about 25 minutes for the whole suite at 100 frames.
QUICK_BENCHMARKS = [
    r"^featurize\.Featurize\.time_featurize\({B}, 'gmpordernorm'",
    r"^featurize\.FeaturizeAtoms\.time_featurize_atoms\({B}, 'gmpordernorm'",
    r"^pipeline\.(StoreWrite|StoreRead|Collate|ForceContraction|TrainEpoch|Preprocess)\.time_\w+\({B},",
    r"^memory\.FeaturizeMemory\.peakmem_\w+\({B},",
]


#: stage titles in ``--quick`` besides GMPOrderNorm featurization
QUICK_STAGES = [stages.STAGES[k].title for k in ("store_write", "store_read", "collate", "force_contraction",
                                                  "train_epoch", "preprocess")]


def parse_descriptors(text: str | None) -> list[str] | None:
    """``--descriptors``: names of :data:`stages.DESCRIPTORS`, or None (all)."""
    return None if text is None else _parse_names(text, stages.DESCRIPTORS, "--descriptors", "descriptor")


def bench_filters(backends: list[str], quick: bool = False, descriptors: list[str] | None = None) -> list[str]:
    """asv ``--bench`` regexes selecting the benchmarks of ``backends`` (and the
    ``--quick`` subset), featurization only for ``descriptors`` (None: all); an empty
    list selects everything.

    asv matches them against ``name(param, ...)``; the backend is the first parameter
    of every benchmark but the ratios, which need both AMPTorch and fastfp; the
    descriptor is the second parameter of the featurization benchmarks."""
    every = set(backends) >= set(stages.BACKENDS)
    which = "'(?:" + "|".join(backends) + ")'"
    if quick:
        return [r.replace("{B}", which) for r in QUICK_BENCHMARKS]
    if descriptors is None or set(descriptors) >= set(stages.DESCRIPTORS):
        if every:
            return []
        regexes = [r"\(" + which]
    else:
        chosen = "'(?:" + "|".join(descriptors) + ")'"
        regexes = [r"^featurize\.\w+\.\w+\(" + which + ", " + chosen,
                   r"^(?!featurize\.|ratios\.)[\w.]+\(" + which]
    if {"amptorch", "fastfp"} <= set(backends):
        regexes.append(r"^ratios\.")
    return regexes


# -- running asv -----------------------------------------------------------------------


def _asv(*args) -> list[str]:
    return [sys.executable, "-m", "asv", *args]


def ensure_machine(root: Path, env: dict) -> str:
    """This machine's asv name; ``asv machine --yes`` first if asv does not know it."""
    from asv.machine import MachineCollection

    name = socket.gethostname()
    try:
        MachineCollection.load(name)
    except Exception:
        _say("asv does not know this machine yet: asv machine --yes")
        subprocess.run(_asv("machine", "--yes"), cwd=root, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        MachineCollection.load(name)
    path = Path(MachineCollection.get_machine_file_path())
    data = json.loads(path.read_text())
    entry = data.get(name) or next((v for k, v in data.items() if isinstance(v, dict)), {})
    return entry.get("machine", name)


def bench_env(data: str | None, quick: bool, frames) -> dict:
    """Environment of the asv run: the benchmark settings, and ``ASV_PYTHONPATH`` so that
    benchmark processes import this fastfp even when it is not installed."""
    env = dict(os.environ)
    import fastfp

    pkg_parent = str(Path(fastfp.__file__).resolve().parent.parent)
    paths = [pkg_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["ASV_PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["TQDM_DISABLE"] = "1"
    env["FASTFP_BENCH_PREIMPORT"] = "1"  # with --launch-method forkserver (benchmarks/common.py)
    for key in ("FASTFP_BENCH_DATA", "FASTFP_BENCH_MAX_FRAMES", "FASTFP_BENCH_MAX_ATOMS", "FASTFP_BENCH_FRAMES"):
        env.pop(key, None)
    if data:
        env["FASTFP_BENCH_DATA"] = data
    if frames:
        env["FASTFP_BENCH_FRAMES"] = " ".join(str(n) for n in frames)
    if quick:
        if not frames:  # the 100-frame subset (an explicit --frames wins); the larger
            # frame counts are left out of the parameters, saving a process start each
            env["FASTFP_BENCH_MAX_FRAMES"] = str(QUICK_FRAMES)
            env["FASTFP_BENCH_FRAMES"] = str(QUICK_FRAMES)
        env["FASTFP_BENCH_MAX_ATOMS"] = str(QUICK_ATOMS)
        env["FASTFP_BENCH_AMPTORCH_MAX_ATOMS"] = str(QUICK_AMPTORCH_ATOMS)
    return env


def run_asv(root: Path, sha: str, env: dict, filters: list[str], quick: bool) -> int:
    # forkserver: the suite (fastfp, numba, h5py) is imported once, each benchmark runs
    # in a fork of that process instead of a fresh interpreter (~2 s saved per benchmark
    # and parameter set); nothing imported at module level starts threads or a GPU context
    cmd = _asv("run", "--python=same", "--set-commit-hash", sha, "--show-stderr",
               "--launch-method", "forkserver")
    if quick:
        cmd.append("--quick")
    for regex in filters:
        cmd += ["--bench", regex]
    _say("+", " ".join(cmd))
    return subprocess.run(cmd, cwd=root, env=env).returncode


def publish(root: Path, env: dict) -> None:
    proc = subprocess.run(_asv("publish"), cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        _say("asv publish failed (summary written anyway):", (proc.stderr or proc.stdout).strip()[-500:])
    else:
        _say(f"asv publish: html in {root / '.asv' / 'html'}")


# -- results ---------------------------------------------------------------------------


def load_results(root: Path, machine: str, sha: str) -> dict:
    """asv's results JSON of ``sha`` on ``machine`` (the newest, if several envs)."""
    conf = json.loads((root / "asv.conf.json").read_text())
    directory = root / conf.get("results_dir", ".asv/results") / machine
    files = sorted(directory.glob(f"{sha[:8]}-*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise BenchError(f"no asv results for {sha[:8]} in {directory} (did asv run any benchmark?)")
    return json.loads(files[-1].read_text())


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def measurements(results: dict) -> list[dict]:
    """One dict per benchmark and parameter combination: ``name``, ``params`` (dict),
    ``value`` (seconds, bytes or a ratio; None if skipped or failed)."""
    import itertools

    columns = results.get("result_columns", ["result", "params"])
    out = []
    for name, row in results.get("results", {}).items():
        entry = dict(zip(columns, row))
        values = entry.get("result")
        params = entry.get("params") or []
        combos = list(itertools.product(*params)) if params else [()]
        if not isinstance(values, list):
            values = [values]
        started = entry.get("started_at")
        for combo, value in zip(combos, values):
            if isinstance(value, float) and math.isnan(value):
                value = None
            out.append({"name": name, "params": [_value(p) for p in combo], "value": value,
                        "started_at": started})
    return out


#: benchmark name -> (stage key, parameter names after the backend)
KNOWN = {
    "featurize.Featurize.time_featurize": ("featurize", ["descriptor", "derivatives", "frames"]),
    "featurize.FeaturizeAtoms.time_featurize_atoms": ("featurize_atoms", ["descriptor", "atoms"]),
    "pipeline.Scale.time_scale": ("scale", ["frames"]),
    "pipeline.StoreWrite.time_store_write": ("store_write", ["frames"]),
    "pipeline.StoreRead.time_store_read": ("store_read", ["frames"]),
    "pipeline.Collate.time_collate": ("collate", ["frames"]),
    "pipeline.ForceContraction.time_force_contraction": ("force_contraction", ["frames"]),
    "pipeline.TrainEpoch.time_train_epoch": ("train_epoch", ["frames"]),
    "pipeline.Preprocess.time_preprocess": ("preprocess", ["frames"]),
}
MEMORY = {
    "memory.FeaturizeMemory.peakmem_featurize": ("featurize", "gmpordernorm", True),
    "memory.PreprocessMemory.peakmem_preprocess": ("preprocess", None, None),
}
REFERENCE = {
    "memory.FeaturizeMemory.peakmem_reference": "memory.FeaturizeMemory.peakmem_featurize",
    "memory.PreprocessMemory.peakmem_reference": "memory.PreprocessMemory.peakmem_preprocess",
}
RATIOS = {
    "ratios.FeaturizeRatio.track_featurize_ratio": "featurize gmpordernorm + derivatives",
    "ratios.PreprocessRatio.track_preprocess_ratio": "end-to-end preprocessing",
    "ratios.ForceContractionRatio.track_force_contraction_ratio": "force contraction, forward + backward",
    "ratios.TrainEpochRatio.track_train_epoch_ratio": "training epoch",
}


def _stage_label(key: str, p: dict) -> str:
    if key == "featurize":
        return f"featurize {p['descriptor']}" + (" + derivatives" if p["derivatives"] else "")
    if key == "featurize_atoms":
        return f"featurize {p['descriptor']} + derivatives, one frame"
    return stages.STAGES[key].title


def table(results: dict, since: float | None = None) -> dict:
    """Rows ``{(label, size): {backend: {"time", "peak", "peak_delta"}}}`` and the
    ``ratios`` ``{(label, frames): value}`` from asv's results; with ``since`` (a Unix
    time), only benchmarks run from then on (asv keeps older results of the same commit)."""
    rows: dict = {}
    refs: dict = {}
    ratios: dict = {}
    meas = measurements(results)
    if since is not None:
        meas = [m for m in meas if m["started_at"] is None or m["started_at"] >= since * 1000 - 1]
    for m in meas:
        if m["name"] in REFERENCE and m["value"] is not None:
            refs[(REFERENCE[m["name"]], tuple(m["params"]))] = m["value"]
    for m in meas:
        name, value = m["name"], m["value"]
        if name in KNOWN:
            key, names = KNOWN[name]
            backend, rest = m["params"][0], m["params"][1:]
            p = dict(zip(names, rest))
            size = f"{p['frames']} frames" if "frames" in p else f"{p['atoms']} atoms"
            descriptor = p.get("descriptor")
            order = (list(KNOWN).index(name),
                     stages.DESCRIPTORS.index(descriptor) if descriptor in stages.DESCRIPTORS else 0,
                     bool(p.get("derivatives")),
                     p.get("frames", p.get("atoms", 0)))
            row = rows.setdefault((_stage_label(key, p), size), {"_order": order})
            row.setdefault(backend, {})["time"] = value
        elif name in MEMORY:
            key, descriptor, derivatives = MEMORY[name]
            backend, frames = m["params"]
            p = {"descriptor": descriptor, "derivatives": derivatives, "frames": frames}
            label = _stage_label(key, p) if key == "featurize" else stages.STAGES[key].title
            row = rows.setdefault((label, f"{frames} frames"), {"_order": (99, label, frames)})
            cell = row.setdefault(backend, {})
            cell["peak"] = value
            ref = refs.get((name, tuple(m["params"])))
            if value is not None and ref is not None:
                cell["peak_delta"] = value - ref
        elif name in RATIOS and value is not None:
            ratios[(RATIOS[name], m["params"][0])] = value
    return {"rows": rows, "ratios": ratios}


def _fmt_time(t) -> str:
    if t is None:
        return "–"
    if t >= 100:
        return f"{t:.0f} s"
    if t >= 1:
        return f"{t:.2f} s"
    return f"{t * 1e3:.1f} ms"


def _fmt_bytes(b) -> str:
    if b is None:
        return ""
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def _why_missing(label: str, backend: str, size: str, info: dict, quick: bool, descriptors=None) -> str:
    """Why a backend has no number in a row (asv records no reason)."""
    if descriptors is not None and label.startswith("featurize ") and label.split()[1] not in descriptors:
        return "not in --descriptors"
    if quick and not (label.startswith("featurize gmpordernorm") or label in QUICK_STAGES):
        return "not in --quick"
    for spec in stages.STAGES.values():
        if spec.title == label and backend not in spec.backends:
            return "n/a (no equivalent)"
    if backend == "amptorch" and stages.available("amptorch"):
        return "not installed"
    for spec in stages.STAGES.values():
        if spec.title == label and spec.needs_labels and info.get("labels"):
            return "n/a (no energies)"
        if spec.title == label and spec.fastfp_needs_amptorch and stages.available("amptorch"):
            return "n/a (needs AMPTorch)"
    n = int(size.split()[0])
    if size.endswith("frames"):
        if quick and n > QUICK_FRAMES:
            return "not run (--quick)"
        if n > info.get("n_frames", n):
            return "not run (too few frames)"
        if backend == "amptorch" and n > int(os.environ.get("FASTFP_BENCH_AMPTORCH_MAX_FRAMES", 1000)):
            return "not run (AMPTorch too slow)"
    elif quick and (n > QUICK_ATOMS or backend == "amptorch" and n > QUICK_AMPTORCH_ATOMS):
        return "not run (--quick)"
    elif backend == "amptorch" and n > int(os.environ.get("FASTFP_BENCH_AMPTORCH_MAX_ATOMS", 2000)):
        return "not run (AMPTorch too slow)"
    return "skipped or failed"


def summary_markdown(summary: dict, backends: list[str], header: dict, quick: bool, info: dict,
                     descriptors: list[str] | None = None) -> str:
    """The markdown summary: header, notes, the stage table, the in-process ratios."""
    rows, ratios = summary["rows"], summary["ratios"]
    amp_reason = stages.available("amptorch") if "amptorch" in backends else None
    # columns: AMPTorch always (its absence is part of the result), others when usable
    shown = [b for b in backends if b == "amptorch" or stages.available(b) is None]
    lines = [f"# fastfp bench {'--quick ' if quick else ''}summary", ""]
    for key, value in header.items():
        lines.append(f"- {key}: {value}")
    lines.append("")
    if amp_reason:
        lines += [f"**AMPTorch is not installed here: no AMPTorch numbers to compare with.** {amp_reason}: "
                  "install AMPTorch into its own environment, `pip install -e` this checkout there, and "
                  "run `fastfp bench` with that environment's Python.", ""]
    for b in backends:
        if b not in shown:
            lines += [f"No {b} column: {stages.available(b)}.", ""]
    if info.get("labels"):
        lines += [f"**{info['labels']}**: only featurization and the store ran.", ""]
    lines += ["Time: asv's median per run. Peak memory: the benchmark process's peak resident set, "
              "with in brackets its increase over the same process idle after the same setup "
              "(`peakmem_reference`). Speed-up: AMPTorch time / time.", ""]
    mem_backends = [b for b in shown if any(r.get(b, {}).get("peak") is not None for r in rows.values())]
    others = [b for b in shown if b != "amptorch"]
    compare = "amptorch" in shown and bool(others)
    head = ["stage", "size"] + [f"{b} time" for b in shown] + [f"{b} peak memory" for b in mem_backends]
    if compare:
        head += [f"{b} speed-up" for b in others]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    not_run: dict = {}
    for (label, size), row in sorted(rows.items(), key=lambda kv: kv[1]["_order"]):
        if not any(row.get(b, {}).get("time") is not None or row.get(b, {}).get("peak") is not None
                   for b in shown):
            main = "fastfp" if "fastfp" in shown else shown[0]
            reason = _why_missing(label, main, size, info, quick, descriptors)
            not_run.setdefault((label, reason), []).append(size)
            continue
        timed = any("time" in row.get(b, {}) for b in backends)
        cells = [label, size]
        for b in shown:
            t = row.get(b, {}).get("time")
            cells.append(_fmt_time(t) if t is not None else
                         (_why_missing(label, b, size, info, quick, descriptors) if timed else ""))
        for b in mem_backends:
            cell = row.get(b, {})
            text = _fmt_bytes(cell.get("peak"))
            if cell.get("peak_delta") is not None:
                text += f" (+{_fmt_bytes(max(cell['peak_delta'], 0))})"
            cells.append(text)
        if compare:
            ta = row.get("amptorch", {}).get("time")
            for b in others:
                tb = row.get(b, {}).get("time")
                cells.append(f"{ta / tb:.1f}×" if ta and tb else "–")
        lines.append("| " + " | ".join(cells) + " |")
    if not_run:
        lines += ["", "Not run:", ""]
        for (label, reason), sizes in not_run.items():
            lines.append(f"- {label} ({', '.join(sizes)}): {reason}")
    if ratios:
        lines += ["", "AMPTorch time / fastfp time, both measured in one process (asv `track_`):", "",
                  "| stage | frames | AMPTorch / fastfp |", "|---|---|---|"]
        for (label, frames), value in sorted(ratios.items()):
            lines.append(f"| {label} | {frames} | {value:.1f}× |")
    elif amp_reason:
        lines += ["", f"No in-process AMPTorch/fastfp ratios: {amp_reason}."]
    return "\n".join(lines) + "\n"


PLOTTED = ["featurize gmpordernorm", "featurize gmpordernorm + derivatives",
           stages.STAGES["preprocess"].title, stages.STAGES["train_epoch"].title]


def plot_time_vs_frames(summary: dict, backends: list[str], path: Path, title: str = "") -> Path:
    """Log-log time against frames, one panel per main stage, one line per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 7.5), squeeze=False)
    styles = {"amptorch": ("tab:red", "s"), "fastfp": ("tab:blue", "o"), "cupy": ("tab:green", "^")}
    for ax, label in zip(axes.ravel(), PLOTTED):
        any_data = False
        for b in backends:
            pts = sorted((int(size.split()[0]), row[b]["time"]) for (lab, size), row in rows.items()
                         if lab == label and size.endswith("frames") and row.get(b, {}).get("time") is not None)
            if pts:
                any_data = True
                color, marker = styles.get(b, (None, "o"))
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=b)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("frames")
        ax.set_ylabel("time (s)")
        if any_data:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.legend()
            ax.grid(True, which="both", alpha=0.3)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- the command -----------------------------------------------------------------------


def run_bench(quick: bool = False, data: str | None = None, backends: str = "amptorch,fastfp,cupy",
              out: str = "bench-results", frames=None, descriptors: str | None = None) -> int:
    """``fastfp bench``; returns the exit code (1 if some benchmark failed). Raises
    :class:`BenchError` for bad input."""
    t0 = time.perf_counter()
    chosen = parse_backends(backends)
    featurized = parse_descriptors(descriptors)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchError(f"--out {out!r} is not a directory")
    if importlib_missing("asv"):
        raise BenchError("asv is not installed: pip install -e '.[bench]'")
    if data is not None:  # bad --data first: cheap, and the likeliest mistake
        check_data_path(data)
    root = find_checkout()
    sha = head_commit(root)
    limit = max(frames) if frames else (QUICK_FRAMES if quick else None)
    info = check_data(data, limit)
    source = info["source"] if data else None
    _say(f"frames: {info['source']} ({info['n_frames']} frames, {info['atoms_per_frame']:.0f} atoms per "
         f"frame, elements {' '.join(info['elements'])})")
    if info["labels"]:
        _say(f"note: {info['labels']}; featurization and store stages only")
    for b in chosen:
        reason = stages.available(b)
        _say(f"backend {b}: {'ready' if reason is None else reason}")
    if frames is None and info["n_frames"] < min(DEFAULT_FRAMES):
        frames = [info["n_frames"]]
    env = bench_env(source, quick, frames)
    machine = ensure_machine(root, env)
    started = time.time()
    code = run_asv(root, sha, env, bench_filters(chosen, quick, featurized), quick)
    if code != 0:
        _say(f"asv run exited with {code} (some benchmarks failed; see above)")
    publish(root, env)
    results = load_results(root, machine, sha)
    summary = table(results, since=started)
    header = {
        "commit": sha[:12],
        "machine": f"{machine} ({os.cpu_count()} cores)",
        "python": sys.executable,
        "frames": f"{info['source']} ({info['atoms_per_frame']:.0f} atoms per frame)",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "asv results": str(root / ".asv" / "results" / machine),
    }
    text = summary_markdown(summary, chosen, header, quick, info, featurized)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.md").write_text(text)
    plot_time_vs_frames(summary, chosen, out_dir / "time_vs_frames.png", title=f"fastfp bench, {sha[:8]}")
    print(text)
    _say(f"wrote {out_dir / 'summary.md'} and {out_dir / 'time_vs_frames.png'} "
         f"in {time.perf_counter() - t0:.0f} s")
    return 0 if code == 0 else 1


def importlib_missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


__all__ = ["BenchError", "run_bench", "check_data", "table", "summary_markdown", "plot_time_vs_frames",
           "bench_filters", "parse_descriptors"]
