"""Host side: the fault table of a run, from the FAULT property of its fault tests.

At the end of the run, when any fault test reported: ``faults.json`` (every outcome),
``faults.md`` (fault × transport: stall, errors, recovery, subflows, kernel error
recovery) and ``faults/<case>.png`` (the written bandwidth over time, the fault window
shaded; case_name()) in the results folder.
"""

import json
from pathlib import Path

from mptcp_nvme.channel import FAULT
from mptcp_nvme.payloads import FaultOutcome
from mptcp_nvme.vocabulary import TRTYPES

NONE = "—"


class FaultsReport:
    """pytest plugin: collects the outcomes, writes the files at session finish."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.outcomes = []

    def pytest_runtest_logreport(self, report):
        if report.when != "call":        # the properties are on every phase's report
            return
        for name, value in report.user_properties:
            if name == FAULT:
                outcome = FaultOutcome.from_property(value).to_json()
                outcome["nodeid"] = report.nodeid
                outcome["result"] = "passed" if report.passed else "failed"
                self.outcomes.append(outcome)

    def pytest_sessionfinish(self, session):
        if self.outcomes:
            write_outputs(self.outcomes, self.folder)


def _seconds(value):
    return NONE if value is None else f"{value:.1f} s"


def row(outcome):
    impact = outcome.get("impact") or {}
    stall = _seconds(impact.get("longest_stall_s"))
    if impact.get("stall_at_end"):
        stall += " (to the end)"
    during = NONE
    if impact.get("during") is not None and impact.get("baseline"):
        during = f"{impact['during'] / impact['baseline']:.0%}"
    live = outcome.get("live") or {}
    recovery = (_seconds(impact.get("recovery_s")) if impact.get("recovered")
                else f"by {_seconds(live.get('at_s'))} (device)" if live.get("back") else "**no**")
    subflows = outcome.get("subflows") or {}
    flows = "/".join(str(subflows.get(k, NONE)) for k in ("before", "during", "after")) \
        if subflows else NONE
    errors = "verify" if outcome.get("verify_error") else "I/O" if outcome.get("io_error") else "0"
    baseline = impact.get("baseline")
    return [outcome["fault"], transport(outcome),
            NONE if baseline is None else f"{baseline / 1024:.1f}", stall, during, recovery,
            errors, flows, "yes" if outcome.get("recovery_lines") else "no",
            outcome.get("problem") or "ok"]


def transport(outcome):
    """'tcp ×2', or over a bond 'tcp ×1 on bond:active-backup'."""
    via = outcome.get("via")
    return f"{outcome['trtype']} ×{outcome['paths']}" + (f" on {via}" if via else "")


def case_name(outcome):
    """<fault>-<trtype>, '-bond-<mode>' after it over a bond: its chart's file name."""
    via = outcome.get("via")
    return f"{outcome['fault']}-{outcome['trtype']}" + (f"-{via.replace(':', '-')}" if via else "")


HEAD = ["fault", "transport × controllers", "MiB/s before", "longest stall", "during fault",
        "back to 80 %", "errors", "subflows before/during/after", "NVMe error recovery",
        "result"]
LEGEND = [
    "- Bandwidth: fio's writes and their verifying reads (verify_backlog), per 100 ms. "
    "longest stall: the longest run of windows at ≤ 5 % of the baseline from the fault's "
    "start; during fault: median within the window ÷ baseline; back to 80 %: from the heal "
    "to the first second at ≥ 80 % of the baseline; 'by N s (device)': the log never held "
    "that (its 100 ms samples are uneven on a loaded machine), but the device's sector "
    "counters, sampled live, moved ≥ 90 % of their baseline over 2 s by N s from the "
    "fault's start.",
    "- errors: fio's verify (crc32c, verify_backlog) and I/O errors; NVMe error recovery: "
    "the kernel log shows the host's error recovery, reconnects or keep-alive failures.",
]


def order(outcome):
    from mptcp_nvme.vocabulary import FAULTS
    fault = outcome["fault"]
    return (FAULTS.index(fault) if fault in FAULTS else len(FAULTS), fault,
            TRTYPES.index(outcome["trtype"]) if outcome["trtype"] in TRTYPES else 2,
            outcome.get("via") or "")


def markdown(outcomes, title="mptcp-nvme faults"):
    lines = [f"# {title}", "", "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for outcome in sorted(outcomes, key=order):
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row(outcome)) + " |")
    return "\n".join(lines + [""] + LEGEND) + "\n"


def chart(outcome, path):
    """The written bandwidth of one case over time (0: the fault's start), its window shaded."""
    from mptcp_nvme.host.results.timeline_chart import chart as draw
    impact = outcome.get("impact") or {}
    times = [t for t, _ in outcome["timeline"]]
    values = [v for _, v in outcome["timeline"]]
    window = (impact.get("fault_start_s", 0.0), impact.get("fault_end_s", outcome["window_s"]))
    title = (f"{outcome['fault']} over {outcome['trtype']} ({outcome['paths']} controller(s)"
             + (f", {outcome['via']})" if outcome.get("via") else ")"))
    return draw({f"{outcome['trtype']}: writes and verify reads": (times, values)}, window, path,
                title)


def write_outputs(outcomes, folder, title="mptcp-nvme faults"):
    """faults.json, faults.md and a PNG per case in ``folder``: the paths written."""
    folder = Path(folder)
    charts = folder / "faults"
    charts.mkdir(parents=True, exist_ok=True)
    written = [folder / "faults.json", folder / "faults.md"]
    written[0].write_text(json.dumps(sorted(outcomes, key=order), indent=1) + "\n")
    written[1].write_text(markdown(outcomes, title))
    for outcome in outcomes:
        if outcome.get("timeline"):
            written.append(chart(outcome, charts / f"{case_name(outcome)}.png"))
    return written
