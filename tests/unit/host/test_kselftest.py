"""The tree's own kselftests: run_kselftest.sh's output parsed (captured runs in the
guest under tests/data/kselftest/), items run through pytest with KTAP, JUnit and
results.json, and the host's checks of a selection before any VM boots."""

import io
import json
import sys

import pytest

from mptcp_nvme import ktap, proc
from mptcp_nvme.errors import SetupError, UsageError
from mptcp_nvme.guest import kselftest
from mptcp_nvme.host.results import summary
from mptcp_nvme.host import kselftest as host
from mptcp_nvme.host.vm import guest_session as session
from mptcp_nvme.host.vm.pytest_run import share_installs
from tests import REPO

DATA = REPO / "tests/data/kselftest"
PM_NETLINK = "net/mptcp:pm_netlink.sh"
CLOSE_RANGE = "core:close_range_test"


def captured(name):
    return (DATA / name).read_text()


def test_pm_netlink_passes_with_its_own_ktap_nested():
    """net/mptcp:pm_netlink.sh on the stand-in test kernel, captured in the guest."""
    result = kselftest.parse_runner_output(captured("pm_netlink-pass.runner.txt"), PM_NETLINK,
                                           captured("pm_netlink-pass.log"))
    assert result.outcome == "pass"
    nested = kselftest.nested_ktap(result.output).splitlines()
    assert nested[0] == "# 01 defaults addr list                                [ OK ]"
    assert nested[21:23] == ["TAP version 13", "1..21"]
    planned, results = ktap.parse("\n".join(nested))
    assert planned == 21 and all(r.ok for r in results) and len(results) == 21
    assert results[7].description == "pm_netlink: id limit" and results[7].time_ms > 10000


def test_a_test_that_overran_is_not_ok_with_its_output():
    """--kselftest-timeout 20 on TCG: pm_netlink.sh's 'id limit' step runs ~50 s."""
    result = kselftest.parse_runner_output(captured("pm_netlink-timeout.runner.txt"), PM_NETLINK,
                                           captured("pm_netlink-timeout.log"))
    assert result.outcome == "fail" and result.timed_out
    assert result.reason == "TIMEOUT 20 seconds"
    assert result.output[0] == "01 defaults addr list                                [ OK ]"
    assert result.output[-1] == "Terminated" and len(result.output) == 8   # the note left out
    text = kselftest.failure_text(result)
    assert text.startswith("run_kselftest.sh: not ok 1 selftests: net/mptcp: pm_netlink.sh "
                           "# TIMEOUT 20 seconds\noutput:\n")
    assert text.endswith(f"{result.output[-2]}\nTerminated") and "07 id addr increment" in result.output[-2]


def test_nested_ktap_of_a_harness_test_keeps_its_results():
    result = kselftest.parse_runner_output(captured("core-close_range.runner.txt"), CLOSE_RANGE,
                                           captured("core-close_range.log"))
    assert result.outcome == "pass" and result.reason == ""
    nested = kselftest.nested_ktap(result.output)
    assert nested.splitlines()[:3] == ["TAP version 13", "1..9",
                                       "# Starting 9 tests from 1 test cases."]
    planned, results = ktap.parse(nested)
    assert planned == 9 and [r.ok for r in results] == [True] * 9
    assert results[-1].description == "global.fcntl_created"


def test_output_inline_on_the_runners_stdout_is_the_tests_too():
    """Without -p (a plain run_kselftest.sh) the runner prints the output inline."""
    result = kselftest.parse_runner_output(captured("pm_netlink-bad-option.inline.txt"), PM_NETLINK)
    assert result.outcome == "fail" and result.reason == "exit=1" and not result.timed_out
    assert result.output == ("./pm_netlink.sh: illegal option -- x",
                             "Usage: ./pm_netlink.sh [ -i ] [ -h ]",
                             "\t-i: use 'ip mptcp' instead of 'pm_nl_ctl'", "\t-h: help")
    assert kselftest.nested_ktap(result.output).splitlines()[0] == \
        "# ./pm_netlink.sh: illegal option -- x"


def test_no_result_line_is_a_failure_with_what_was_printed():
    result = kselftest.parse_runner_output("TAP version 13\n1..0\n", PM_NETLINK)
    assert result.outcome == "fail" and "printed no result for net/mptcp:pm_netlink.sh" in result.reason
    assert result.output == ("TAP version 13", "1..0")


def test_a_skip_gives_the_tests_own_words():
    """fpu:run_test_fpu.sh on a kernel without CONFIG_TEST_FPU, captured in the guest."""
    result = kselftest.parse_runner_output(captured("fpu-skip.runner.txt"), "fpu:run_test_fpu.sh",
                                           captured("fpu-skip.log"))
    assert result.outcome == "skip"
    assert result.reason == ("./run_test_fpu.sh: You must have the following enabled in your "
                             "kernel: CONFIG_TEST_FPU=m")


@pytest.mark.parametrize("line, outcome, reason", [
    ("ok 1 selftests: fpu: run_test_fpu.sh # SKIP", "skip",
     "./run_test_fpu.sh: You must have the following enabled in your kernel: CONFIG_TEST_FPU=m"),
    ("ok 1 selftests: fpu: run_test_fpu.sh # XFAIL", "xfail", ""),
    ("ok 1 selftests: fpu: run_test_fpu.sh", "pass", ""),
])
def test_runner_directives(line, outcome, reason):
    text = ("TAP version 13\n1..1\n# selftests: fpu: run_test_fpu.sh\n"
            "# ./run_test_fpu.sh: You must have the following enabled in your kernel:\n"
            f"# CONFIG_TEST_FPU=m\n{line}\n")
    result = kselftest.parse_runner_output(text, "fpu:run_test_fpu.sh")
    assert (result.outcome, result.reason) == (outcome, reason)


def test_skip_reason_prefers_the_line_that_says_skip():
    assert kselftest.skip_reason(["INFO: x", "[SKIP] mptcp is not enabled", "bye"]) == \
        "[SKIP] mptcp is not enabled"
    assert kselftest.skip_reason([]) == "exit 4 (KSFT_SKIP)"


@pytest.mark.parametrize("text, seconds", [("timeout=1800\n", 1800), ("# c\n", 45), ("", 45)])
def test_settings_timeout(text, seconds):
    assert kselftest.settings_timeout(text) == seconds


FAKE_RUNNER = """#!/bin/sh
# run_kselftest.sh -t COLLECTION:TEST -p DIR [-o S]: replays a captured run
entry=$2; dir=$4; collection=${entry%:*}; test=${entry##*:}
[ -f "$collection/$test.log" ] && cp "$collection/$test.log" "$dir/$test"
cat "$collection/$test.runner"
"""


def fake_install(folder):
    """An installed kselftest tree whose runner replays the captured runs."""
    for entry, name, log in ((CLOSE_RANGE, "core-close_range", True),
                             (PM_NETLINK, "pm_netlink-timeout", True),
                             ("net/mptcp:diag.sh", "pm_netlink-bad-option.inline", False)):
        collection, _, test = entry.partition(":")
        (folder / collection).mkdir(parents=True, exist_ok=True)
        runner = captured(f"{name}.txt" if not log else f"{name}.runner.txt")
        (folder / collection / f"{test}.runner").write_text(
            runner.replace("net/mptcp: pm_netlink.sh", f"{collection}: {test}"))
        if log:
            (folder / collection / f"{test}.log").write_text(captured(f"{name}.log"))
    (folder / "net/mptcp/settings").write_text("timeout=1800\n")
    (folder / kselftest.RUNNER).write_text(FAKE_RUNNER)
    (folder / kselftest.RUNNER).chmod(0o755)
    (folder / kselftest.LIST_NAME).write_text(f"{CLOSE_RANGE}\n{PM_NETLINK}\nnet/mptcp:diag.sh\n")
    return folder / kselftest.LIST_NAME


def test_kselftests_are_items_with_nested_ktap_junit_and_results_json(tmp_path):
    listed = fake_install(tmp_path / "kselftest")
    results = tmp_path / "results"
    run = proc.cmd([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
                    "-p", "no:mptcp_nvme_checks", "--rootdir", tmp_path,
                    "--results-dir", results, "--ktap", tmp_path / "out.ktap",
                    "--junitxml", tmp_path / "junit.xml", listed], fail=False, cwd=tmp_path)
    text = (tmp_path / "out.ktap").read_text()
    lines = text.splitlines()
    assert "  TAP version 13" in lines and "  ok 9 global.fcntl_created" in lines
    result = next(i for i, l in enumerate(lines) if l.startswith("ok 1 - "))
    assert lines.index("  ok 9 global.fcntl_created") == result - 3    # then PASSED, Totals
    planned, top = ktap.parse(text)                    # nested lines are not top-level results
    assert planned == 3, run.stdout
    assert [(r.ok, r.description, r.directive) for r in top] == [
        (True, "mptcp_nvme: selftests: core: close_range_test", None),
        (False, "mptcp_nvme: selftests: net/mptcp: pm_netlink.sh", "ERROR"),
        (False, "mptcp_nvme: selftests: net/mptcp: diag.sh", None)]
    assert top[1].reason == "TIMEOUT"
    assert "  # Terminated" in lines and any(l.startswith("  # 07 id addr increment") for l in lines)
    assert "  # ./pm_netlink.sh: illegal option -- x" in lines
    document = json.loads((results / "results.json").read_text())
    tests = {t["nodeid"]: t for t in document["tests"]}
    assert list(tests) == [f"kselftest::{CLOSE_RANGE}", f"kselftest::{PM_NETLINK}",
                           "kselftest::net/mptcp:diag.sh"]
    close_range = tests[f"kselftest::{CLOSE_RANGE}"]
    assert close_range["result"] == "pass" and len(close_range["subtests"]) == 9
    assert close_range["subtests"][0]["description"] == "global.core_close_range"
    timed_out = tests[f"kselftest::{PM_NETLINK}"]
    assert (timed_out["result"], timed_out["reason"]) == ("error", "TIMEOUT")   # as KTAP says
    rendered = io.StringIO()                     # merge and series re-render results.json
    summary.write_ktap(document, rendered)
    assert rendered.getvalue() == text
    junit = (tmp_path / "junit.xml").read_text()
    assert 'classname="kselftest" name="core:close_range_test"' in junit
    assert 'property name="ktap_subtests"' in junit
    assert "run_kselftest.sh: not ok 1 selftests: net/mptcp: pm_netlink.sh # TIMEOUT 20 seconds" in junit
    logs = results / "artifacts/kselftest_net_mptcp_pm_netlink.sh"
    assert (logs / "pm_netlink.sh").read_text() == captured("pm_netlink-timeout.log")
    assert (logs / kselftest.RUNNER_LOG).is_file()


def test_a_kselftest_waits_for_its_collections_timeout(tmp_path):
    listed = fake_install(tmp_path / "kselftest")
    run = proc.cmd([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
                    "--rootdir", tmp_path, "--collect-only", "-q", listed], cwd=tmp_path)
    assert "kselftest::net/mptcp:pm_netlink.sh" in run.stdout
    script = ("import pytest, sys\n"
              "class P:\n"
              "    def pytest_collection_modifyitems(self, items):\n"
              "        print({i.name: i.get_closest_marker('timeout').args[0] for i in items})\n"
              f"pytest.main(['-q', '--collect-only', '-p', 'no:cacheprovider', '--rootdir', "
              f"{str(tmp_path)!r}, {str(listed)!r}], plugins=[P()])\n")
    out = proc.cmd([sys.executable, "-c", script], cwd=tmp_path).stdout
    assert "'net/mptcp:pm_netlink.sh': 1860" in out and "'core:close_range_test': 105" in out


# --- the host side -----------------------------------------------------------------

def fake_tree(root, build_error=None):
    """A tree with a kselftest collection 'demo' of two tests (and its Makefile's
    emit_tests); ``build_error``: what a failing headers step prints."""
    selftests = root / "tools/testing/selftests"
    (selftests / "demo").mkdir(parents=True)
    (selftests / kselftest.RUNNER).write_text("#!/bin/sh\n")
    (root / "Makefile").write_text(
        "headers_install:\n\t@echo '" + (build_error or "ok") + "'; "
        + ("exit 1" if build_error else "true") + "\n")
    (selftests / "demo/Makefile").write_text(
        "emit_tests:\n\t@for t in a.sh b.sh; do echo \"$(COLLECTION):$$t\"; done\n")
    return root


@pytest.mark.parametrize("text, parsed", [("net/mptcp", ("net/mptcp", None)),
                                          ("net/mptcp:pm_netlink.sh", ("net/mptcp", "pm_netlink.sh")),
                                          ("/net/mptcp/", ("net/mptcp", None))])
def test_selections(text, parsed):
    assert host.parse_selection(text) == parsed


@pytest.mark.parametrize("text", ["", ":x", "../net", "net//mptcp", "net:a:b"])
def test_a_malformed_selection_is_a_usage_error(text):
    with pytest.raises(UsageError, match="expected COLLECTION"):
        host.parse_selection(text)


def test_a_selection_is_checked_against_the_tree(tmp_path):
    tree = fake_tree(tmp_path / "linux")
    assert host.resolve(tree, ["demo"]) == (tree, ["demo:a.sh", "demo:b.sh"])
    assert host.resolve(tree, ["demo:b.sh", "demo"])[1] == ["demo:b.sh", "demo:a.sh"]
    with pytest.raises(UsageError, match=r"demo:c.sh: no such test in demo \(it has a.sh, b.sh\)"):
        host.resolve(tree, ["demo:c.sh"])
    with pytest.raises(UsageError, match="nosuch: no such collection"):
        host.resolve(tree, ["nosuch"])
    with pytest.raises(UsageError, match="not a kernel tree"):
        host.resolve(tmp_path, ["demo"])
    with pytest.raises(UsageError, match="give --kernel TREE"):
        host.resolve(None, ["demo"])


def test_a_build_failure_names_its_first_error_and_the_log(tmp_path, monkeypatch):
    monkeypatch.setenv("MPTCP_NVME_CACHE", str(tmp_path / "cache"))
    tree = fake_tree(tmp_path / "linux", build_error="demo.c:3:1: error: unknown type name x")
    with pytest.raises(SetupError) as err:
        host.install(tree, ["demo:a.sh"], tmp_path / "results")
    assert str(err.value) == (f"kselftest build of demo in {tree} failed: demo.c:3:1: error: "
                              f"unknown type name x (log: {tmp_path}/results/{host.BUILD_LOG})")


def test_the_guest_runs_its_copy_of_the_install(tmp_path):
    install = tmp_path / "results/kselftest"
    (install / "net/mptcp").mkdir(parents=True)
    (install / kselftest.LIST_NAME).write_text(f"{PM_NETLINK}\n")
    out = tmp_path / "results/vm-main"
    shared = share_installs(tmp_path / "results", out, session.GuestLayout.on_rootfs())
    assert shared == {install: "/mnt/results/kselftest"}
    assert (out / "kselftest" / kselftest.LIST_NAME).is_file()
    command = session.guest_command([f"{install}/{kselftest.LIST_NAME}::{PM_NETLINK}",
                                     REPO / "selftests/test_modules.py"], (),
                                    session.GuestLayout.on_rootfs(), shared)
    assert "/mnt/results/kselftest/kselftest-list.txt /mnt/src/selftests/test_modules.py" in command
    assert share_installs(tmp_path / "none", out, session.GuestLayout.on_rootfs()) == {}
