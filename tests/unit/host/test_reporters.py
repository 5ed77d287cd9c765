"""results.json, from pytest's own reports (the reporter consumes, it never drives)."""

import json

import pytest

from _pytest.reports import TestReport

from mptcp_nvme import channel as plugin
from mptcp_nvme.host.results import outcome
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
    window = outcome.failure_window(lines)
    assert window[0] == "line 0" and window[-1] == "line 199"
    assert len(window) == outcome.FAILURE_LINES + 1 and "lines in junit.xml" in window[40]
    assert outcome.failure_window(lines[:10]) == lines[:10]


RENDERED = '''
import pytest

def test_passes(record_property):
    record_property("ktap_diag", "a diagnostic line")

def test_fails():
    assert 1 + 1 == 3, "arithmetic broke"

def test_skips():
    pytest.skip("missing: tool fio not installed")

@pytest.mark.xfail(reason="known")
def test_xfails():
    assert False

@pytest.mark.xfail(reason="known", strict=False)
def test_xpasses():
    pass

@pytest.fixture
def broken():
    raise RuntimeError("setup broke")

def test_setup_error(broken):
    pass

def test_overran(record_property):
    record_property("ktap_directive", "TIMEOUT")
    raise AssertionError("the VM overran --test-timeout")

def test_kselftest_like(record_property):
    record_property("ktap_subtests", "TAP version 13\\n1..2\\nok 1 inner one\\nnot ok 2 inner two\\n")
'''


def test_every_renderer_says_what_the_run_printed(tmp_path):
    """One outcome, every renderer: KTAP on stdout, results.json, the KTAP re-rendered from
    results.json (merge, series), KCIDB and JUnit agree test by test."""
    import io
    import sys
    import xml.etree.ElementTree as ET

    from mptcp_nvme import ktap, proc
    from mptcp_nvme.host.results import kcidb, summary

    (tmp_path / "test_rendered.py").write_text(RENDERED)
    run = proc.cmd([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
                    "-p", "no:mptcp_nvme_checks", "--rootdir", tmp_path, "--ktap", tmp_path / "out.ktap",
                    "--results-dir", tmp_path / "results", "--junitxml", tmp_path / "junit.xml",
                    tmp_path / "test_rendered.py"], fail=False, cwd=tmp_path)
    printed = (tmp_path / "out.ktap").read_text()
    assert run.ret == 1, run.stdout
    document = json.loads((tmp_path / "results/results.json").read_text())
    tests = {t["nodeid"].split("::")[1]: t for t in document["tests"]}
    assert {name: (t["result"], t["reason"]) for name, t in tests.items()} == {
        "test_passes": ("pass", None), "test_fails": ("fail", None),
        "test_skips": ("skip", "missing: tool fio not installed"),
        "test_xfails": ("xfail", "known"), "test_xpasses": ("xpass", None),
        "test_setup_error": ("error", "setup failed"), "test_overran": ("error", "TIMEOUT"),
        "test_kselftest_like": ("pass", None)}
    assert "arithmetic broke" in tests["test_fails"]["failure"]
    assert [s["ok"] for s in tests["test_kselftest_like"]["subtests"]] == [True, False]

    rendered = io.StringIO()
    summary.write_ktap(document, rendered)
    assert rendered.getvalue() == printed
    for line in ("# a diagnostic line", "  not ok 2 inner two", "# E       AssertionError: arithmetic broke"):
        assert line in printed.splitlines(), line
    _, results = ktap.parse(printed)
    assert [(r.ok, r.directive, r.reason) for r in results] == [
        (ktap.OUTCOMES[t["result"]][0], ktap.OUTCOMES[t["result"]][1], t["reason"] or "")
        for t in document["tests"]]

    statuses = {t["misc"]["nodeid"].split("::")[1]: t["status"]
                for t in kcidb.build_report([document])["tests"]}
    assert statuses["test_overran"] == "ERROR" and statuses["test_fails"] == "FAIL"
    junit = {case.get("name"): case for case in ET.parse(tmp_path / "junit.xml").iter("testcase")}
    failed = {name for name, case in junit.items() if case.find("failure") is not None
              or case.find("error") is not None}
    assert failed == {name for name, t in tests.items() if t["result"] in ("fail", "error")}


TIMED = """
import time
import pytest

@pytest.fixture
def slow_topology():
    time.sleep(0.3)
    yield
    time.sleep(0.2)

@pytest.fixture
def quick_target(slow_topology):
    return 1

def test_timed(quick_target):
    time.sleep(0.1)

def test_untimed():
    pass
"""


def test_results_json_says_where_each_tests_time_went(tmp_path):
    """pytest's setup, call and teardown, and every fixture's setup (guest/timing.py), in
    results.json and summary.md's slowest table."""
    import sys

    from mptcp_nvme import proc
    from mptcp_nvme.host.results import summary

    (tmp_path / "test_timed.py").write_text(TIMED)
    run = proc.cmd([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
                    "-p", "no:mptcp_nvme_checks", "--rootdir", tmp_path, "--ktap", tmp_path / "out.ktap",
                    "--results-dir", tmp_path / "results", tmp_path / "test_timed.py"],
                   fail=False, cwd=tmp_path)
    assert run.ret == 0, run.stdout
    document = json.loads((tmp_path / "results/results.json").read_text())
    timed, untimed = document["tests"]
    phases, fixtures = timed["phases_ms"], timed["fixtures_ms"]
    assert set(phases) == {"setup", "call", "teardown"}
    assert 300 <= phases["setup"] < 1300 and 100 <= phases["call"] < 1100
    assert 200 <= phases["teardown"] < 1200
    assert timed["time_ms"] == pytest.approx(sum(phases.values()), abs=3)
    assert 300 <= fixtures["slow_topology"] < 1300 and fixtures["quick_target"] < 100
    assert set(untimed["phases_ms"]) == {"setup", "call", "teardown"}
    table = summary.slowest(document["tests"])
    assert table[1].startswith("Slowest 2 of 2 tests (")
    assert table[5].startswith("| `test_timed.py::test_timed` | 0.")
    assert "slow_topology 0.3 s" in table[5] or "slow_topology 0.4 s" in table[5], table[5]
