"""Host side: the summary of a ``mptcp-nvme matrix`` run (rows, matrix.md, matrix.png),
rendered from its matrix.json.

run.py runs the cells and writes matrix.json (document.py); this module only reads it (a reporter
never drives the run), so the report can be redrawn from a finished or resumed run
without a VM. The table has the seed table's shape and puts the seed's ratios next to
the measured ones: the links here are not the seed's 1000 Mbit/s, so the ratios are
what should match, not the MiB/s.
"""

import dataclasses
import math
import statistics
from pathlib import Path

from mptcp_nvme.host.matrix.document import IDENTITY, KINDS, identity, key
from mptcp_nvme.vocabulary import MULTIPATH, SCRIPT_IOPOLICIES, TRTYPES

BASELINE = "baseline"             # the kernel every other kernel is compared with
CALIBRATION_MIN = 0.95            # framework ÷ bare below this: the framework itself costs throughput
NONE = "—"

# (trtype, paths, iopolicy, loss) -> (READ MiB/s, WRITE MiB/s or None): 4 links at
# 1000 Mbit/s, from the series' thread. It has no loss-1 tcp numa row.
SEED = {
    ("tcp", 4, "numa", 0): (114, 114), ("mptcp", 4, "numa", 0): (445, 443),
    ("tcp", 4, "round-robin", 0): (456, 455), ("mptcp", 4, "round-robin", 0): (446, 445),
    ("tcp", 4, "queue-depth", 0): (456, 455), ("mptcp", 4, "queue-depth", 0): (446, 445),
    ("tcp", 4, "round-robin", 1): (106, 98.5), ("mptcp", 4, "round-robin", 1): (426, None),
    ("tcp", 4, "queue-depth", 1): (168, 128), ("mptcp", 4, "queue-depth", 1): (425, 414),
}


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: a cell of a non-baseline kernel, its repeats reduced
    (medians and (min, max) spreads in MiB/s, over the passed repeats) and its ratios."""
    kernel: str
    kind: str                           # fabric, bare or raw
    label: str
    trtype: str | None
    paths: int | None
    multipath: str | None               # native, dm (iopolicy is then the path selector)
    iopolicy: str | None
    loss: int
    tls: bool
    sampled: bool                       # tcp_info sampled (--sampling-cost: a twin without)
    runs: int                           # repeats recorded
    n: int                              # repeats passed
    status: str                         # "ok" (≥1 passed), else "failed" or "skipped"
    reason: str | None                  # the first failed (else skipped) repeat's reason
    read: float | None
    write: float | None
    read_spread: tuple | None
    write_spread: tuple | None
    efficiency: float | None            # READ ÷ capacity of the usable links
    ratio_raw: float | None             # READ ÷ READ of the raw cell
    ratio_tcp_numa: float | None
    ratio_vs_tcp: float | None          # mptcp cells only
    seed_ratio_tcp_numa: float | None
    seed_ratio_vs_tcp: float | None
    calib_read: float | None            # fabric ÷ bare
    calib_write: float | None
    base_read: float | None             # the baseline kernel's same cell
    base_write: float | None
    base_read_spread: tuple | None
    base_write_spread: tuple | None
    delta_read: float | None            # (main - baseline) ÷ baseline
    verdict: str | None                 # "regression", "improvement" or "within noise"

    @property
    def calibration(self):
        """The worse of READ and WRITE calibration; None without a bare cell."""
        values = [v for v in (self.calib_read, self.calib_write) if v is not None]
        return min(values) if values else None


def mib_per_s(mbit):
    return mbit * 1e6 / 8 / 2**20


def measure(cell):
    """The cell's repeats as Row fields: runs, n, status, reason, medians and spreads."""
    runs = cell["runs"]
    passed = [run for run in runs if run["status"] == "passed"]
    others = [run for run in runs if run["status"] != "passed"]
    failed = [run for run in others if run["status"] != "skipped"]
    fields = {"runs": len(runs), "n": len(passed),
              "status": "ok" if passed else "failed" if failed else "skipped",
              "reason": (failed or others)[0].get("reason") if others else None}
    if not runs:
        fields["reason"] = "no repeat recorded"
    for name in ("read", "write"):
        values = [run[f"{name}_mib"] for run in passed if run.get(f"{name}_mib") is not None]
        fields[name] = statistics.median(values) if values else None
        fields[f"{name}_spread"] = (min(values), max(values)) if values else None
    return fields


def capacity(cell):
    """MiB/s of the links the cell can use: all of them for mptcp, else ``usable_links``."""
    rates = cell["link_rate_mbit"] or []
    if cell["trtype"] != "mptcp":
        rates = rates[:cell["usable_links"] or 0]
    return mib_per_s(sum(rates)) if rates else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def _seed_read(trtype, paths, iopolicy, loss):
    return (SEED.get((trtype, paths, iopolicy, loss)) or (None,))[0]


def _width(spread):
    return spread[1] - spread[0] if spread else 0


def compare(main, base):
    """(relative READ change, verdict) of two measure()s: a regression or improvement
    only when the change exceeds the larger min–max spread of the two."""
    if not base or main["read"] is None or not base["read"]:
        return None, None
    change = main["read"] - base["read"]
    if abs(change) <= max(_width(main["read_spread"]), _width(base["read_spread"])):
        return change / base["read"], "within noise"
    return change / base["read"], "regression" if change < 0 else "improvement"


def summarize(doc):
    """One Row per cell of every non-baseline kernel, in the seed table's order."""
    measured = {key(cell): measure(cell) for cell in doc["cells"]}

    def other(cell, **changes):           # another cell's measure(), {} when absent
        return measured.get(key(cell, **changes), {})

    rows = []
    for cell in (c for c in doc["cells"] if c["kernel"] != BASELINE):
        own, kind, trtype = measured[key(cell)], cell["kind"], cell["trtype"]
        numa = other(cell, trtype="tcp", multipath="native", iopolicy="numa") if kind != "raw" else {}
        raw = other(cell, kind="raw", trtype=None, paths=None, multipath=None, iopolicy=None,
                    loss=0, tls=False, sampled=True) if kind != "raw" else {}
        multipath = identity(cell, "multipath")
        tcp = other(cell, trtype="tcp") if trtype == "mptcp" else {}
        bare = other(cell, kind="bare", sampled=True) if kind == "fabric" else {}
        base = other(cell, kernel=BASELINE)
        paths, iopolicy, loss = cell["paths"], cell["iopolicy"], cell["loss"]
        seed = _seed_read(trtype, paths, iopolicy, loss) if multipath == "native" else None
        delta, verdict = compare(own, base)
        rows.append(Row(
            **{f: identity(cell, f) for f in IDENTITY}, label=cell["label"], **own,
            efficiency=_ratio(own["read"], capacity(cell)) if kind != "raw" else None,
            ratio_raw=_ratio(own["read"], raw.get("read")),
            ratio_tcp_numa=_ratio(own["read"], numa.get("read")),
            ratio_vs_tcp=_ratio(own["read"], tcp.get("read")),
            seed_ratio_tcp_numa=_ratio(seed, _seed_read("tcp", paths, "numa", loss)),
            seed_ratio_vs_tcp=_ratio(seed, _seed_read("tcp", paths, iopolicy, loss))
            if trtype == "mptcp" and seed else None,
            calib_read=_ratio(own["read"], bare.get("read")),
            calib_write=_ratio(own["write"], bare.get("write")),
            **{f"base_{f}": base.get(f) for f in ("read", "write", "read_spread", "write_spread")},
            delta_read=delta, verdict=verdict))
    return sorted(rows, key=order)


def _rank(value, known):
    return (known.index(value), "") if value in known else (len(known), str(value))


def order(row):
    """Fabric, bare, raw; then loss, native multipath before dm, iopolicy (numa,
    round-robin, queue-depth, others) or selector, paths and tls, tcp before mptcp: each
    mptcp cell right after its tcp cell."""
    return (KINDS.index(row.kind), row.kernel, row.loss or 0, _rank(row.multipath, MULTIPATH),
            _rank(row.iopolicy, SCRIPT_IOPOLICIES), row.paths or 0, bool(row.tls),
            _rank(row.trtype, TRTYPES), not row.sampled, row.label)


def _num(value):
    return NONE if value is None else f"{value:.2f}"


def _pct(value):
    return NONE if value is None else f"{value:.1%}"


def _span(median, spread):
    if median is None:
        return NONE
    if not spread or spread[0] == spread[1]:
        return f"{median:.1f}"
    return f"{median:.1f} ({spread[0]:.1f}–{spread[1]:.1f})"


def _name(row, several_kernels):
    return f"{row.kernel}: {row.label}" if several_kernels else row.label


def _run_column(row, several_kernels):
    name = _name(row, several_kernels)
    reason = " ".join(str(row.reason or "").split()).replace("|", "\\|")
    if row.status != "ok":
        return f"{name} — **{row.status}**: {reason or 'no reason given'}"
    return f"{name} ({row.n}/{row.runs} passed: {reason})" if row.n < row.runs else name


def title(doc):
    kernels = doc["kernels"]
    main = ", ".join(info.get("release", name) for name, info in kernels.items() if name != BASELINE)
    base = f" vs baseline {kernels[BASELINE].get('release', BASELINE)}" if BASELINE in kernels else ""
    return f"# mptcp-nvme matrix: {main}{base} ({str(doc.get('created', ''))[:10]})"


def settings_line(doc):
    s, loss = doc["settings"], doc["settings"].get("loss") or {}
    text = f"{s['rate_mbit']:g} Mbit/s per link, fio {s['runtime_s']} s per job, {s['repeat']} repeats"
    parts = [f"{loss['delay_ms']} ms delay" if loss.get("delay_ms") is not None else "",
             f"{loss['loss_pct']} % loss" if loss.get("loss_pct") is not None else "",
             loss.get("note") or "",
             f"on the last {s['loss_links']} link(s) only" if s.get("loss_links") else ""]
    if any(parts):
        text += "; loss cells: " + ", ".join(p for p in parts if p)
    return text + (f"; topology {s['topology']}" if s.get("topology") else "") + "."


LEGEND = [
    "- run: the script's arguments (trtype paths iopolicy loss); dm:<selector>: native "
    "multipath off, dm-multipath over the paths with that path selector; bond:<mode>: one "
    "controller on a Linux bond of every link per side in that bonding mode; bare: the same fio "
    "job from a plain shell; raw: fio on the backing device, no fabric.",
    "- READ/WRITE: median over the passed repeats (min–max).",
    "- eff.: READ ÷ (usable links × link rate): mptcp uses all links, tcp numa 1, tcp with "
    "another iopolicy `paths`.",
    "- ÷ raw: READ as a share of the raw cell's (on rate-limited links it is small by "
    "design; at --rate 1000mbit, where the guest's CPU is the bottleneck, it is the "
    "fabric's and the multipath layer's cost). ÷ tcp numa: READ ÷ READ of tcp numa (native) with "
    "the same paths and loss; mptcp ÷ tcp: READ ÷ READ of tcp with the same iopolicy. seed: the same ratio in the seed table (4 links at "
    "1000 Mbit/s): the ratios should match, not the MiB/s.",
    f"- calib.: framework ÷ bare (the worse of READ and WRITE); the framework must reach "
    f"≥ {CALIBRATION_MIN}, bold below.",
]
BASELINE_LEGEND = ("- Δ READ: (main − baseline) ÷ baseline; a regression or improvement only "
                   "when the change exceeds the larger min–max spread of the two.")


def markdown(doc, rows):
    """matrix.md: title, settings, the table in the seed table's shape, a legend."""
    with_base = BASELINE in doc["kernels"]
    several = len({row.kernel for row in rows}) > 1
    head = ["run", "READ MiB/s", "WRITE MiB/s", "eff.", "÷ raw", "÷ tcp numa", "seed",
            "mptcp ÷ tcp", "seed", "calib."] + (["baseline READ", "Δ READ"] if with_base else [])
    lines = [title(doc), "", settings_line(doc), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        calib = _num(row.calibration)
        if row.calibration is not None and row.calibration < CALIBRATION_MIN:
            calib = f"**{calib}**"
        cols = [_run_column(row, several), _span(row.read, row.read_spread),
                _span(row.write, row.write_spread), _num(row.efficiency),
                _pct(row.ratio_raw), _num(row.ratio_tcp_numa), _num(row.seed_ratio_tcp_numa), _num(row.ratio_vs_tcp),
                _num(row.seed_ratio_vs_tcp), calib]
        if with_base:
            delta = NONE if row.delta_read is None else f"{row.delta_read:+.1%} {row.verdict}"
            cols += [_span(row.base_read, row.base_read_spread), delta]
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines + [""] + LEGEND + ([BASELINE_LEGEND] if with_base else [])
                     + sampling_section(rows) + transport_section(doc)) + "\n"


def sampling_costs(rows):
    """[(sampled row, its unsampled twin, READ cost, WRITE cost)] of the cells measured
    both ways (--sampling-cost): cost = 1 − sampled ÷ unsampled (medians)."""
    unsampled = lambda row: tuple(getattr(row, f) for f in IDENTITY if f != "sampled")
    twins = {unsampled(r): r for r in rows if not r.sampled}
    found = []
    for row in (r for r in rows if r.sampled):
        twin = twins.get(unsampled(row))
        if twin:
            cost = lambda a, b: 1 - a / b if a is not None and b else None
            found.append((row, twin, cost(row.read, twin.read), cost(row.write, twin.write)))
    return found


def sampling_section(rows):
    """matrix.md's tcp_info sampling cost: each cell sampled and not, side by side, and
    the largest cost; no lines without --sampling-cost."""
    found = sampling_costs(rows)
    if not found:
        return []
    worst = max((c for _, _, *costs in found for c in costs if c is not None), default=None)
    lines = ["", "### tcp_info sampling cost", "",
             f"Every 100 ms sampling of each queue connection's tcp_info (sock_diag) cost "
             f"at most {_pct(worst)} of a cell's median READ or WRITE, over {len(found)} "
             "cell(s) measured with and without it in this run (negative: the sampled "
             "repeats were faster, within the noise).", "",
             "| run | READ sampled | READ unsampled | cost | WRITE sampled | WRITE unsampled "
             "| cost |", "|---|---|---|---|---|---|---|"]
    for row, twin, read_cost, write_cost in found:
        lines.append(f"| {row.label} | {_span(row.read, row.read_spread)} | "
                     f"{_span(twin.read, twin.read_spread)} | {_pct(read_cost)} | "
                     f"{_span(row.write, row.write_spread)} | "
                     f"{_span(twin.write, twin.write_spread)} | {_pct(write_cost)} |")
    return lines


def link_share(link, found):
    """A link's share of the bytes acknowledged over every link of one run's direction."""
    total = sum(other["bytes_acked"] for other in found.values())
    return link["bytes_acked"] / total if total else None


def link_retransmits(link, found):
    """A link's retransmissions per MiB acknowledged in one run's direction."""
    mib = link["bytes_acked"] / 2**20
    return link["retransmits"] / mib if mib else None


def link_median(per_run, name, value):
    """The median over the runs ({link: LinkTransport dict} each) of value(link, run) for
    link ``name``, where the run has it and the value exists; None without one."""
    values = [v for found in per_run if name in found
              if (v := value(found[name], found)) is not None]
    return statistics.median(values) if values else None


def transport_section(doc):
    """matrix.md's per-link transport table: for each cell whose runs sampled tcp_info
    (guest/net/transport.py), each direction and link, the link's share of the bytes its
    sender had acknowledged, retransmissions per MiB, and the median cwnd and srtt
    (medians over the passed runs); no lines when no run sampled."""
    rows = []
    for cell in doc["cells"]:
        sampled = [run["transport"] for run in cell.get("runs", ())
                   if run.get("status") == "passed" and run.get("transport")]
        for direction in ("read", "write"):
            per_run = [found[direction] for found in sampled if direction in found]
            if not per_run:
                continue
            links = sorted({name for found in per_run for name in found})

            median_of = lambda name, value: link_median(per_run, name, value)
            cols = [f"{name} {_pct(median_of(name, link_share))}, "
                    f"{_num(median_of(name, link_retransmits))}/MiB, cwnd "
                    f"{_num(median_of(name, lambda link, _: link['cwnd_median']))}, "
                    f"srtt {_num(median_of(name, lambda link, _: link['srtt_median_ms']))} ms"
                    for name in links]
            rows.append(f"| {cell.get('label') or key(cell)} | {direction} | {len(per_run)} | "
                        + "; ".join(cols) + " |")
    if not rows:
        return []
    return ["", "### Transport per link (tcp_info, the sender's side)", "",
            "| run | direction | runs | per link: share of the bytes, retransmissions per "
            "MiB, median cwnd, median srtt |", "|---|---|---|---|", *rows]


def chart(doc, rows, path):
    """matrix.png: READ/WRITE medians per fabric and raw cell with min–max error bars,
    baseline bars hatched, the widest topology's capacity dashed. The y axis fits the
    fabric cells: a faster raw device is cut off and labelled with its value."""
    from matplotlib.figure import Figure     # only the chart needs matplotlib

    shown = [row for row in rows if row.kind in ("fabric", "raw")]
    series = [("READ", "read", "tab:blue", None), ("WRITE", "write", "tab:orange", None)]
    if BASELINE in doc["kernels"]:
        series += [("baseline READ", "base_read", "lightsteelblue", "//"),
                   ("baseline WRITE", "base_write", "navajowhite", "//")]
    links = max((c["link_rate_mbit"] or [] for c in doc["cells"] if c["kernel"] != BASELINE),
                key=len, default=[])
    highs = [spread[1] for row in shown if row.kind == "fabric" for _, field, _, _ in series
             if (spread := getattr(row, f"{field}_spread"))]
    top = 1.15 * max(highs + [mib_per_s(sum(links))]) if highs or links else None
    fig = Figure(figsize=(max(8, 0.9 * len(shown)), 5))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for index, (name, field, color, hatch) in enumerate(series):
        xs = [g + (index - (len(series) - 1) / 2) * width for g in range(len(shown))]
        heights = [math.nan if getattr(row, field) is None else getattr(row, field) for row in shown]
        spreads = [getattr(row, f"{field}_spread") or (math.nan, math.nan) for row in shown]
        errors = [[h - lo for h, (lo, _) in zip(heights, spreads)],
                  [hi - h for h, (_, hi) in zip(heights, spreads)]]
        ax.bar(xs, heights, width, yerr=errors, capsize=2, label=name, color=color,
               hatch=hatch, edgecolor="grey" if hatch else None)
        for x, height in zip(xs, heights):
            if top and height > top:
                ax.text(x, top, f"{height:.0f} ", rotation=90, ha="center", va="top",
                        fontsize=7, color="white")
    for g, row in enumerate(shown):
        if row.status != "ok":
            ax.text(g, 0, row.status, rotation=90, ha="center", va="bottom", fontsize=8)
    if links:
        rate = f"{links[0]:g} Mbit/s" if len(set(links)) == 1 else "rate"
        ax.axhline(mib_per_s(sum(links)), linestyle="--", color="grey",
                   label=f"{len(links)} links × {rate}")
    several = len({row.kernel for row in shown}) > 1
    ax.set_xticks(range(len(shown)), [_name(row, several) for row in shown],
                  rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.5, max(len(shown), 1) - 0.5)
    if top:
        ax.set_ylim(0, top)
    ax.set_ylabel("MiB/s")
    ax.set_title(f"{title(doc).lstrip('# ')}, {doc['settings']['rate_mbit']:g} Mbit/s per link")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    return path


def headline(rows):
    """The ratio that justifies the series, in a few words ('mptcp 4-path numa 3.8x tcp'):
    the mptcp cell over most paths without loss, numa first, beside tcp on the same paths
    and iopolicy; None when the matrix has no such pair."""
    pairs = [r for r in rows if r.kind == "fabric" and r.trtype == "mptcp" and not r.loss
             and not r.tls and r.multipath == "native" and r.ratio_vs_tcp is not None]
    if not pairs:
        return None
    best = max(pairs, key=lambda r: (r.paths or 0, r.iopolicy == "numa"))
    return f"mptcp {best.paths}-path {best.iopolicy} {best.ratio_vs_tcp:.1f}x tcp"


def regressions(rows):
    """'label -12%' of every cell whose READ fell beyond the repeats' spread against the
    baseline kernel."""
    return [f"{r.label} {r.delta_read:+.0%}" for r in rows if r.verdict == "regression"]


def write_outputs(doc, folder):
    """matrix.md and matrix.png in ``folder`` (next to matrix.json): their paths."""
    folder = Path(folder)
    rows = summarize(doc)
    md_path, png_path = folder / "matrix.md", folder / "matrix.png"
    md_path.write_text(markdown(doc, rows))
    chart(doc, rows, png_path)
    return md_path, png_path
