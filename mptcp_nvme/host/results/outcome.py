"""A test's outcome, decided once: every renderer (KTAP on stdout, results.json, the KTAP
that merge and series re-render from results.json, KCIDB, the patchwork bot) reads this
record and none decides anything of its own.

The record is built from pytest's setup/call/teardown reports (local, from a VM, or from
an xdist worker) and round-trips through results.json: ``Outcome.from_json(o.to_json())
== o``, and ``render()`` of either prints the same KTAP lines."""

import dataclasses
import itertools
from pathlib import Path

from mptcp_nvme import ktap
from mptcp_nvme.channel import (ARTIFACT, CRASH, DESCRIPTION, DIAG, DIRECTIVE, FIXTURE_TIME,
                                 FLAKY, SUBTESTS)

FAILURE_LINES = 60
FAILED = ("fail", "error", "xpass")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One test. ``result`` is the KTAP outcome (ktap.OUTCOMES); ``reason`` what its
    directive says (``SKIP <reason>``, ``ERROR TIMEOUT``, ``ERROR setup failed``);
    ``failure`` the failure text KTAP prints before the result (head and tail of
    pytest's longrepr); ``nested_ktap`` a kselftest's own KTAP documents, as printed;
    ``crashes`` crash summaries with their fingerprints; ``flaky`` passed on a retry;
    ``phases_ms`` pytest's setup, call and teardown; ``fixtures_ms`` each fixture's setup
    (guest/timing.py), a part of setup's time."""

    nodeid: str
    description: str
    result: str
    time_ms: int = 0
    reason: str | None = None
    failure: str | None = None
    crashes: tuple = ()
    artifacts: tuple = ()
    flaky: bool = False
    diagnostics: tuple = ()
    nested_ktap: tuple = ()
    phases_ms: dict = dataclasses.field(default_factory=dict)
    fixtures_ms: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_reports(cls, reports, results_dir=None):
        pairs = list(itertools.chain.from_iterable(r.user_properties for r in reports))
        values = lambda name: tuple(dict.fromkeys(v for n, v in pairs if n == name))
        result, reason = summarize(reports)
        directive = dict(pairs).get(DIRECTIVE)
        if directive and result in ("fail", "error"):
            result, reason = "error", f"{directive} {reason}".strip()
        failure = None
        if result in FAILED:
            text = "\n".join(r.longreprtext for r in reports if r.failed)
            failure = "\n".join(failure_window(text.splitlines())) or None
        descriptions = values(DESCRIPTION)
        return cls(nodeid=reports[0].nodeid,
                   description=descriptions[0] if descriptions else reports[0].nodeid,
                   result=result, time_ms=round(sum(r.duration for r in reports) * 1000),
                   reason=reason or None, failure=failure, crashes=values(CRASH),
                   artifacts=tuple(_relative(p, results_dir) for p in values(ARTIFACT)),
                   flaky=bool(values(FLAKY)), diagnostics=values(DIAG),
                   nested_ktap=values(SUBTESTS), phases_ms=_phases(reports),
                   fixtures_ms=_fixtures(pairs))

    @classmethod
    def collection_error(cls, report):
        return cls(nodeid=report.nodeid, description=report.nodeid, result="error",
                   reason="collection error", failure=report.longreprtext[-2000:] or None)

    @property
    def failed(self):
        return self.result in FAILED

    def subtest_results(self):
        """The nested documents' results (ktap.ParsedResult)."""
        return [result for nested in self.nested_ktap for result in ktap.parse(nested)[1]]

    def to_json(self):
        entry = dataclasses.asdict(self)
        entry.update({name: list(entry[name]) for name in _LISTS})
        # parsed, for bots that want the nested results without a KTAP parser
        entry["subtests"] = [dataclasses.asdict(r) for r in self.subtest_results()]
        return entry

    @classmethod
    def from_json(cls, entry):
        """An entry of results.json (older documents lack the newer fields)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in entry.items() if k in known}
        values.update({name: tuple(values.get(name) or ()) for name in _LISTS})
        return cls(**values)

    def render(self, writer):
        """This test's KTAP: diagnostics, nested subtests, the failure text, the result."""
        for diagnostic in self.diagnostics:
            writer.diag(diagnostic)
        for nested in self.nested_ktap:
            writer.subtest(nested)
        if self.failure:
            writer.diag(self.failure)
        writer.result(self.description, self.result, self.time_ms, self.reason)


_LISTS = ("crashes", "artifacts", "diagnostics", "nested_ktap")


def _phases(reports):
    """{setup, call, teardown: ms} of a test's reports (a phase that ran twice, a retry, adds)."""
    phases = {}
    for report in reports:
        when = getattr(report, "when", None)
        if when:
            phases[when] = phases.get(when, 0) + round(report.duration * 1000)
    return phases


def _fixtures(pairs):
    """{fixture: ms of its setup} from the FIXTURE_TIME properties (every later report of
    the test carries the setup's properties again: a fixture counts once)."""
    return {value[0]: round(value[1] * 1000) for name, value in pairs if name == FIXTURE_TIME}


def summarize(reports):
    """(result, reason) of one test from its setup/call/teardown reports."""
    for report in reports:
        if report.skipped:
            if hasattr(report, "wasxfail"):
                return "xfail", report.wasxfail
            return "skip", skip_reason(report)
    for report in reports:
        if report.failed:
            # a kernel problem found after the test (kmemleak at teardown) is its failure
            found_by_gate = any(name == CRASH for name, _ in report.user_properties)
            if report.when == "call" or found_by_gate:
                return "fail", ""
            return "error", f"{report.when} failed"
    if any(hasattr(r, "wasxfail") for r in reports):
        return "xpass", ""
    return "pass", ""


def skip_reason(report):
    if isinstance(report.longrepr, tuple):
        return report.longrepr[2].removeprefix("Skipped: ")
    return str(report.longrepr)


def failure_window(lines, head=40, tail=FAILURE_LINES - 40):
    """A long failure text's head (a crash report starts with kind, headline and
    fingerprint) and tail (an assertion ends with its message)."""
    if len(lines) <= head + tail:
        return lines
    return [*lines[:head], f"... ({len(lines) - head - tail} lines in junit.xml)", *lines[-tail:]]


def _relative(path, results_dir):
    if results_dir is None:
        return str(path)
    try:
        return str(Path(path).resolve().relative_to(Path(results_dir).resolve()))
    except ValueError:
        return str(path)
