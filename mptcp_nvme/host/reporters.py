"""Host side reporters: KTAP on stdout and results.json for CI bots. Reporters consume
pytest's reports (local, from a VM, or from xdist workers) and never drive the run."""

import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import pytest

from mptcp_nvme import ktap
from mptcp_nvme.host import summary
from mptcp_nvme.channel import ARTIFACT, CRASH, DESCRIPTION, DIAG, DIRECTIVE, FLAKY, SUBTESTS
from mptcp_nvme.plugin import is_xdist_controller

FAILURE_LINES = 60


class KtapReporter:
    """Turns pytest reports (local, from a VM or from xdist workers) into KTAP."""

    def __init__(self, config):
        target = config.getoption("ktap")
        self.stream = sys.stdout if target == "-" else open(target, "w", buffering=1)
        self.writer = ktap.KtapWriter(self.stream, version=config.getoption("ktap_version"))
        self.pending = {}
        self.collect_errors = 0

    def pytest_sessionstart(self, session):
        self.writer.header()

    def pytest_collection_finish(self, session):
        if not is_xdist_controller(session.config):
            self.writer.plan(len(session.items))

    @pytest.hookimpl(optionalhook=True)       # an xdist hook: absent without xdist
    def pytest_xdist_node_collection_finished(self, node, ids):
        if self.writer.planned is None:
            self.writer.plan(len(ids))

    def pytest_collectreport(self, report):
        if report.failed:
            self.collect_errors += 1
            self.writer.diag(f"collection error in {report.nodeid}:\n{report.longreprtext}")

    def pytest_runtest_logreport(self, report):
        self.pending.setdefault(report.nodeid, []).append(report)
        if report.when == "teardown":
            self._emit(self.pending.pop(report.nodeid))

    def _emit(self, reports):
        pairs = list(itertools.chain.from_iterable(r.user_properties for r in reports))
        props = dict(pairs)
        for diagnostic in dict.fromkeys(value for name, value in pairs if name == DIAG):
            self.writer.diag(diagnostic)
        description = props.get(DESCRIPTION, reports[0].nodeid)
        outcome, reason = summarize(reports)
        if props.get(DIRECTIVE) and outcome in ("fail", "error"):
            outcome, reason = "error", f"{props[DIRECTIVE]} {reason}".strip()
        for nested in dict.fromkeys(value for name, value in pairs if name == SUBTESTS):
            self.writer.subtest(nested)
        if outcome in ("fail", "error", "xpass"):
            text = "\n".join(r.longreprtext for r in reports if r.failed)
            self.writer.diag("\n".join(failure_window(text.splitlines())))
        time_ms = sum(r.duration for r in reports) * 1000
        self.writer.result(description, outcome, time_ms, reason)

    def pytest_sessionfinish(self, session, exitstatus):
        self.writer.totals()
        code = self.writer.exit_code
        if self.collect_errors or exitstatus in (pytest.ExitCode.INTERNAL_ERROR,
                                                 pytest.ExitCode.INTERRUPTED):
            code = ktap.EXIT_FAIL
        session.config.stash[KTAP_EXIT] = code

    def pytest_unconfigure(self, config):
        if self.stream is not sys.stdout:
            self.stream.close()


KTAP_EXIT = pytest.StashKey[int]()


def failure_window(lines, head=40, tail=FAILURE_LINES - 40):
    """A long failure text's head (a crash report starts with kind, headline and
    fingerprint) and tail (an assertion ends with its message)."""
    if len(lines) <= head + tail:
        return lines
    return [*lines[:head], f"... ({len(lines) - head - tail} lines in junit.xml)", *lines[-tail:]]


def summarize(reports):
    """(outcome, reason) of one test from its setup/call/teardown reports."""
    for report in reports:
        if report.skipped:
            reason = skip_reason(report)
            if hasattr(report, "wasxfail"):
                return "xfail", report.wasxfail
            return "skip", reason
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


class ResultsJson:
    """results.json: one JSON document per run, for CI bots.

        {"format": 1, "results_dir": ..., "tests": [{"nodeid", "description", "result",
          "time_ms", "reason", "crashes", "artifacts", "flaky", "diagnostics",
          "subtests"}, ...],
         "totals": {"pass": N, "fail": N, ...}}

    plus, from a run, "kernel" (kernel.identity(): release, origin, tree, commit, arch),
    "shard" ("I/N" or null) and "time_budget" (seconds or null).

    ``result`` is the KTAP outcome (pass, fail, skip, xfail, xpass, error); ``crashes``
    are crash summaries with their fingerprints; ``flaky`` is true for a test that passed
    on a retry (--retry-failed); ``subtests`` are the results of a kselftest's own nested
    KTAP (ktap.ParsedResult fields)."""

    def __init__(self, path, results_dir):
        self.path = Path(path)
        self.results_dir = Path(results_dir)
        self.pending = {}
        self.tests = []
        self.started = time.time()

    def pytest_collectreport(self, report):
        if report.failed:
            self.tests.append({"nodeid": report.nodeid, "description": report.nodeid,
                               "result": "error", "time_ms": 0,
                               "reason": "collection error: " + report.longreprtext[-500:],
                               "crashes": [], "artifacts": [], "flaky": False,
                               "diagnostics": []})

    def pytest_runtest_logreport(self, report):
        self.pending.setdefault(report.nodeid, []).append(report)
        if report.when == "teardown":
            self.tests.append(self._entry(self.pending.pop(report.nodeid)))

    def _entry(self, reports):
        pairs = list(itertools.chain.from_iterable(r.user_properties for r in reports))
        values = lambda name: list(dict.fromkeys(v for n, v in pairs if n == name))
        outcome, reason = summarize(reports)
        descriptions = values(DESCRIPTION)
        return {
            "nodeid": reports[0].nodeid,
            "description": descriptions[0] if descriptions else reports[0].nodeid,
            "result": outcome,
            "time_ms": round(sum(r.duration for r in reports) * 1000),
            "reason": reason or None,
            "crashes": values(CRASH),
            "artifacts": [self._relative(p) for p in values(ARTIFACT)],
            "flaky": bool(values(FLAKY)),
            "diagnostics": values(DIAG),
            "subtests": [dataclasses.asdict(result) for nested in values(SUBTESTS)
                         for result in ktap.parse(nested)[1]],
        }

    def _relative(self, path):
        try:
            return str(Path(path).resolve().relative_to(self.results_dir.resolve()))
        except ValueError:
            return str(path)

    def pytest_sessionfinish(self, session):
        totals = summary.count(self.tests)
        document = {"format": 1, "started": self.started, "finished": time.time(),
                    "results_dir": str(self.results_dir), "tests": self.tests, "totals": totals}
        if session is not None:
            from mptcp_nvme.host.runner import kernel_identity
            document.update(kernel=kernel_identity(session.config),
                            shard=session.config.getoption("shard"),
                            time_budget=session.config.getoption("time_budget"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(document, indent=2) + "\n")
