"""``mptcp-nvme report DIR...``: the series' reviewers' questions answered from what
``matrix`` and the fault cases measured, as report.md and report.html.

Each folder holds a matrix.json (``mptcp-nvme matrix``) or a faults.json (a run of
selftests/test_faults.py), or both. Every question gets a section: the answer in
sentences that each carry their figure, the table it rests on, and the kernel, rate,
repeats and topology it was measured with; a question the folders hold no cells for
says which matrix axes would answer it, never a sentence without a number.

The questions (README, "Bonding, and why, from tcp_info"):
1. native NVMe multipath (round-robin, queue-depth) against MPTCP;
2. what a Linux bond of the links gives, without an NVMe change (bond cells, bond faults);
3. why MPTCP shrugs off loss: loss on every link and on some (--loss-links), with the
   retransmissions and the share of bytes the lossy links carried (tcp_info);
4. how much comes from the subflow layout or the scheduler (axes not in matrix yet);
5. the write-direction gap: WRITE against READ, per link, from the counters.
"""

import json
import statistics
from pathlib import Path

from mptcp_nvme.errors import UsageError
from mptcp_nvme.host.matrix import document, report
from mptcp_nvme.host.results import faults_report

NONE = "—"


def load(folders):
    """[(folder, matrix.json document)], [(folder, faults.json outcomes)] of the folders;
    UsageError (one line) for a folder with neither or an unreadable file."""
    matrices, faults = [], []
    for folder in map(Path, folders):
        matrix, fault = folder / "matrix.json", folder / "faults.json"
        if not folder.is_dir():
            raise UsageError(f"{folder}: not a folder")
        if not matrix.is_file() and not fault.is_file():
            raise UsageError(f"{folder}: no matrix.json nor faults.json (a results folder of "
                             "'mptcp-nvme matrix' or of a run of the fault cases)")
        if matrix.is_file():
            matrices.append((folder, document.load(matrix)))
        if fault.is_file():
            try:
                outcomes = json.loads(fault.read_text())
            except (OSError, ValueError) as err:
                raise UsageError(f"{fault}: not a faults.json ({err})") from None
            if not isinstance(outcomes, list):
                raise UsageError(f"{fault}: not a faults.json (a list of outcomes)")
            faults.append((folder, outcomes))
    return matrices, faults


class Measured:
    """The rows (report.summarize) of every matrix folder, with their cells' runs."""

    def __init__(self, matrices):
        self.rows = []              # (folder, doc, Row, cell)
        for folder, doc in matrices:
            for row in report.summarize(doc):
                cell = next(c for c in doc["cells"] if c["label"] == row.label
                            and c["kernel"] == row.kernel)
                self.rows.append((folder, doc, row, cell))

    def fabric(self, **wanted):
        """(doc, Row, cell) of the measured fabric cells whose Row fields match ``wanted``."""
        return [(doc, row, cell) for _, doc, row, cell in self.rows
                if row.kind == "fabric" and row.status == "ok" and row.sampled
                and all(getattr(row, k) == v for k, v in wanted.items())]


def _mib(value):
    return NONE if value is None else f"{value:.1f}"


def _x(value):
    return NONE if value is None else f"{value:.2f}x"


def _ratio(a, b):
    return a / b if a is not None and b else None


def _where(doc):
    """The kernel, rate, repeats, runtime and topology of a matrix document, a line."""
    kernels = ", ".join(info.get("release", name) for name, info in doc["kernels"].items())
    return f"{kernels}; {report.settings_line(doc)}"


def _table(head, rows):
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def multipath_section(measured):
    """NVMe/TCP native multipath (round-robin, queue-depth) against MPTCP, no loss."""
    pairs = []
    for doc, tcp, _ in measured.fabric(trtype="tcp", multipath="native", loss=0):
        if tcp.iopolicy == "numa":
            continue
        mptcp = [row for d, row, _ in measured.fabric(trtype="mptcp", multipath="native", loss=0,
                                                     iopolicy=tcp.iopolicy, paths=tcp.paths)
                 if d is doc]
        if mptcp:
            pairs.append((doc, tcp, mptcp[0]))
    lines = ["## 1. Native NVMe multipath against MPTCP", ""]
    if not pairs:
        return lines + ["Not measured here: no tcp round-robin or queue-depth cell beside its "
                        "mptcp cell without loss (`matrix --iopolicy round-robin "
                        "--iopolicy queue-depth --loss 0`).", ""]
    for doc, tcp, mptcp in pairs:
        lines.append(f"With {tcp.iopolicy} over {tcp.paths} links and no loss, NVMe/TCP read "
                     f"{_mib(tcp.read)} MiB/s and wrote {_mib(tcp.write)}; NVMe over MPTCP "
                     f"read {_mib(mptcp.read)} ({_x(_ratio(mptcp.read, tcp.read))}) and wrote "
                     f"{_mib(mptcp.write)} ({_x(_ratio(mptcp.write, tcp.write))}).")
    lines += ["", *_table(["run", "READ MiB/s", "WRITE MiB/s", "eff."],
                          [[row.label, _mib(row.read), _mib(row.write), _eff(row)]
                           for doc, tcp, mptcp in pairs for row in (tcp, mptcp)]), ""]
    return lines + _measured_on(doc for doc, _, _ in pairs)


def _eff(row):
    return NONE if row.efficiency is None else f"{row.efficiency:.2f}"


def _measured_on(docs):
    """'Measured on ...' once for each matrix a section's table came from."""
    seen = []
    for doc in docs:
        if not any(doc is other for other in seen):
            seen.append(doc)
    return [f"Measured on {_where(doc)}" for doc in seen] + [""]


def bonding_section(measured, faults):
    """NVMe/TCP over a bond of the links against native multipath and MPTCP: the matrix's
    bond cells and the bond fault cases."""
    lines = ["## 2. A Linux bond of the links, without an NVMe change", ""]
    bonds = measured.fabric(multipath="bond", loss=0)
    if bonds:
        rows = []
        for doc, bond, cell in bonds:
            same = lambda **w: next((r for d, r, _ in measured.fabric(loss=0, paths=bond.paths, **w)
                                     if d is doc), None)
            numa = same(trtype="tcp", multipath="native", iopolicy="numa")
            best_native = max((r for d, r, _ in measured.fabric(trtype="tcp", multipath="native",
                                                                loss=0, paths=bond.paths)
                               if d is doc and r.read is not None),
                              key=lambda r: r.read, default=None)
            mptcp = max((r for d, r, _ in measured.fabric(trtype="mptcp", multipath="native",
                                                          loss=0, paths=bond.paths)
                         if d is doc and r.read is not None), key=lambda r: r.read, default=None)
            rows.append([bond.label, _mib(bond.read), _mib(bond.write), _eff(bond),
                         _shares(interface_shares(cell, "read")),
                         _x(_ratio(bond.read, numa.read if numa else None)),
                         f"{_x(_ratio(best_native.read, bond.read))} ({best_native.label})"
                         if best_native else NONE,
                         f"{_x(_ratio(mptcp.read, bond.read))} ({mptcp.label})" if mptcp else NONE])
        best = max(bonds, key=lambda item: item[1].read or 0)
        lines.append(f"The best bond mode, {best[1].iopolicy}, read {_mib(best[1].read)} MiB/s "
                     f"and wrote {_mib(best[1].write)} over {best[1].paths} links "
                     f"(efficiency {_eff(best[1])} of the links it can use).")
        lines += ["", *_table(["bond", "READ MiB/s", "WRITE MiB/s", "eff.",
                               "reads per slave (interface bytes)", "÷ tcp numa",
                               "best native ÷ bond", "best mptcp ÷ bond"], rows), "",
                  *_measured_on(doc for doc, _, _ in bonds)]
    else:
        lines += ["No bond cells in these folders (`matrix --multipath native --multipath "
                  "bond`).", ""]
    outcomes = [o for _, found in faults for o in found]
    bonded = [o for o in outcomes if o.get("via")]
    if not bonded:
        return lines + ["No bond fault cases in these folders (`run -k bond_fault`).", ""]
    hit = {o["fault"] for o in bonded}            # those faults, with and without a bond
    rows = [_fault_row(o) for o in sorted((o for o in outcomes if o["fault"] in hit),
                                          key=faults_report.order)]
    stalls = {o["via"]: (o.get("impact") or {}).get("longest_stall_s") for o in bonded}
    worst = max((v for v in stalls.values() if v is not None), default=None)
    plain = [o for o in outcomes if not o.get("via") and o["fault"] in hit]
    lines.append(f"Under the same faults the bond stalled up to {_s(worst)} "
                 f"({', '.join(f'{via} {_s(s)}' for via, s in sorted(stalls.items()))})"
                 + ("; without a bond: "
                    + ", ".join(f"{o['trtype']} {o['fault']} {_s((o.get('impact') or {}).get('longest_stall_s'))}"
                                for o in plain) if plain else "") + ".")
    return lines + ["", *_table(["fault", "transport", "longest stall", "during fault",
                                 "result"], rows), ""]


def _s(seconds):
    return NONE if seconds is None else f"{seconds:.1f} s"


def _fault_row(outcome):
    impact = outcome.get("impact") or {}
    during = (f"{impact['during'] / impact['baseline']:.0%}"
              if impact.get("during") is not None and impact.get("baseline") else NONE)
    return [outcome["fault"], faults_report.transport(outcome), _s(impact.get("longest_stall_s")), during,
            outcome.get("problem") or "ok"]


def interface_shares(cell, direction):
    """{link: median share of the bytes its host interface moved} over the cell's passed
    runs that recorded them (Run.link_bytes), for ``direction`` (read or write)."""
    found = [run["link_bytes"][direction] for run in cell.get("runs", ())
             if run.get("status") == "passed" and (run.get("link_bytes") or {}).get(direction)]
    names = sorted({name for per in found for name in per})
    shares = {name: [per.get(name, 0) / total for per in found
                     if (total := sum(per.values()))] for name in names}
    return {name: statistics.median(values) for name, values in shares.items() if values}


def _shares(per):
    return " ".join(f"{name} {share:.0%}" for name, share in per.items()) or NONE


def link_counters(cell, direction):
    """{link: (median share of the bytes acked, median retransmissions per MiB)} over the
    cell's passed runs that sampled tcp_info, for ``direction`` (read or write)."""
    found = [run["transport"][direction] for run in cell.get("runs", ())
             if run.get("status") == "passed" and (run.get("transport") or {}).get(direction)]
    return {name: (report.link_median(found, name, report.link_share),
                   report.link_median(found, name, report.link_retransmits))
            for name in sorted({name for per in found for name in per})}


def _counters(per):
    if not per:
        return NONE
    return "; ".join(f"{name} {NONE if share is None else f'{share:.0%}'}"
                     f" {NONE if r is None else f'{r:.1f}'}/MiB" for name, (share, r) in per.items())


def loss_section(measured):
    """Loss on every link or on the last --loss-links: tcp and mptcp side by side, with
    where the bytes and retransmissions went."""
    lines = ["## 3. Why MPTCP shrugs off loss", ""]
    lossy = measured.fabric(loss=1, multipath="native")
    if not lossy:
        return lines + ["No loss cells in these folders (`matrix --loss 1`, and "
                        "`--loss-links 1` for loss on one link only).", ""]
    rows = []
    for doc, row, cell in sorted(lossy, key=lambda item: (item[1].iopolicy, item[1].trtype)):
        k = doc["settings"].get("loss_links")
        where = f"the last {k} of {row.paths} links" if k else f"all {row.paths} links"
        clean = next((r for d, r, _ in measured.fabric(loss=0, multipath="native",
                                                       trtype=row.trtype, iopolicy=row.iopolicy,
                                                       paths=row.paths) if d is doc), None)
        rows.append([row.label, where, _mib(row.read), _mib(row.write),
                     _x(_ratio(row.read, clean.read)) if clean else NONE,
                     _x(row.ratio_vs_tcp) if row.trtype == "mptcp" else NONE,
                     _counters(link_counters(cell, "read"))])
        if row.trtype == "mptcp" and row.ratio_vs_tcp is not None:
            lines.append(f"With loss on {where}, NVMe over MPTCP ({row.iopolicy}) read "
                         f"{_mib(row.read)} MiB/s, {_x(row.ratio_vs_tcp)} NVMe/TCP's "
                         f"{_mib(row.read / row.ratio_vs_tcp)}"
                         + (f", {_x(_ratio(row.read, clean.read))} of its own lossless read"
                            if clean else "") + ".")
    lines += ["", "Per link (reads, sent by the target): the link's median share of the "
              "bytes acknowledged and its retransmissions per MiB, from tcp_info (— where "
              "the cells did not sample it).", "",
              *_table(["run", "loss on", "READ MiB/s", "WRITE MiB/s", "÷ lossless",
                       "mptcp ÷ tcp", "per link: share, retransmissions"], rows), ""]
    return lines + _measured_on(doc for doc, _, _ in lossy)


def layout_section(measured):
    lines = ["## 4. Subflow layout and scheduler", ""]
    return lines + ["Not measured here: matrix has no endpoint-layout, flow-count or "
                    "packet-scheduler axis yet, so these folders cannot tell how much of "
                    "MPTCP's gain comes from its subflow layout rather than its path choice.",
                    ""]


def write_gap_section(measured):
    """WRITE against READ for each lossless native cell; for mptcp, the counters of both
    directions."""
    lines = ["## 5. The write-direction gap", ""]
    cells = [item for item in measured.fabric(loss=0, multipath="native")
             if item[1].read and item[1].write]
    if not cells:
        return lines + ["No lossless native cells with both directions in these folders.", ""]
    rows = [[row.label, _mib(row.read), _mib(row.write), _x(_ratio(row.write, row.read)),
             _counters(link_counters(cell, "read")), _counters(link_counters(cell, "write"))]
            for _, row, cell in cells]
    for doc, row, cell in cells:
        if row.trtype != "mptcp":
            continue
        tcp = next((r for d, r, _ in measured.fabric(loss=0, multipath="native", trtype="tcp",
                                                     iopolicy=row.iopolicy, paths=row.paths)
                    if d is doc), None)
        if tcp:
            lines.append(f"NVMe over MPTCP ({row.iopolicy}) against NVMe/TCP: reads "
                         f"{_x(_ratio(row.read, tcp.read))}, writes "
                         f"{_x(_ratio(row.write, tcp.write))}; MPTCP wrote "
                         f"{_mib(row.write)} MiB/s against its {_mib(row.read)} read "
                         f"({_x(_ratio(row.write, row.read))}).")
    return lines + ["", *_table(["run", "READ MiB/s", "WRITE MiB/s", "WRITE ÷ READ",
                                 "reads per link: share, retransmissions",
                                 "writes per link: share, retransmissions"], rows), "",
                    *_measured_on(doc for doc, _, _ in cells)]


def measured_section(matrices, faults):
    lines = ["## What was measured", ""]
    for folder, doc in matrices:
        lines.append(f"- `{folder}`: matrix of {len(doc['cells'])} cells on {_where(doc)}")
    for folder, outcomes in faults:
        lines.append(f"- `{folder}`: {len(outcomes)} fault case(s)")
    return lines + [""]


def markdown(folders):
    """report.md's text from the results folders."""
    matrices, faults = load(folders)
    measured = Measured(matrices)
    return "\n".join(["# mptcp-nvme report: the reviewers' questions, measured", "",
                      *measured_section(matrices, faults), *multipath_section(measured),
                      *bonding_section(measured, faults), *loss_section(measured),
                      *layout_section(measured), *write_gap_section(measured)]) + "\n"


def write(folders, out):
    """report.md and report.html in ``out``: their paths."""
    from mptcp_nvme.host.results import pages
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(folders)
    md = out / "report.md"
    md.write_text(text)
    html = pages.write_markdown_page(out / "report.html", "mptcp-nvme report", text)
    return md, html
