"""Summaries of profiler outputs: shares of time by pipeline stage and by function.

Reads py-spy's ``raw`` output (collapsed stacks, one ``frame;frame;... count`` line per
distinct stack, root first) and scalene's JSON profile, and writes markdown tables, an
SVG flame graph coloured by stage and a bar chart of the stage breakdown.

Every sample is put in one of :data:`CATEGORIES` by :func:`categorise`: the stack is
read from the innermost frame outwards and the first frame that one of :data:`RULES`
recognises decides. Native frames (``py-spy --native``) are recognised by symbol and
library (AMPTorch's descriptor libraries, torch's sparse-dense product), Python frames by
function, file and the text of the sampled line, so that e.g. the lines of AMPTorch's
``calculate_fingerprints`` that copy and threshold the dense derivative array count as
derivative conversion while the call into its C++ library counts as the kernel.
"""

from __future__ import annotations

import json
import linecache
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

KERNEL = "neighbour search & descriptor kernel"
CONVERSION = "derivative conversion"
SCALING = "scaling"
STORAGE = "storage"
COLLATION = "collation"
SPARSE = "sparse matrix product"
OPTIMISER = "optimiser"
NETWORK = "network & autograd (dense)"
OTHER = "other"

#: the stage categories, in table order
CATEGORIES = (KERNEL, CONVERSION, SCALING, STORAGE, COLLATION, SPARSE, OPTIMISER, NETWORK, OTHER)

COLOURS = {
    KERNEL: "#4e79a7",
    CONVERSION: "#f28e2b",
    SCALING: "#e15759",
    STORAGE: "#76b7b2",
    COLLATION: "#59a14f",
    SPARSE: "#edc948",
    OPTIMISER: "#b07aa1",
    NETWORK: "#ff9da7",
    OTHER: "#bab0ac",
}

#: function name of the wrapper the profiled child runs the measured work in; samples
#: outside it (imports, loading frames, building inputs) are not part of the stage
MARKER = "_profiled_stage"


# -- frames and rules ------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One stack frame: a Python function (``file`` and ``line`` set) or native code
    (``file`` is the shared library)."""

    name: str
    file: str = ""
    line: int = 0
    native: bool = False

    @property
    def short_file(self) -> str:
        return short_path(self.file)

    @property
    def text(self) -> str:
        """Source text of the sampled line ('' for native frames or unknown files)."""
        if self.native or not self.line or not self.file.endswith(".py"):
            return ""
        return linecache.getline(self.file, self.line).strip()

    def key(self) -> str:
        """What :data:`RULES` match: ``py:NAME@FILE:LINE|TEXT`` or ``native:NAME@LIB``."""
        if self.native:
            return f"native:{self.name}@{self.file}"
        return f"py:{self.name}@{self.file}:{self.line}|{self.text}"

    def label(self) -> str:
        if self.native:
            return f"{self.name} ({os.path.basename(self.file)})"
        return f"{self.name} ({self.short_file}:{self.line})" if self.line else f"{self.name} ({self.short_file})"


_SITE = re.compile(r".*?/(?:site-packages|dist-packages|src)/")
_PYLIB = re.compile(r".*?/lib/python3\.\d+/")


def short_path(path: str) -> str:
    """``/…/site-packages/amptorch/model.py`` → ``amptorch/model.py`` (also for ``src/``
    layouts and the standard library)."""
    if not path or path.startswith("<"):
        return path
    short = _SITE.sub("", path, count=1)
    if short == path:
        short = _PYLIB.sub("", path, count=1)
    return short


#: (category, regex on :meth:`Frame.key`, weak). A sample's category comes from the
#: innermost frame matching a strong rule (the pipeline's own functions, AMPTorch's
#: descriptor libraries, torch's sparse product); only if none matches, from the
#: innermost frame matching a weak rule (libraries used from several stages, e.g.
#: torch_geometric, torch.nn, h5py). Within a frame the first rule in the list wins.
RULES: list[tuple[str, re.Pattern, bool]] = [(cat, re.compile(rx), weak) for cat, rx, weak in [
    # --- native code ---
    # AMPTorch's descriptor libraries (cffi), vesin's neighbour lists
    (KERNEL, r"^native:.*@.*(_libgmpordernorm|_libgmp|_libsymf|vesin)[^/]*$", False),
    (KERNEL, r"^native:.*@.*amptorch/descriptor/", False),
    # torch's sparse x dense product (forward and its autograd backward): not the sparse
    # tensor constructors or coalesce on their own
    (SPARSE, r"(?i)^native:[^@]*(sparse[a-z_]*mm|addmm[a-z_]*sparse|s_addmm|sspaddmm|spmm"
             r"|SparseAddmm|SparseMm|sparse_matmul|_sparse_mm)", False),
    # fastfp's replacement of the product (gather, multiply, index_add): its backward
    (SPARSE, r"^native:[^@]*generated::[^@]*(IndexAddBackward0|IndexBackward0)", False),
    (OPTIMISER, r"^native:[^@]*(_fused_adam|_fused_sgd|_foreach_)", False),
    # --- Python: the stages' own code ---
    (SPARSE, r"^py:[^@]*@[^|]*\|.*torch\.sparse\.mm\(", False),
    (SPARSE, r"^py:(mm|addmm)@.*torch/sparse/__init__\.py", False),
    (SPARSE, r"^py:contract_forces@", False),
    # its compiled loop and autograd.Function (forward and backward)
    (SPARSE, r"^py:[^@]*@.*fastfp/amptorch/forces\.py", False),
    (SCALING, r"^py:(FeatureScaler|TargetScaler)\.[^@]*@", False),
    (SCALING, r"^py:(norm_features|_scale_tables)@", False),
    (COLLATION, r"^py:(DataCollater\.__call__|sparse_block_diag|_collate_like_amptorch)@", False),
    (STORAGE, r"^py:[^@]*@.*fastfp/store\.py", False),
    (STORAGE, r"^py:[^@]*(_setup_fingerprint_database|_compute_fingerprints)@", False),
    # AMPTorch: the lines that copy/threshold the dense derivative array and make it COO
    (CONVERSION, r"^py:[^@]*calculate_fingerprints@[^|]*\|.*(fp_prime|coo_matrix|\bdx\b)", False),
    (CONVERSION, r"^py:[^@]*(AtomsToData\.convert|_compute_fingerprints_nodb"
                 r"|_fp_prime_element_row_index_to_image_row_index)@", False),
    # fastfp: blocks -> AMPTorch COO, Data objects
    (CONVERSION, r"^py:[^@]*(frame_outputs|image_dicts|image_to_data|images_to_data|fingerprints_to_data|coo_frames|blocks_to_coo|pair_blocks)@", False),
    (CONVERSION, r"^py:[^@]*@.*fastfp/(fingerprints\.py|kernels/blocks\.py|amptorch/data\.py)", False),
    (KERNEL, r"^py:[^@]*@.*amptorch/descriptor/", False),
    (KERNEL, r"^py:[^@]*@.*fastfp/(neighbors|frames|harmonics|pseudodensity)\.py", False),
    (KERNEL, r"^py:[^@]*@.*fastfp/(descriptors|kernels)/", False),
    (KERNEL, r"^py:[^@]*prepare_fingerprints@", False),
    # (_forward, _energy_and_forces: fastfp's model.py in profiles recorded before its energy_and_forces)
    (NETWORK, r"^py:[^@]*(forward|atomic_energies|energy_and_forces)@"
              r".*(amptorch/model\.py|fastfp/amptorch/model\.py)", False),
    (NETWORK, r"^py:[^@]*@[^|]*\|.*\.backward\(", False),
    # --- libraries used by several stages: only if nothing above matched ---
    # (skorch runs the whole training step inside Optimizer.step(closure): weak)
    (OPTIMISER, r"^py:[^@]*@.*torch/optim/", True),
    (OPTIMISER, r"^py:[^@]*zero_grad@", True),
    (COLLATION, r"^py:[^@]*@.*torch_geometric/(data/(batch|collate)|loader)", True),
    (COLLATION, r"^py:[^@]*@.*torch/utils/data/", True),
    (STORAGE, r"^py:[^@]*@.*(/h5py/|/lmdb/|torch/serialization\.py|/pickle\.py)", True),
    (CONVERSION, r"^py:[^@]*@.*scipy/sparse/", True),
    (CONVERSION, r"^py:[^@]*@.*torch_geometric/data/(data|storage)\.py", True),
    (KERNEL, r"^py:[^@]*@.*(ase/neighborlist\.py|/vesin/|/matscipy/|/numba/)", True),
    (NETWORK, r"^py:[^@]*@.*torch/(nn/|autograd/)", True),
    (NETWORK, r"^py:Tensor\.backward@.*torch/_tensor\.py", True),
    (NETWORK, r"^py:[^@]*@.*torch_scatter/", True),
]]


def categorise(frames: list[Frame], _cache: dict | None = None) -> str:
    """Category of a sample with stack ``frames`` (root first)."""
    weak = None
    for frame in reversed(frames):
        found = frame_category(frame, _cache)
        if found is None:
            continue
        cat, is_weak = found
        if not is_weak:
            return cat
        if weak is None:
            weak = cat
    return weak or OTHER


def frame_category(frame: Frame, cache: dict | None = None) -> tuple[str, bool] | None:
    """``(category, weak)`` of the first rule matching ``frame``, or None."""
    if cache is not None and frame in cache:
        return cache[frame]
    key = frame.key()
    found = None
    for cat, rx, weak in RULES:
        if rx.search(key):
            found = (cat, weak)
            break
    if cache is not None:
        cache[frame] = found
    return found


# -- py-spy raw (collapsed stacks) -------------------------------------------------------

_PY_FILE = re.compile(r"^(?P<file>.+?):(?P<line>\d+)$")


def parse_frame(text: str) -> Frame:
    """One py-spy frame, ``name (file:line)`` (Python) or ``name (library)`` (native)."""
    text = text.strip()
    name, sep, rest = text.rpartition(" (")
    if not sep or not rest.endswith(")"):
        return Frame(text, native=True)
    where = rest[:-1]
    m = _PY_FILE.match(where)
    if m and (m.group("file").endswith(".py") or m.group("file").startswith("<")):
        return Frame(name, m.group("file"), int(m.group("line")))
    return Frame(name, where, native=True)


def read_collapsed(path) -> list[tuple[list[Frame], int]]:
    """``(frames root first, count)`` for each line of a collapsed-stack file."""
    out = []
    intern: dict[str, Frame] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            stack, _, count = line.rpartition(" ")
            try:
                n = int(count)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: not a collapsed-stack line (no sample count)") from None
            parts = stack.split(";")
            if parts and parts[0].startswith("process ") and ":" in parts[0]:
                parts = parts[1:]  # py-spy --subprocesses prefixes the process
            frames = []
            for p in parts:
                if p not in intern:
                    intern[p] = parse_frame(p)
                frames.append(intern[p])
            out.append((frames, n))
    return out


def _is_worker_loop(frame: Frame) -> bool:
    """The loop of a ``concurrent.futures`` thread: fastfp's kernel threads
    (:mod:`fastfp.threads`) and the thread featurizing the next chunk ahead."""
    return frame.name == "_worker" and frame.file.replace("\\", "/").endswith("concurrent/futures/thread.py")


def _is_work_item(frame: Frame) -> bool:
    """A ``concurrent.futures`` thread running a task (not waiting for one)."""
    return frame.name.split(".")[-1] == "run" and frame.file.replace("\\", "/").endswith("concurrent/futures/thread.py")


def stage_samples(samples, marker: str = MARKER):
    """The samples inside the profiled stage, with the stack cut to start at ``marker``
    (all samples, unchanged, if no stack contains it).

    Work fastfp hands to its threads has no ``marker`` frame in its stacks: samples of
    ``concurrent.futures`` worker threads running a task count as stage work too, their
    stacks cut below the worker loop and put under ``marker``; samples of idle worker
    threads (waiting for a task, which py-spy ``--native`` records) are dropped. (The
    child builds the stage in its main thread alone, so worker threads do only the work
    it measures.)"""
    if not any(f.name == marker for frames, _ in samples for f in frames):
        return list(samples)
    out = []
    for frames, n in samples:
        for i, f in enumerate(frames):
            if f.name == marker:
                out.append((frames[i:], n))
                break
            if _is_worker_loop(f):
                if i + 1 < len(frames) and _is_work_item(frames[i + 1]):
                    out.append(([Frame(marker)] + list(frames[i + 1 :]), n))
                break
    return out


@dataclass
class StackSummary:
    """Shares of samples: by category, innermost Python function, line and native symbol."""

    total: int
    categories: dict = field(default_factory=dict)
    functions: list = field(default_factory=list)
    lines: list = field(default_factory=list)
    native: list = field(default_factory=list)
    inclusive: list = field(default_factory=list)

    def share(self, category: str) -> float:
        return self.categories.get(category, 0) / self.total if self.total else 0.0

    def to_json(self) -> dict:
        return {
            "total_samples": self.total,
            "categories": {c: self.categories.get(c, 0) for c in CATEGORIES},
            "shares": {c: self.share(c) for c in CATEGORIES},
            "functions": self.functions,
            "lines": self.lines,
            "native": self.native,
            "inclusive": self.inclusive,
        }


def summarise_stacks(samples, top: int = 15) -> StackSummary:
    """Summary of ``samples`` (from :func:`read_collapsed`, ideally cut by
    :func:`stage_samples`). "Self" time of a Python function includes the native code
    it calls (time counted to the innermost Python frame); ``native`` lists innermost
    named native symbols; ``inclusive`` counts each function once per sample."""
    cache: dict = {}
    total = sum(n for _, n in samples)
    cats: Counter = Counter()
    funcs: Counter = Counter()
    func_cats: dict = defaultdict(Counter)
    lines: Counter = Counter()
    natives: Counter = Counter()
    inclusive: Counter = Counter()
    for frames, n in samples:
        cat = categorise(frames, cache)
        cats[cat] += n
        py = [f for f in frames if not f.native]
        if py:
            inner = py[-1]
            fkey = (inner.name, inner.short_file)
            funcs[fkey] += n
            func_cats[fkey][cat] += n
            lines[(inner.name, inner.short_file, inner.line, inner.file)] += n
        nat = next((f for f in reversed(frames) if f.native and not f.name.startswith("0x")), None)
        if nat is not None and frames and frames[-1].native:
            natives[(nat.name, os.path.basename(nat.file))] += n
        seen = set()
        for f in py:
            k = (f.name, f.short_file)
            if k not in seen:
                seen.add(k)
                inclusive[k] += n

    def pct(n):
        return n / total if total else 0.0

    return StackSummary(
        total=total,
        categories=dict(cats),
        functions=[{"function": name, "file": file, "samples": n, "share": pct(n),
                    "category": func_cats[(name, file)].most_common(1)[0][0]}
                   for (name, file), n in funcs.most_common(top)],
        lines=[{"function": name, "file": file, "line": line, "samples": n, "share": pct(n),
                "text": linecache.getline(full, line).strip() if full.endswith(".py") else ""}
               for (name, file, line, full), n in lines.most_common(top)],
        native=[{"symbol": name, "library": lib, "samples": n, "share": pct(n)}
                for (name, lib), n in natives.most_common(top)],
        inclusive=[{"function": name, "file": file, "samples": n, "share": pct(n)}
                   for (name, file), n in inclusive.most_common(top) if name != MARKER],
    )


# -- scalene JSON ----------------------------------------------------------------------


def summarise_scalene(path, top: int = 15) -> dict:
    """Shares of CPU time (Python / native / system) by category and function, and memory,
    from a scalene JSON profile (1.5 or 2.x). Native time is counted to the innermost
    profiled Python line that called it (scalene does not unwind native stacks)."""
    with open(path, encoding="utf-8") as fh:
        prof = json.load(fh)
    cache: dict = {}
    cats: Counter = Counter()
    split = Counter()
    funcs = []
    lines = []
    for fname, info in (prof.get("files") or {}).items():
        fn_ranges = []
        for fn in info.get("functions", []):
            fn_ranges.append((fn.get("lineno", 0), fn.get("line", "?")))
            total = fn.get("n_cpu_percent_python", 0) + fn.get("n_cpu_percent_c", 0) + fn.get("n_sys_percent", 0)
            funcs.append({"function": str(fn.get("line", "?")).strip(), "file": short_path(fname),
                          "line": fn.get("lineno", 0),
                          "python": fn.get("n_cpu_percent_python", 0) / 100,
                          "native": fn.get("n_cpu_percent_c", 0) / 100,
                          "system": fn.get("n_sys_percent", 0) / 100,
                          "total": total / 100,
                          "peak_mb": fn.get("n_peak_mb", 0), "malloc_mb": fn.get("n_malloc_mb", 0)})
        fn_ranges.sort()
        for ln in info.get("lines", []):
            py = ln.get("n_cpu_percent_python", 0)
            c = ln.get("n_cpu_percent_c", 0)
            sys_ = ln.get("n_sys_percent", 0)
            if py + c + sys_ <= 0 and not ln.get("n_malloc_mb"):
                continue
            lineno = ln.get("lineno", 0)
            name = _enclosing(fn_ranges, lineno, ln)
            frame = Frame(name, fname, lineno)
            found = frame_category(frame, cache)
            cat = found[0] if found else OTHER
            cats[cat] += py + c + sys_
            split["python"] += py
            split["native"] += c
            split["system"] += sys_
            lines.append({"function": name, "file": short_path(fname), "line": lineno,
                          "text": str(ln.get("line", "")).strip(), "python": py / 100, "native": c / 100,
                          "system": sys_ / 100, "total": (py + c + sys_) / 100, "category": cat,
                          "peak_mb": ln.get("n_peak_mb", 0), "malloc_mb": ln.get("n_malloc_mb", 0),
                          "copy_mb_s": ln.get("n_copy_mb_s", 0)})
    funcs.sort(key=lambda r: -r["total"])
    lines_by_time = sorted(lines, key=lambda r: -r["total"])
    lines_by_mem = sorted((r for r in lines if r["malloc_mb"] > 0), key=lambda r: -r["malloc_mb"])
    accounted = sum(cats.values())
    return {
        "samples": bool(prof.get("files")),
        "elapsed_s": prof.get("elapsed_time_sec"),
        "max_footprint_mb": prof.get("max_footprint_mb"),
        "max_footprint_at": f"{short_path(prof.get('max_footprint_fname') or '')}:{prof.get('max_footprint_lineno')}"
        if prof.get("max_footprint_fname") else None,
        "cpu_split": {k: split[k] / 100 for k in ("python", "native", "system")},
        "accounted": accounted / 100,
        "categories": {c: cats.get(c, 0) / 100 for c in CATEGORIES},
        "functions": funcs[:top],
        "lines": lines_by_time[:top],
        "memory_lines": lines_by_mem[:top],
    }


def _enclosing(fn_ranges, lineno, line_info) -> str:
    start = line_info.get("start_function_line")
    if start:
        for ln, name in fn_ranges:
            if ln == start:
                return str(name).strip()
    name = "<module>"
    for ln, fname in fn_ranges:
        if ln <= lineno:
            name = str(fname).strip()
        else:
            break
    return name


# -- markdown --------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _code(text: str, width: int = 70) -> str:
    text = text.replace("|", "\\|").replace("`", "'")
    if len(text) > width:
        text = text[: width - 1] + "…"
    return f"`{text}`" if text else ""


def stacks_markdown(summary: StackSummary, title: str = "", seconds: float | None = None) -> str:
    """Markdown tables of a :class:`StackSummary`."""
    out = []
    if title:
        out.append(f"### {title}\n")
    extra = f", {seconds:.1f} s of work" if seconds else ""
    out.append(f"{summary.total} samples{extra}.\n")
    out.append("| stage | share | samples |\n|---|---:|---:|")
    for c in CATEGORIES:
        n = summary.categories.get(c, 0)
        if n:
            out.append(f"| {c} | {_pct(summary.share(c))} | {n} |")
    out.append("\nTop functions by self time (native code counted to the Python function calling it):\n")
    out.append("| share | function | file | stage |\n|---:|---|---|---|")
    for r in summary.functions:
        out.append(f"| {_pct(r['share'])} | `{r['function']}` | {r['file']} | {r['category']} |")
    out.append("\nTop lines:\n")
    out.append("| share | function | line | source |\n|---:|---|---|---|")
    for r in summary.lines:
        out.append(f"| {_pct(r['share'])} | `{r['function']}` | {r['file']}:{r['line']} | {_code(r['text'])} |")
    if summary.native:
        out.append("\nTop native code (innermost named native frame):\n")
        out.append("| share | symbol | library |\n|---:|---|---|")
        for r in summary.native[:10]:
            out.append(f"| {_pct(r['share'])} | {_code(r['symbol'], 90)} | {r['library']} |")
    if summary.inclusive:
        out.append("\nInclusive time (function anywhere on the stack):\n")
        out.append("| share | function | file |\n|---:|---|---|")
        for r in summary.inclusive[:12]:
            out.append(f"| {_pct(r['share'])} | `{r['function']}` | {r['file']} |")
    return "\n".join(out) + "\n"


def scalene_markdown(s: dict, title: str = "") -> str:
    """Markdown tables of :func:`summarise_scalene`'s result."""
    out = []
    if title:
        out.append(f"### {title}\n")
    if not s.get("samples", True):
        out.append("scalene recorded no samples: the measured work was too short for its 10 ms sampling "
                   "interval. Profile more frames or use --repeat.\n")
        return "\n".join(out)
    split = s["cpu_split"]
    el = s.get("elapsed_s")
    out.append(
        (f"Profiled for {el:.1f} s. " if el else "")
        + f"CPU time of the profiled stage: Python {_pct(split['python'])}, native {_pct(split['native'])}, "
        f"system {_pct(split['system'])}"
        + (f"; peak memory {s['max_footprint_mb']:.0f} MB" if s.get("max_footprint_mb") else "")
        + (f" (at {s['max_footprint_at']})" if s.get("max_footprint_at") else "") + ".\n"
    )
    out.append("| stage | share of CPU time |\n|---|---:|")
    for c in CATEGORIES:
        v = s["categories"].get(c, 0)
        if v > 0.0005:
            out.append(f"| {c} | {_pct(v)} |")
    out.append("\nTop functions:\n")
    out.append("| total | Python | native | system | function | file |\n|---:|---:|---:|---:|---|---|")
    for r in s["functions"]:
        if r["total"] <= 0:
            continue
        out.append(f"| {_pct(r['total'])} | {_pct(r['python'])} | {_pct(r['native'])} | {_pct(r['system'])} "
                   f"| `{r['function']}` | {r['file']}:{r['line']} |")
    out.append("\nTop lines:\n")
    out.append("| total | Python | native | function | line | source | stage |\n|---:|---:|---:|---|---|---|---|")
    for r in s["lines"]:
        out.append(f"| {_pct(r['total'])} | {_pct(r['python'])} | {_pct(r['native'])} | `{r['function']}` "
                   f"| {r['file']}:{r['line']} | {_code(r['text'], 60)} | {r['category']} |")
    if s["memory_lines"]:
        out.append("\nLines allocating most memory:\n")
        out.append("| allocated MB | peak MB | copy MB/s | line | source |\n|---:|---:|---:|---|---|")
        for r in s["memory_lines"][:10]:
            out.append(f"| {r['malloc_mb']:.0f} | {r['peak_mb']:.0f} | {r['copy_mb_s']:.0f} "
                       f"| {r['file']}:{r['line']} | {_code(r['text'], 60)} |")
    return "\n".join(out) + "\n"


def overview_markdown(runs: list[dict]) -> str:
    """One row per run (``label``, ``shares`` by category, ``seconds``, ``link``)."""
    head = "| run | seconds | " + " | ".join(CATEGORIES) + " |"
    sep = "|---|---:|" + "---:|" * len(CATEGORIES)
    rows = [head, sep]
    for r in runs:
        sec = f"{r['seconds']:.1f}" if r.get("seconds") else ""
        label = f"[{r['label']}]({r['link']})" if r.get("link") else r["label"]
        rows.append(f"| {label} | {sec} | " + " | ".join(
            _pct(r["shares"].get(c, 0)) if r["shares"].get(c, 0) >= 0.0005 else "" for c in CATEGORIES) + " |")
    return "\n".join(rows) + "\n"


# -- charts ----------------------------------------------------------------------------


def stage_chart(runs: list[dict], path, title: str = "Share of time by stage (py-spy samples)",
                absolute: bool = False) -> Path | None:
    """Horizontal stacked bars, one per run (``label``, ``shares``; with ``absolute``,
    ``seconds`` split by the shares); PNG at ``path``. Returns None (and writes nothing)
    if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels = [r["label"] for r in runs]
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(runs) + 1.8))
    left = [0.0] * len(runs)
    longest = max((r.get("seconds") or 0) for r in runs) if absolute else 100
    for c in CATEGORIES:
        if absolute:
            vals = [(r.get("seconds") or 0) * r["shares"].get(c, 0) for r in runs]
        else:
            vals = [100 * r["shares"].get(c, 0) for r in runs]
        if not any(v > 0 for v in vals):
            continue
        ax.barh(labels, vals, left=left, color=COLOURS[c], label=c, edgecolor="white", linewidth=0.5)
        for i, v in enumerate(vals):
            if v >= 0.06 * longest:
                ax.text(left[i] + v / 2, i, f"{v:.0f} s" if absolute else f"{v:.0f}%", ha="center",
                        va="center", fontsize=8)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlim(0, longest * (1.02 if absolute else 1))
    ax.invert_yaxis()
    ax.set_xlabel("seconds of the profiled stage (under py-spy), split by stage share" if absolute
                  else "% of samples in the profiled stage")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(runs) < 3 else -0.18), ncol=3, fontsize=8,
              frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# -- flame graph -----------------------------------------------------------------------


class _Node:
    __slots__ = ("frame", "count", "children", "category")

    def __init__(self, frame):
        self.frame = frame
        self.count = 0
        self.children: dict = {}
        self.category: Counter | None = None


def flamegraph_svg(samples, path, title: str = "", min_fraction: float = 0.002, width: int = 1200) -> Path:
    """A static SVG flame graph of ``samples`` (root at the bottom), one box per function
    (lines merged), coloured by the stage most of its samples fall in, with the sample
    count, share and stage split in its tooltip.
    Frames narrower than ``min_fraction`` of the total are dropped."""
    cache: dict = {}
    root = _Node(None)
    for frames, n in samples:
        cat = categorise(frames, cache)
        node = root
        node.count += n
        for f in frames:
            f = Frame(f.name, f.file, 0, f.native)  # one box per function, not per line
            child = node.children.get(f)
            if child is None:
                child = node.children[f] = _Node(f)
                child.category = Counter()
            child.count += n
            child.category[cat] += n
            node = child
    total = max(root.count, 1)
    row = 16
    rects = []
    max_depth = 0

    def walk(node, x, depth):
        nonlocal max_depth
        for child in sorted(node.children.values(), key=lambda c: c.frame.label()):
            w = child.count / total
            if w >= min_fraction:
                max_depth = max(max_depth, depth)
                rects.append((x, depth, w, child))
                walk(child, x, depth + 1)
            x += w

    walk(root, 0.0, 0)
    pad_top, pad_side, legend_h = 40, 10, 22 * math.ceil(len(CATEGORIES) / 4) + 10
    plot_w = width - 2 * pad_side
    height = pad_top + (max_depth + 1) * row + legend_h + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="Verdana, sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="#ffffff"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>']
    base = pad_top + (max_depth + 1) * row
    for x, depth, w, node in rects:
        cat = node.category.most_common(1)[0][0]
        px, pw = pad_side + x * plot_w, w * plot_w
        py = base - (depth + 1) * row
        label = node.frame.label()
        shares = ", ".join(f"{c} {100 * k / node.count:.0f}%" for c, k in node.category.most_common(3))
        tip = f"{label}\n{node.count} samples, {100 * node.count / total:.2f}% of the stage\n{shares}"
        out.append(f'<g><title>{escape(tip)}</title>'
                   f'<rect x="{px:.2f}" y="{py}" width="{max(pw - 0.5, 0.1):.2f}" height="{row - 1}" '
                   f'fill="{COLOURS[cat]}" rx="1"/>')
        chars = int(pw / 6.6)
        if chars >= 3:
            text = label if len(label) <= chars else label[: chars - 2] + ".."
            out.append(f'<text x="{px + 2:.2f}" y="{py + row - 4}">{escape(text)}</text>')
        out.append("</g>")
    ly = base + 16
    for i, c in enumerate(CATEGORIES):
        lx = pad_side + (i % 4) * (plot_w / 4)
        yy = ly + (i // 4) * 22
        out.append(f'<rect x="{lx:.1f}" y="{yy}" width="14" height="14" fill="{COLOURS[c]}"/>'
                   f'<text x="{lx + 20:.1f}" y="{yy + 11}">{escape(c)}</text>')
    out.append("</svg>")
    path = Path(path)
    path.write_text("\n".join(out), encoding="utf-8")
    return path
