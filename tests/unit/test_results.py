"""results.json, from pytest's own reports (the reporter consumes, it never drives)."""

import json

from _pytest.reports import TestReport

from mptcp_nvme import channel as plugin
from mptcp_nvme.host.results import reporters
from mptcp_nvme.host.results.reporters import ResultsJson


def reports(nodeid, call_outcome="passed", longrepr=None, props=(), duration=0.5):
    common = dict(nodeid=nodeid, location=("x.py", 1, nodeid), keywords={}, sections=[])
    return [TestReport(outcome="passed", longrepr=None, when="setup", duration=0,
                       user_properties=[(plugin.DESCRIPTION, f"does {nodeid}")], **common),
            TestReport(outcome=call_outcome, longrepr=longrepr, when="call", duration=duration,
                       user_properties=list(props), **common),
            TestReport(outcome="passed", longrepr=None, when="teardown", duration=0,
                       user_properties=[], **common)]


def test_every_test_with_result_time_reason_crashes_artifacts_and_flaky(tmp_path):
    out = ResultsJson(tmp_path / "results.json", tmp_path)
    artifact = tmp_path / "vm-main/artifacts/t/crash-1-panic.txt"
    runs = [reports("a"),
            reports("b", "failed", "boom", [(plugin.CRASH, "panic: Kernel panic (fingerprint f1)"),
                                            (plugin.ARTIFACT, str(artifact))]),
            reports("c", "skipped", ("x.py", 1, "Skipped: missing: tool fio not installed")),
            reports("d", props=[(plugin.DIAG, "flaky: passed on attempt 2 of 2"),
                                (plugin.FLAKY, 1)])]
    for run in runs:
        for report in run:
            out.pytest_runtest_logreport(report)
    out.pytest_sessionfinish(None)
    document = json.loads((tmp_path / "results.json").read_text())
    tests = {t["nodeid"]: t for t in document["tests"]}
    assert list(tests) == ["a", "b", "c", "d"]
    assert tests["a"]["result"] == "pass" and tests["a"]["time_ms"] == 500
    assert tests["a"]["description"] == "does a"
    assert tests["b"]["result"] == "fail"
    assert tests["b"]["crashes"] == ["panic: Kernel panic (fingerprint f1)"]
    assert tests["b"]["artifacts"] == ["vm-main/artifacts/t/crash-1-panic.txt"]
    assert tests["c"]["result"] == "skip" and tests["c"]["reason"] == "missing: tool fio not installed"
    assert tests["d"]["flaky"] and not tests["a"]["flaky"]
    assert document["totals"]["pass"] == 2 and document["totals"]["fail"] == 1


def test_failure_window_keeps_head_and_tail():
    lines = [f"line {i}" for i in range(200)]
    window = reporters.failure_window(lines)
    assert window[0] == "line 0" and window[-1] == "line 199"
    assert len(window) == reporters.FAILURE_LINES + 1 and "lines in junit.xml" in window[40]
    assert reporters.failure_window(lines[:10]) == lines[:10]
