"""Host side reporters: KTAP on stdout and results.json for CI bots. Reporters consume
pytest's reports (local, from a VM, or from xdist workers) and never drive the run."""

import json
import sys
import time
from pathlib import Path

import pytest

from mptcp_nvme import ktap
from mptcp_nvme.host.results import summary
from mptcp_nvme.host.results.outcome import Outcome
from mptcp_nvme.host.plugin import is_xdist_controller


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
        Outcome.from_reports(reports).render(self.writer)

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


class ResultsJson:
    """results.json: one JSON document per run, for CI bots.

        {"format": 1, "results_dir": ..., "tests": [Outcome.to_json(), ...],
         "totals": {"pass": N, "fail": N, ...}}

    plus, from a run, "kernel" (kernel.identity(): release, origin, tree, commit, arch),
    "shard" ("I/N" or null) and "time_budget" (seconds or null).

    Each test is an outcome.Outcome: nodeid, description, result (the KTAP outcome: pass,
    fail, skip, xfail, xpass, error), time_ms, reason (the directive's text: a skip's
    reason, "TIMEOUT" for a test the VM overran), failure (the text KTAP prints), crashes
    (summaries with fingerprints), artifacts, flaky (passed on a retry), diagnostics,
    nested_ktap (a kselftest's own KTAP, as printed) and subtests (its results parsed,
    ktap.ParsedResult fields). It says exactly what the KTAP says."""

    def __init__(self, path, results_dir):
        self.path = Path(path)
        self.results_dir = Path(results_dir)
        self.pending = {}
        self.tests = []
        self.started = time.time()

    def pytest_collectreport(self, report):
        if report.failed:
            self.tests.append(Outcome.collection_error(report).to_json())

    def pytest_runtest_logreport(self, report):
        self.pending.setdefault(report.nodeid, []).append(report)
        if report.when == "teardown":
            self.tests.append(self._entry(self.pending.pop(report.nodeid)))

    def _entry(self, reports):
        return Outcome.from_reports(reports, self.results_dir).to_json()

    def pytest_sessionfinish(self, session):
        totals = summary.count(self.tests)
        document = {"format": 1, "started": self.started, "finished": time.time(),
                    "results_dir": str(self.results_dir), "tests": self.tests, "totals": totals}
        if session is not None:
            from mptcp_nvme.host.vm.pytest_run import kernel_identity
            document.update(kernel=kernel_identity(session.config),
                            shard=session.config.getoption("shard"),
                            time_budget=session.config.getoption("time_budget"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(document, indent=2) + "\n")
