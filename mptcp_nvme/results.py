"""results.json: one JSON document per run, for CI bots (a reporter: it consumes pytest's
reports and never drives the run).

    {"format": 1, "results_dir": ..., "tests": [{"nodeid", "description", "result",
      "time_ms", "reason", "crashes", "artifacts", "flaky", "diagnostics"}, ...],
     "totals": {"pass": N, "fail": N, ...}}

``result`` is the KTAP outcome (pass, fail, skip, xfail, xpass, error); ``crashes`` are
crash summaries with their fingerprints; ``flaky`` is true for a test that passed on a
retry (--retry-failed).
"""

import itertools
import json
import time
from pathlib import Path

from . import ktap


class ResultsJson:
    def __init__(self, path, results_dir, summarize, names):
        self.path = Path(path)
        self.results_dir = Path(results_dir)
        self.summarize = summarize            # plugin.summarize: reports -> (outcome, reason)
        self.names = names                    # {"diag", "description", "crash", "artifact", "flaky"}
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
        values = lambda name: list(dict.fromkeys(v for n, v in pairs if n == self.names[name]))
        outcome, reason = self.summarize(reports)
        descriptions = values("description")
        return {
            "nodeid": reports[0].nodeid,
            "description": descriptions[0] if descriptions else reports[0].nodeid,
            "result": outcome,
            "time_ms": round(sum(r.duration for r in reports) * 1000),
            "reason": reason or None,
            "crashes": values("crash"),
            "artifacts": [self._relative(p) for p in values("artifact")],
            "flaky": bool(values("flaky")),
            "diagnostics": values("diag"),
        }

    def _relative(self, path):
        try:
            return str(Path(path).resolve().relative_to(self.results_dir.resolve()))
        except ValueError:
            return str(path)

    def pytest_sessionfinish(self, session):
        totals = dict.fromkeys(ktap.OUTCOMES, 0)
        for test in self.tests:
            totals[test["result"]] = totals.get(test["result"], 0) + 1
        document = {"format": 1, "started": self.started, "finished": time.time(),
                    "results_dir": str(self.results_dir), "tests": self.tests, "totals": totals}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(document, indent=2) + "\n")
