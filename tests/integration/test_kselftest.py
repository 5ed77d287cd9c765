"""VM integration: the test kernel tree's own kselftest net/mptcp:pm_netlink.sh, built on
the host and run with kselftest's runner in the guest, reported ok in KTAP (its own
results nested under it), JUnit and results.json."""

import json
import xml.etree.ElementTree as ET

import pytest

from mptcp_nvme import ktap

from .test_mptcp_kernel import KERNEL, needs_kernel

pytestmark = pytest.mark.vm


@needs_kernel
def test_pm_netlink_is_ok_in_ktap_junit_and_results_json(mptcp_nvme):
    run = mptcp_nvme("kselftest", "--kernel", KERNEL, "net/mptcp:pm_netlink.sh", timeout=600)
    assert run.code == ktap.EXIT_PASS, run.stdout + run.stderr
    [result] = run.results
    assert result.ok and result.directive is None, run.stdout
    assert result.description == "mptcp_nvme: selftests: net/mptcp: pm_netlink.sh"
    nested = [line for line in run.stdout.splitlines() if line.startswith("  ok ")]
    assert len(nested) >= 10 and all(" - pm_netlink: " in line for line in nested), run.stdout
    assert "  TAP version 13" in run.stdout.splitlines()

    [case] = ET.parse(run.results_dir / "junit.xml").getroot().iter("testcase")
    assert (case.get("classname"), case.get("name")) == ("kselftest", "net/mptcp:pm_netlink.sh")
    assert case.find("failure") is None and case.find("skipped") is None
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert "ok 1 - pm_netlink: defaults addr list" in properties["ktap_subtests"]

    [test] = json.loads((run.results_dir / "results.json").read_text())["tests"]
    assert test["nodeid"] == "kselftest::net/mptcp:pm_netlink.sh" and test["result"] == "pass"
    assert len(test["subtests"]) == len(nested) and all(s["ok"] for s in test["subtests"])
    log = run.results_dir / "vm-main/artifacts/kselftest_net_mptcp_pm_netlink.sh/pm_netlink.sh"
    assert "defaults addr list" in log.read_text()
    assert (run.results_dir / "kselftest/net/mptcp/pm_nl_ctl").is_file()
