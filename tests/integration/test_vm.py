"""VM integration: boot the default kernel in the cached rootfs and run real selftests."""

import json
import re

import pytest

from mptcp_nvme import ktap

from .conftest import GUEST_CASES, REPO, qemu_processes, run_cli

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def one_vm(tmp_path_factory):
    """One VM (-n 1) running a real selftest beside the guest cases of every kind (a pass,
    a failure, a SKIP, a module the guest refuses to collect), KTAP version 1: what the
    tests below read from one boot instead of three."""
    return run_cli(tmp_path_factory.mktemp("one-vm") / "results", "run", "-n", "1",
                   "--ktap-version", "1", REPO / "selftests/test_modules.py",
                   GUEST_CASES / "guest_results.py", GUEST_CASES / "guest_broken.py")


def test_selftests_load_nvme_modules_in_guest(one_vm):
    run = one_vm
    lines = run.stdout.splitlines()
    assert lines[:2] == ["KTAP version 1", "1..5"], run.stdout + run.stderr
    assert any(l.startswith("# kernel ") and "nvmet trtypes tcp" in l for l in lines), run.stdout
    assert any(l.startswith("# vm main: rootfs ") for l in lines), run.stdout
    result = run.result("nvmet, nvmet-tcp and nvme-tcp load")
    assert result.ok and result.directive is None and result.time_ms is not None
    assert lines[-1] == "# Totals: pass:2 fail:2 xfail:0 xpass:0 skip:1 error:0", lines[-1]
    assert (run.results_dir / "junit.xml").is_file()
    assert (run.results_dir / "vm-main/dmesg.txt").read_text().count("nvmet") > 0


def test_guest_results_come_back_one_per_test(one_vm):
    run = one_vm
    assert run.code == ktap.EXIT_FAIL, run.stdout + run.stderr
    assert not run.result("collected on the host only").ok
    assert "# E   ImportError: this module refuses to be collected in the guest" in run.stdout
    assert run.result("the guest runs the kernel under test").ok
    failed = run.result("a failing assertion travels back")
    assert not failed.ok
    assert "AssertionError: arithmetic is broken in the guest" in run.stdout
    skipped = run.result("requirements are checked")
    assert skipped.directive == "SKIP"
    assert "tool no-such-tool not installed" in skipped.reason
    assert "CONFIG_NO_SUCH_OPTION not set" in skipped.reason
    artifacts = run.results_dir / "vm-main/artifacts"
    assert any(p.name == "call.txt" for p in artifacts.rglob("*")), "no failure artifact"


def panic_fingerprint(mptcp_nvme):
    run = mptcp_nvme("run", "-n", "1", GUEST_CASES / "guest_panic.py", "--boot-timeout", "300")
    assert run.code == ktap.EXIT_FAIL, run.stdout + run.stderr
    result = run.result("sysrq-c crashes the guest kernel")
    assert not result.ok
    assert "# panic: Kernel panic - not syncing: sysrq triggered crash" in run.stdout, run.stdout
    assert re.search(r"^#   at\b.*\bsysrq_handle_crash\b", run.stdout, re.M), run.stdout
    fingerprint = re.search(r"^#   fingerprint (\S+)$", run.stdout, re.M)
    assert fingerprint, run.stdout
    assert run.seconds < 300, f"panic took {run.seconds:.0f}s to report"
    results = json.loads((run.results_dir / "results.json").read_text())
    [test] = results["tests"]
    assert test["result"] == "fail" and any(fingerprint[1] in c for c in test["crashes"]), test
    artifacts = [run.results_dir / path for path in test["artifacts"]]
    assert any(p.name.startswith("crash-") for p in artifacts) and all(p.is_file() for p in artifacts)
    return fingerprint[1]


def test_guest_panic_is_a_failure_with_its_headline_and_fingerprint(mptcp_nvme):
    """The kernel's own panic line and a fingerprint, the same in two runs."""
    assert panic_fingerprint(mptcp_nvme) == panic_fingerprint(mptcp_nvme)


def test_timeout_reaps_every_qemu_process(mptcp_nvme):
    run = mptcp_nvme("run", "-n", "1", GUEST_CASES / "guest_hang.py", "--test-timeout", "15")
    assert run.code == ktap.EXIT_FAIL, run.stdout + run.stderr
    result = run.result("reads a pipe nobody writes to")
    assert not result.ok and result.directive == "ERROR"
    assert result.reason.startswith("TIMEOUT")
    assert "timed out after 15s waiting for the result of" in run.stdout
    assert "sysrq w/l before the guest was stopped:" in run.stdout, run.stdout
    assert re.search(r"sysrq: Show Blocked State", run.stdout), run.stdout
    assert not qemu_processes("mptcp-nvme-"), "qemu left behind after a timeout"


def test_retry_failed_reports_a_flaky_pass(mptcp_nvme):
    run = mptcp_nvme("run", "-n", "1", GUEST_CASES / "guest_flaky.py", "--retry-failed", "1")
    assert run.code == ktap.EXIT_PASS, run.stdout + run.stderr
    assert run.result("fails on the first VM, passes on the next").ok
    assert re.search(r"^# flaky: passed on attempt 2 of 2; failed before: .*first attempt "
                     r"fails on purpose", run.stdout, re.M), run.stdout
    [test] = json.loads((run.results_dir / "results.json").read_text())["tests"]
    assert test["flaky"] and test["result"] == "pass", test
    assert len(list((run.results_dir / "vm-main").glob("console-*.log"))) == 2


def test_a_known_issue_turns_its_failure_into_xfail_and_an_always_one_that_passed_into_xpass(
        mptcp_nvme, tmp_path):
    known = tmp_path / "known.toml"
    known.write_text(
        '[[issue]]\nid = "arith"\ntests = ["*guest_results.py::test_fails_with_a_message"]\n'
        'match = "arithmetic is broken"\nreason = "the guest cannot add"\n\n'
        '[[issue]]\nid = "kernel"\ntests = ["*guest_results.py::test_reports_guest_kernel"]\n'
        'match = "never"\nreason = "always fails"\nalways = true\n')
    run = mptcp_nvme("run", "-n", "1", "--known-issues", known, GUEST_CASES / "guest_results.py")
    assert run.code == ktap.EXIT_FAIL, run.stdout + run.stderr       # the XPASS fails the run
    failed = run.result("a failing assertion travels back")
    assert failed.ok and failed.directive == "XFAIL", run.stdout
    assert failed.reason == "known issue arith: the guest cannot add"
    assert "# known issue arith: " in run.stdout and "arithmetic is broken" in run.stdout
    assert not run.result("the guest runs the kernel under test").ok
    assert "# known issue kernel did not happen on " in run.stdout
    results = json.loads((run.results_dir / "results.json").read_text())
    assert results["totals"]["xfail"] == 1 and results["totals"]["xpass"] == 1, results["totals"]


def test_results_json_lists_every_test(one_vm):
    run = one_vm
    results = json.loads((run.results_dir / "results.json").read_text())
    assert [t["description"] for t in results["tests"]] == [r.description.removeprefix("mptcp_nvme: ")
                                                            for r in run.results]
    assert [t["result"] for t in results["tests"]] == [
        "pass" if r.ok and not r.directive else r.directive.lower() if r.directive else "fail"
        for r in run.results]
    skipped = [t for t in results["tests"] if t["result"] == "skip"]
    assert skipped and "tool no-such-tool not installed" in skipped[0]["reason"]
    # where the time went, from the guest: pytest's phases (each fixture's setup: the
    # suite's tests, test_mptcp_kernel.py)
    assert all(set(t["phases_ms"]) == ({"setup", "teardown"} if t["result"] == "skip" else
                                       {"setup", "call", "teardown"})
               for t in results["tests"] if "guest_broken" not in t["nodeid"]), results["tests"]
    assert "| test | time | setup | call | teardown | slowest fixtures |" in \
        (run.results_dir / "summary.md").read_text()


def test_two_vms_side_by_side(mptcp_nvme):
    run = mptcp_nvme("run", "-n", "2", GUEST_CASES / "guest_results.py",
                     REPO / "selftests/test_modules.py")
    assert run.planned == 4 and len(run.results) == 4, run.stdout + run.stderr
    assert [r.number for r in run.results] == [1, 2, 3, 4]
    assert sorted(p.name for p in run.results_dir.glob("vm-gw*")) == ["vm-gw0", "vm-gw1"]
    assert run.stdout.count("# vm gw") == 2
    assert run.result("nvmet, nvmet-tcp and nvme-tcp load").ok
    assert not run.result("a failing assertion travels back").ok


def test_two_runs_at_once_on_a_cold_cache_both_pass(tmp_path):
    """Two mptcp-nvme runs started together on an empty cache: one builds the rootfs and
    its image while the other waits on the cache lock; neither writes what the other
    boots from."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, MPTCP_NVME_CACHE=str(tmp_path / "cache"))
    runs = [subprocess.Popen([sys.executable, "-m", "mptcp_nvme.host.cli", "run", "-n", "1",
                              "--results-dir", str(tmp_path / f"results-{i}"),
                              str(REPO / "selftests/test_modules.py")],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for i in (1, 2)]
    outputs = [run.communicate(timeout=1200) for run in runs]
    for run, (stdout, stderr) in zip(runs, outputs):
        assert run.returncode == ktap.EXIT_PASS, stdout + stderr
        assert "ok 1 - mptcp_nvme: nvmet, nvmet-tcp and nvme-tcp load" in stdout
    assert sum("rootfs: building" in stderr for _, stderr in outputs) == 1, outputs
