"""asv across commits: the fast subset (``benchmarks/history.py``) at the project's
milestone commits (``fastfp bench --history``), the regression gate between two commits
(``fastfp bench --compare BASE``), and the picture of the history (``--history-plot``).

asv runs the checkout's benchmark suite against whatever fastfp the benchmark processes
import. Here that is each commit's own ``src/``, extracted with ``git archive`` into
``.asv/commits/<sha>`` (kept: numba's compiled kernels are cached beside the sources)
and put first on ``ASV_PYTHONPATH``; asv runs in this environment (``--python=same``)
and records the results under the commit (``--set-commit-hash``). This environment is
the one with AMPTorch (the ratios and the drop-in's stages need it), which asv could not
build per commit: AMPTorch is not on PyPI and needs its own old stack. asv imports only
``benchmarks/__init__.py`` and ``benchmarks/history.py`` (:func:`asvrun.subset_suite`):
the rest of the suite needs the checkout's own fastfp.

The history's results are asv's JSON in the ``results_dir`` of ``asv.conf.json``
(``reports/asv``, in the repository), so that ``asv publish`` builds the dashboard from
a fresh clone; the milestones are listed in ``benchmarks/milestones.txt``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from . import asvrun, settings
from .bench import BenchError, find_checkout, require_asv, say

#: the fast subset: the module benchmarks/history.py
SUBSET = "history"
#: frames of the default workload the fast subset takes (its first ones: all 32 systems)
FRAMES = 32
#: the gate: a benchmark is a regression when HEAD is slower than BASE by more than
#: this factor and asv finds the difference significant (Mann-Whitney U, p < 0.002,
#: or non-overlapping 99% confidence intervals with fewer samples)
FACTOR = 1.2
MILESTONES = Path("benchmarks") / "milestones.txt"
PLOT = Path("reports") / "history.png"


def git(root: Path, *args) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def resolve(root: Path, rev: str) -> str:
    """The full hash of commit ``rev``, or :class:`BenchError`."""
    proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=root,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"{rev!r} is not a commit of {root}")
    return proc.stdout.strip()


def milestones(root: Path) -> list[tuple[str, str]]:
    """``(hash, label)`` of each line ``HASH LABEL`` of ``benchmarks/milestones.txt``
    (``#`` starts a comment), hashes resolved."""
    out = []
    for line in (root / MILESTONES).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            rev, _, label = line.partition(" ")
            out.append((resolve(root, rev), label.strip()))
    return out


def commit_source(root: Path, sha: str) -> Path:
    """The ``src`` folder of commit ``sha``, extracted (once) into ``.asv/commits/<sha>``."""
    folder = root / ".asv" / "commits" / sha
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{sha[:8]}-", dir=folder.parent))
        try:
            archive = subprocess.run(["git", "archive", "--format=tar", sha, "src"], cwd=root, check=True,
                                     capture_output=True).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(partial, filter="data")
            partial.rename(folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return folder / "src"


def write_inputs(folder: Path) -> Path:
    """The fast subset's inputs in ``folder``: the first :data:`FRAMES` frames of the
    default workload (``frames.traj``) and the GMPOrderNorm benchmark settings for their
    elements as AMPTorch's ``descriptor_setup`` (``descriptor.json``), made with this
    checkout's harness."""
    import ase.io

    from fastfp.config import descriptor_setup

    from .workloads import describe, load_frames

    frames = load_frames(settings.DATA.default, FRAMES, progress=True)
    elements = describe(frames, settings.DATA.default)["elements"]
    try:
        config = settings.descriptor_config("gmpordernorm", elements)
    except FileNotFoundError as exc:
        raise BenchError(str(exc)) from None
    ase.io.write(folder / "frames.traj", frames)
    (folder / "descriptor.json").write_text(json.dumps(descriptor_setup(config)))
    return folder


def subset_env(inputs: Path | None) -> dict:
    """This environment without ``FASTFP_BENCH_*`` variables, with the inputs folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTFP_BENCH_")}
    env["TQDM_DISABLE"] = "1"
    if inputs is not None:
        env[settings.HISTORY.name] = str(inputs)
    return env


def run_commit(root: Path, sha: str, config: Path, env: dict, log: Path, bench=(f"^{SUBSET}\\.",)) -> int:
    """asv run of the fast subset (``bench``) at commit ``sha``: its own ``src`` first
    on the benchmark processes' path."""
    source = commit_source(root, sha)
    paths = [str(source)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return asvrun.run(root, config, sha, {**env, "ASV_PYTHONPATH": os.pathsep.join(paths)}, log, say, bench)


# -- the history -------------------------------------------------------------------------


def results_dir(root: Path) -> Path:
    """The results folder of ``asv.conf.json`` (the history's)."""
    return root / asvrun.asv_config(root).get("results_dir", ".asv/results")


def has_results(folder: Path, machine: str, sha: str) -> bool:
    return any((folder / machine).glob(f"{sha[:8]}-*.json"))


def run_history(commits=None, out: str = "bench-results") -> int:
    """``fastfp bench --history [COMMIT ...]``: the fast subset at ``commits`` (default:
    the milestones and HEAD) that have no results on this machine yet, into the
    history's results folder; then the picture. Returns 1 if a benchmark failed."""
    root = find_checkout()
    require_asv()
    shas = ([resolve(root, c) for c in commits] if commits
            else [sha for sha, _ in milestones(root)] + [resolve(root, "HEAD")])
    shas = list(dict.fromkeys(shas))
    machine = asvrun.ensure_machine(subset_env(None), say)
    folder = results_dir(root)
    todo = [sha for sha in shas if not has_results(folder, machine, sha)]
    say(f"{len(shas) - len(todo)} of {len(shas)} commits already have results in {folder / machine}")
    code = 0
    out_dir = Path(out)
    log = out_dir / "history.log"
    if todo:
        with asvrun.removed_on_early_stop((out_dir,), log), \
                tempfile.TemporaryDirectory(prefix="fastfp-history-") as tmp:
            out_dir.mkdir(parents=True, exist_ok=True)
            log.write_text("")
            tmp = Path(tmp)
            config = asvrun.write_config(root, tmp / "asv.conf.json", folder, asvrun.subset_suite(root, tmp, (SUBSET,)))
            env = subset_env(write_inputs(tmp))
            for k, sha in enumerate(todo, 1):
                t0 = time.perf_counter()
                say(f"commit {k} of {len(todo)}: {sha[:8]} {git(root, 'log', '-1', '--format=%s', sha)[:60]}")
                status = run_commit(root, sha, config, env, log)
                code |= status != 0
                say(f"commit {sha[:8]} done in {time.perf_counter() - t0:.0f} s"
                    + (f" (asv exited with {status}: see {log})" if status else ""))
        say(f"asv's output: {log}")
    path = plot_history(root)
    say(f"wrote {path}; asv publish && asv preview show the dashboard")
    return int(code)


# -- the regression gate --------------------------------------------------------------


def gate(root: Path, base: str, head: str, env: dict, workdir: Path, log: Path, factor: float = FACTOR,
         bench=(f"^{SUBSET}\\.[^.]+\\.time_",)) -> bool:
    """Run the benchmarks ``bench`` (default: the fast subset's times) at commits
    ``base`` and ``head`` (each into its own results folder in ``workdir``, so that one
    commit twice gives two runs) and print asv's comparison table. True when a benchmark
    got worse: slower by more than ``factor`` with a significant difference, or failing
    at ``head`` only."""
    from asv.benchmarks import Benchmarks
    from asv.commands.compare import Compare
    from asv.config import Config
    from asv.results import Results

    machine = asvrun.ensure_machine(env, say)
    suite = asvrun.subset_suite(root, workdir, (SUBSET,))
    configs = {}
    for label, sha in (("base", base), ("head", head)):
        configs[label] = asvrun.write_config(root, workdir / f"{label}.conf.json", workdir / label, suite)
        say(f"{label}: {sha[:8]} {git(root, 'log', '-1', '--format=%s', sha)[:60]}")
        run_commit(root, sha, configs[label], env, log, bench)
        if not has_results(workdir / label, machine, sha):
            raise BenchError(f"asv recorded no results at {label} ({sha[:8]}): see {log}")
    conf = Config.load(str(configs["head"]))
    benchmarks = Benchmarks.load(conf)

    def resultset(label, sha):
        for path in sorted((workdir / label / machine).glob(f"{sha[:8]}-*.json")):
            result = Results.load(str(path), machine)
            for name in result.get_result_keys(benchmarks):
                params = benchmarks[name]["params"]
                yield (name, params, result.get_result_value(name, params), result.get_result_stats(name, params),
                       result.get_result_samples(name, params), benchmarks[name]["version"], machine,
                       result.env_name)

    sys.stdout.flush()
    worsened, _ = Compare.print_table(conf, base, head, resultset_1=resultset("base", base),
                                      resultset_2=resultset("head", head), factor=factor, split=True,
                                      only_changed=False, sort="ratio",
                                      commit_names={base: "BASE", head: "HEAD"})
    sys.stdout.flush()
    return bool(worsened)


def run_compare(base: str, out: str = "bench-results", factor: float = FACTOR) -> int:
    """``fastfp bench --compare BASE``: the gate between BASE and HEAD on the fast
    subset's times; 1 if a benchmark got worse, else 0."""
    root = find_checkout()
    require_asv()
    base_sha, head_sha = resolve(root, base), resolve(root, "HEAD")
    if git(root, "status", "--porcelain", "--", "src"):
        say("note: uncommitted changes in src/ are not measured (HEAD is the last commit)")
    out_dir = Path(out)
    log = out_dir / "compare.log"
    with asvrun.removed_on_early_stop((out_dir,), log), tempfile.TemporaryDirectory(prefix="fastfp-compare-") as tmp:
        out_dir.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        tmp = Path(tmp)
        inputs = tmp / "inputs"
        inputs.mkdir()
        worse = gate(root, base_sha, head_sha, subset_env(write_inputs(inputs)), tmp, log, factor)
    verdict = "a benchmark is" if worse else "no benchmark is"
    verdict += f" slower at HEAD by more than {factor}x beyond the noise"
    say(f"{base} ({base_sha[:8]}) -> HEAD ({head_sha[:8]}): {verdict}; asv's output: {log}")
    return 1 if worse else 0


# -- the picture ----------------------------------------------------------------------


def history_points(root: Path, machine: str | None = None) -> tuple[str, list[dict]]:
    """``(machine, points)`` from the history's results folder: one point per commit
    (in the repository's order, oldest first), ``{"commit", "values": {name: (value,
    q25, q75)}}`` for the fast subset's benchmarks. ``machine``: the one with most
    commits if None."""
    folder = results_dir(root)
    machines = sorted((p.parent.name for p in folder.glob("*/machine.json")))
    if machine is None:
        if not machines:
            raise FileNotFoundError(f"no asv results in {folder}")
        machine = max(machines, key=lambda m: len(list((folder / m).glob("*.json"))))
    points = []
    for path in sorted((folder / machine).glob("*.json")):
        if path.name == "machine.json":
            continue
        data = json.loads(path.read_text())
        columns = data.get("result_columns", ["result", "params"])
        values = {}
        for name, row in data.get("results", {}).items():
            if name.startswith(f"{SUBSET}."):
                entry = dict(zip(columns, row))
                first = [entry.get(k)[0] if isinstance(entry.get(k), list) else entry.get(k)
                         for k in ("result", "stats_q_25", "stats_q_75")]
                if first[0] is not None:
                    values[name] = tuple(first)
        points.append({"commit": data["commit_hash"], "values": values})
    order = {sha: k for k, sha in enumerate(git(root, "rev-list", "--all", "--topo-order", "--reverse").split())}
    points.sort(key=lambda p: order.get(p["commit"], len(order)))
    return machine, points


#: the picture's lines: (benchmark method of benchmarks/history.py, label)
STAGES = (("Featurize.%s_featurize", "featurize (GMPOrderNorm, derivatives)"),
          ("Preprocess.%s_preprocess", "end-to-end preprocessing"),
          ("TrainEpoch.%s_train_epoch", "training epoch"),
          ("TrainEpochOnTheFly.%s_train_epoch_on_the_fly", "training epoch on the fly"))


def plot_history(root: Path, path: Path | None = None, machine: str | None = None) -> Path:
    """Two panels against commit: the ratios AMPTorch time / fastfp time, and fastfp's
    time (median, bars from the first to the third quartile of asv's samples); commits
    labelled by hash and milestone. PNG at ``path`` (default ``reports/history.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path or root / PLOT)
    machine, points = history_points(root, machine)
    labels = {resolve(root, "HEAD"): "HEAD"}
    with contextlib.suppress(FileNotFoundError, BenchError):
        labels.update(milestones(root))
    x = range(len(points))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    for method, label in STAGES:
        for ax, kind in ((top, "track"), (bottom, "time")):
            name = f"{SUBSET}.{method % kind}" + ("_ratio" if kind == "track" else "")
            xs = [k for k in x if name in points[k]["values"]]
            if not xs:
                continue
            v = [points[k]["values"][name] for k in xs]
            if kind == "track":
                ax.plot(xs, [p[0] for p in v], marker="o", label=label)
            else:
                low = [p[0] - (p[1] if p[1] is not None else p[0]) for p in v]
                high = [(p[2] if p[2] is not None else p[0]) - p[0] for p in v]
                ax.errorbar(xs, [p[0] for p in v], yerr=[low, high], marker="o", capsize=3, label=label)
    top.set_ylabel("AMPTorch time / fastfp time")
    bottom.set_ylabel("fastfp time (s)")
    for ax in (top, bottom):
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    bottom.set_xticks(list(x))
    bottom.set_xticklabels([f"{p['commit'][:7]} {labels.get(p['commit'], '')}".strip() for p in points],
                           rotation=60, ha="right", fontsize=7)
    fig.suptitle(f"fastfp's fast subset ({FRAMES} frames of the default workload) at each milestone commit, "
                 f"asv on {machine} (fastfp bench --history)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
