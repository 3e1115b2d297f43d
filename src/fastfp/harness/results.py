"""asv's results as a table: ``summary.md`` and a plot of time against frames.

What each benchmark is comes from asv's own ``benchmarks.json`` (written by every
``asv run``): its type (``time``, ``memory``, ``track``), parameter names and
``pretty_name``, a label in which ``{name}`` stands for a parameter's value (a boolean
reads "with" / "without"). Parameters named ``backend`` give the table's columns,
``frames`` or ``atoms`` its size column. A ``memory`` benchmark named
``peakmem_reference`` is the baseline of its class's other ``peakmem_`` benchmark
(the same process idle after the same setup). Why a benchmark was skipped is what its
setup recorded when it skipped (``FASTFP_BENCH_SKIPS``, see ``benchmarks/common.py``).
"""

from __future__ import annotations

import ast
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .backends import BACKENDS

SIZE_PARAMS = ("frames", "atoms")
REFERENCE = "peakmem_reference"
#: a time row whose spread (± half the interquartile range of its samples, relative to
#: the median, in %) is above this is noisy
MAX_SPREAD = 10.0


@dataclass
class Measurement:
    """One benchmark at one parameter combination, from asv's results."""

    name: str  # module.Class.method
    kind: str  # "time", "memory" (asv's peakmemory too) or "track"
    label: str
    size: str  # "100 frames", "500 atoms" or ""
    backend: str | None
    value: float | None  # seconds, bytes or a ratio; None: skipped or failed
    q25: float | None = None
    q75: float | None = None
    samples: int | None = None
    skipped: str | None = None  # the reason its setup recorded
    params: tuple = ()
    unit: str = ""  # of a ratio: what it divides (asv's ``unit``)

    @property
    def owner(self) -> str:
        """``module.Class``: the benchmarks of one class share setup and skip reasons."""
        return self.name.rsplit(".", 1)[0]

    @property
    def spread(self) -> float | None:
        """± half the interquartile range of the samples relative to the median, in %;
        None without a value or with fewer than two samples."""
        if not self.value or not self.samples or self.samples < 2 or self.q25 is None or self.q75 is None:
            return None
        return 50 * (self.q75 - self.q25) / self.value

    @property
    def noisy(self) -> bool:
        """A time whose spread is above :data:`MAX_SPREAD`."""
        return self.spread is not None and self.spread > MAX_SPREAD


def needs_samples(m: Measurement, budget: float) -> bool:
    """Whether time row ``m`` should take more samples: it is noisy or has one sample,
    and its samples so far took less than ``budget`` seconds."""
    if m.kind != "time" or m.value is None:
        return False
    return (m.noisy or m.spread is None) and (m.samples or 1) * m.value < budget


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def label(pretty_name: str, params: dict) -> str:
    """``pretty_name`` with ``{name}`` replaced by parameter values (booleans read
    "with" / "without")."""
    shown = {k: ("with" if v else "without") if isinstance(v, bool) else v for k, v in params.items()}
    return pretty_name.format(**shown)


def load(results_dir: Path, machine: str, sha: str) -> tuple[dict, dict]:
    """``(benchmarks.json, results of sha)`` from an asv results folder (the newest
    results file of ``sha`` on ``machine``). Raises ``FileNotFoundError``."""
    results_dir = Path(results_dir)
    files = sorted((results_dir / machine).glob(f"{sha[:8]}-*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no asv results for {sha[:8]} in {results_dir / machine} "
                                "(did asv run any benchmark?)")
    return json.loads((results_dir / "benchmarks.json").read_text()), json.loads(files[-1].read_text())


def read_skips(path) -> dict:
    """``{(module.Class, params as asv writes them): reason}`` from a skip file."""
    out = {}
    if path is None or not Path(path).is_file():
        return out
    for line in Path(path).read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            out[(entry["benchmark"], tuple(entry["params"]))] = entry["reason"]
    return out


def measurements(benchmarks: dict, results: dict, skips: dict | None = None,
                 since: float | None = None) -> list[Measurement]:
    """One :class:`Measurement` per benchmark and parameter combination of ``results``;
    with ``since`` (a Unix time) only benchmarks run from then on (asv keeps older
    results of the same commit)."""
    skips = skips or {}
    columns = results.get("result_columns", ["result", "params"])
    out = []
    for name, row in results.get("results", {}).items():
        meta = benchmarks.get(name)
        if meta is None:
            continue
        entry = dict(zip(columns, row))
        if since is not None and entry.get("started_at") is not None and entry["started_at"] < since * 1000 - 1:
            continue
        grid = entry.get("params") or []
        combos = list(itertools.product(*grid)) if grid else [()]

        def column(key):
            values = entry.get(key)
            return values if isinstance(values, list) else [values] * len(combos)

        values, q25, q75, repeats = (column(k) for k in ("result", "stats_q_25", "stats_q_75", "stats_repeat"))
        for k, combo in enumerate(combos):
            params = dict(zip(meta["param_names"], (_value(p) for p in combo)))
            value = values[k] if k < len(values) else None
            if isinstance(value, float) and math.isnan(value):
                value = None
            size = next((f"{params.pop(p)} {p}" for p in SIZE_PARAMS if p in params), "")
            backend = params.pop("backend", None)
            owner = name.rsplit(".", 1)[0]
            out.append(Measurement(
                name=name, kind="memory" if meta["type"] in ("memory", "peakmemory") else meta["type"], label=label(meta.get("pretty_name") or name, params), size=size,
                backend=backend, value=value, q25=q25[k] if k < len(q25) else None,
                q75=q75[k] if k < len(q75) else None, samples=repeats[k] if k < len(repeats) else None,
                skipped=skips.get((owner, tuple(combo))), params=tuple(combo), unit=meta.get("unit", "")))
    return out


@dataclass
class Table:
    """Rows ``(label, size)`` with a cell per backend, and the in-process ratios."""

    rows: dict = field(default_factory=dict)  # (label, size) -> {backend: {"time": m, "memory": m, "delta": b}}
    ratios: list = field(default_factory=list)  # Measurements of kind "track"
    backends: list = field(default_factory=list)


def table(ms: list[Measurement]) -> Table:
    """Group measurements into rows (see :class:`Table`), in the order asv listed them."""
    out = Table()
    reference = {(m.owner, m.params): m.value for m in ms if m.name.endswith(REFERENCE) and m.value is not None}
    for m in ms:
        if m.kind == "track":
            out.ratios.append(m)
            continue
        if m.name.endswith(REFERENCE):
            continue
        cell = out.rows.setdefault((m.label, m.size), {}).setdefault(m.backend, {})
        cell[m.kind] = m
        base = reference.get((m.owner, m.params))
        if m.kind == "memory" and m.value is not None and base is not None:
            cell["delta"] = m.value - base
        if m.backend is not None and m.backend not in out.backends:
            out.backends.append(m.backend)
    out.backends.sort(key=lambda b: BACKENDS.index(b) if b in BACKENDS else len(BACKENDS))
    return out


# -- formatting ------------------------------------------------------------------------


def fmt_time(t) -> str:
    if t is None:
        return "–"
    if t >= 100:
        return f"{t:.0f} s"
    if t >= 1:
        return f"{t:.2f} s"
    return f"{t * 1e3:.1f} ms"


def fmt_bytes(b) -> str:
    if b is None:
        return ""
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def time_cell(m: Measurement) -> str:
    """Median time, then ± half the interquartile range relative to the median and the
    number of samples (**noisy** when that is above :data:`MAX_SPREAD`), or the reason
    there is no time."""
    if m.value is None:
        return m.skipped or "failed (see asv's output)"
    text = fmt_time(m.value)
    if m.spread is not None:
        return f"{text} ±{m.spread:.0f}% (n={m.samples})" + (" **noisy**" if m.noisy else "")
    return f"{text} (1 sample)"


def summary_markdown(t: Table, header: dict, notes: list[str] = ()) -> str:
    """The markdown summary: header, then :func:`summary_body`."""
    lines = ["# fastfp bench summary", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()] + [""]
    return "\n".join(lines + summary_body(t, notes)) + "\n"


def summary_body(t: Table, notes: list[str] = ()) -> list[str]:
    """The summary's lines after its header: notes, the stage table, what was not run and
    why, the in-process ratios, the roofline."""
    lines = []
    for note in notes:
        lines += [note, ""]
    lines += ["Time: asv's median over the samples, ± half their interquartile range relative to the median, "
              f"n the number of samples; **noisy**: a spread still above ±{MAX_SPREAD:.0f}% when the row's "
              "sampling budget was spent. Peak memory: the benchmark process's peak resident set, with in "
              "brackets its increase over the same process idle after the same setup (`peakmem_reference`). "
              "Speed-up: AMPTorch time / time.", ""]
    def measured(b, kinds=("time", "memory")):
        return any(cells.get(b, {}).get(k) is not None and cells[b][k].value is not None
                   for cells in t.rows.values() for k in kinds)

    # a backend without any number has no column (the notes say why)
    backends = [b for b in t.backends if measured(b)]
    memory = [b for b in backends if measured(b, ("memory",))]
    compare = "amptorch" in backends and len(backends) > 1
    head = ["stage", "size"] + [f"{b} time" for b in backends] + [f"{b} peak memory" for b in memory]
    if compare:
        head += [f"{b} speed-up" for b in backends if b != "amptorch"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    skipped: dict = {}
    for (label_, size), cells in t.rows.items():
        found = {b: [m for m in (cells.get(b, {}).get("time"), cells.get(b, {}).get("memory")) if m is not None]
                 for b in backends}
        if all(m.value is None for ms in found.values() for m in ms):  # the whole row skipped: listed below
            reasons = {b: next((m.skipped for m in ms if m.skipped), "failed (see asv's output)")
                       for b, ms in found.items() if ms}
            reason = (next(iter(reasons.values())) if len(set(reasons.values())) == 1
                      else "; ".join(f"{b}: {r}" for b, r in reasons.items()))
            skipped.setdefault((label_, reason), []).append(size)
            continue
        row = [label_, size]
        for b in backends:
            m = cells.get(b, {}).get("time")
            row.append(time_cell(m) if m is not None else "")
        for b in memory:
            m = cells.get(b, {}).get("memory")
            text = "" if m is None else fmt_bytes(m.value) if m.value is not None else time_cell(m)
            if cells.get(b, {}).get("delta") is not None:
                text += f" (+{fmt_bytes(max(cells[b]['delta'], 0))})"
            row.append(text)
        if compare:
            ta = cells.get("amptorch", {}).get("time")
            for b in backends:
                if b != "amptorch":
                    tb = cells.get(b, {}).get("time")
                    ok = ta is not None and tb is not None and ta.value and tb.value
                    row.append(f"{ta.value / tb.value:.1f}×" if ok else "–")
        lines.append("| " + " | ".join(row) + " |")
    if skipped:
        lines += ["", "Not run:", ""]
        lines += [f"- {label_} ({', '.join(s for s in sizes if s)}): {reason}"
                  for (label_, reason), sizes in skipped.items()]
    ran = [m for m in t.ratios if m.value is not None and not m.name.startswith(ROOFLINE)]
    if ran:
        lines += ["", "Ratios of two times measured in one process (asv `track_`):", "",
                  "| ratio | size | value | of |", "|---|---|---|---|"]
        lines += [f"| {m.label} | {m.size} | {_ratio_text(m)} | {m.unit} |" for m in ran]
    lines += roofline_lines([m for m in t.ratios if m.name.startswith(ROOFLINE)])
    reasons = sorted({m.skipped for m in t.ratios if m.value is None and m.skipped})
    if reasons:
        lines += ["", "In-process ratios not measured: " + "; ".join(reasons) + "."]
    return lines


#: the asv benchmark of the kernels' roofline (``benchmarks/roofline.py``)
ROOFLINE = "roofline.Roofline."


def roofline_lines(ms: list[Measurement]) -> list[str]:
    """The roofline's shares (``benchmarks/roofline.py``, parameters kernel, threads,
    frames) as a markdown table, a row per kernel and size, a column per threads; no
    lines without a measured share."""
    cells: dict = {}
    for m in ms:
        if m.value is not None:
            kernel, threads = (_value(p) for p in m.params[:2])
            cells.setdefault((kernel, m.size), {})[threads] = f"{100 * m.value:.0f}%"
    if not cells:
        return []
    lines = ["", "Roofline (asv `track_`, `benchmarks/roofline.py`): each kernel's time at the roof that binds it "
             "(flops, memory or exp) / its measured time; 100% is a kernel at its roof (README, 'Roofline').", "",
             "| kernel | size | one thread | default threads |", "|---|---|---|---|"]
    lines += [f"| {kernel} | {size} | {row.get('one', '–')} | {row.get('default', '–')} |"
              for (kernel, size), row in cells.items()]
    return lines


def _ratio_text(m: Measurement) -> str:
    """A ratio as ``1.23×``, a share (its unit ``share of ...``) as ``12%``."""
    return f"{100 * m.value:.0f}%" if m.unit.startswith("share") else f"{m.value:.2f}×"


#: the stages plotted against frames, one panel each
PLOTTED = ("featurize gmpordernorm without derivatives", "featurize gmpordernorm with derivatives",
           "end-to-end preprocessing", "training epoch", "training epoch on the fly")


def why_not_measured(t: Table, stage: str) -> str:
    """Why no time of ``stage`` against frames was measured: the reasons its rows
    recorded for the backends that measured something else (for all, if none did), or
    that no benchmark of it ran."""
    measured = {b for cells in t.rows.values() for b, cell in cells.items()
                if cell.get("time") is not None and cell["time"].value is not None}
    reasons: dict = {}
    for (label_, size), cells in t.rows.items():
        if label_ == stage and size.endswith("frames"):
            for b, cell in cells.items():
                m = cell.get("time")
                if m is not None and m.value is None and (b in measured or not measured):
                    reasons.setdefault(m.skipped or "failed (see asv's output)", {})[b] = None
    if not reasons:
        return "no benchmark of this stage ran"
    if len(reasons) == 1:
        return next(iter(reasons))
    return "\n".join(f"{', '.join(bs)}: {r}" for r, bs in reasons.items())


def plot_time_vs_frames(t: Table, path: Path, title: str = "") -> Path:
    """Log-log time against frames, one panel per stage of :data:`PLOTTED`, one line
    per backend, bars from the first to the third quartile of the samples; a panel with
    no time says why. PNG at ``path``."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, (len(PLOTTED) + 1) // 2, figsize=(4.75 * ((len(PLOTTED) + 1) // 2), 7.5),
                             squeeze=False)
    for ax in axes.ravel()[len(PLOTTED):]:
        ax.set_axis_off()
    styles = {"amptorch": ("tab:red", "s"), "fastfp": ("tab:blue", "o"), "cupy": ("tab:green", "^")}
    for ax, stage in zip(axes.ravel(), PLOTTED):
        drawn = False
        for b in t.backends:
            points = sorted((int(size.split()[0]), cells[b]["time"])
                            for (label_, size), cells in t.rows.items()
                            if label_ == stage and size.endswith("frames")
                            and cells.get(b, {}).get("time") is not None and cells[b]["time"].value is not None)
            if points:
                drawn = True
                color, marker = styles.get(b, (None, "o"))
                values = [m.value for _, m in points]
                # asv rounds its quartiles: one sample's may lie just inside its value
                low = [max(m.value - m.q25, 0.0) if m.q25 is not None else 0 for _, m in points]
                high = [max(m.q75 - m.value, 0.0) if m.q75 is not None else 0 for _, m in points]
                ax.errorbar([n for n, _ in points], values, yerr=[low, high], marker=marker, color=color,
                            capsize=3, label=b)
        ax.set_title(stage, fontsize=10)
        ax.set_xlabel("frames")
        ax.set_ylabel("time (s)")
        if drawn:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.legend()
            ax.grid(True, which="both", alpha=0.3)
        else:
            reason = "\n".join(textwrap.fill(line, 45) for line in why_not_measured(t, stage).splitlines())
            ax.text(0.5, 0.5, f"not measured:\n{reason}", ha="center", va="center", transform=ax.transAxes,
                    fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
