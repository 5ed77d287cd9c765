"""KTAP and a markdown summary rendered from a results.json document (reporters.ResultsJson),
for 'mptcp-nvme merge' and any bot that has the document but not the run's stdout."""

from mptcp_nvme import ktap
from mptcp_nvme.host.results.outcome import Outcome

NOT_PASSED = ("fail", "error", "xpass", "skip", "xfail")
SLOWEST = 10                  # tests in summary.md's slowest table


def count(tests):
    """{outcome: N} of a results.json "tests" list, every KTAP outcome present."""
    totals = dict.fromkeys(ktap.OUTCOMES, 0)
    for test in tests:
        totals[test["result"]] = totals.get(test["result"], 0) + 1
    return totals


def write_ktap(document, stream, version=13, header=()):
    """The KTAP of ``document`` as the run printed it (outcome.Outcome.render): one plan,
    results renumbered from 1, the Totals line; returns the exit code."""
    writer = ktap.KtapWriter(stream, version=version)
    writer.header(len(document["tests"]))
    for line in header:
        writer.diag(line)
    for test in document["tests"]:
        Outcome.from_json(test).render(writer)
    writer.totals()
    return writer.exit_code


def markdown(document, title="mptcp-nvme results"):
    """A short markdown summary: kernel, totals, the runs merged, and every test that did
    not pass with its reason, crash fingerprints and artifacts."""
    kernel = document.get("kernel") or {}
    totals = count(document["tests"])
    lines = [f"# {title}", ""]
    if kernel:
        lines.append(f"Kernel {kernel.get('release')} ({kernel.get('origin')}"
                     + (f", commit {kernel['commit']}" if kernel.get("commit") else "") + ").")
    lines.append(f"{len(document['tests'])} tests: "
                 + ", ".join(f"{n} {outcome}" for outcome, n in totals.items() if n) + ".")
    parts = document.get("merged") or ()
    if parts:
        lines += ["", "| shard | tests | wall time | results |", "| --- | --- | --- | --- |"]
        for part in parts:
            wall = part["finished"] - part["started"]
            lines.append(f"| {part.get('shard') or '-'} | {part['tests']} | {wall:.0f} s | "
                         f"{part['dir']} |")
    flaky = [t for t in document["tests"] if t.get("flaky")]
    others = [t for t in document["tests"] if t["result"] in NOT_PASSED]
    if others:
        lines += ["", "| result | test | time | reason |", "| --- | --- | --- | --- |"]
        for test in sorted(others, key=lambda t: (NOT_PASSED.index(t["result"]), t["nodeid"])):
            reason = "; ".join([test.get("reason") or "", *test.get("crashes", ()),
                                *test.get("artifacts", ())]).strip("; ")
            lines.append(f"| {test['result']} | `{test['nodeid']}` | "
                         f"{test.get('time_ms', 0) / 1000:.1f} s | {_cell(reason)} |")
    if flaky:
        lines += ["", "Flaky (passed on a retry): " + ", ".join(f"`{t['nodeid']}`" for t in flaky)]
    lines += slowest(document["tests"])
    return "\n".join(lines) + "\n"


def slowest(tests, shown=SLOWEST):
    """The markdown table of the ``shown`` slowest tests: where their time went (pytest's
    setup, call and teardown; setup's slowest fixtures)."""
    timed = sorted((t for t in tests if t.get("phases_ms")), key=lambda t: -t.get("time_ms", 0))
    if not timed:
        return []
    total = sum(t.get("time_ms", 0) for t in tests) / 1000
    setup = sum((t.get("phases_ms") or {}).get("setup", 0) for t in tests) / 1000
    lines = ["", f"Slowest {min(shown, len(timed))} of {len(tests)} tests ({total:.0f} s in all, "
                 f"{setup:.0f} s of it setup):", "",
             "| test | time | setup | call | teardown | slowest fixtures |",
             "| --- | --- | --- | --- | --- | --- |"]
    for test in timed[:shown]:
        phases = test["phases_ms"]
        fixtures = sorted((test.get("fixtures_ms") or {}).items(), key=lambda f: -f[1])[:3]
        lines.append(f"| `{test['nodeid']}` | {test.get('time_ms', 0) / 1000:.1f} s | "
                     + " | ".join(f"{phases.get(p, 0) / 1000:.1f} s"
                                  for p in ("setup", "call", "teardown"))
                     + " | " + (", ".join(f"{n} {ms / 1000:.1f} s" for n, ms in fixtures) or "-")
                     + " |")
    return lines


def _cell(text):
    return " ".join(str(text).replace("|", "\\|").split())
