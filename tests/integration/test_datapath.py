"""VM integration: the data-path selftests and the script scenario on the default kernel
(which lacks the NVMe mptcp transport: those cases must SKIP and say so)."""

import re

import pytest

from mptcp_nvme import ktap

from .conftest import SCRIPT_RUNTIME

# Fragments of test_datapath.py's descriptions.
DATAPATH = ("discover the subsystem", "connect one controller per path",
            "iopolicy and read it back", "fio randread then randwrite", "crc32c-verified writes",
            "dm-multipath", "an MPTCP stream joins")

pytestmark = pytest.mark.vm


def test_datapath_selftests(stock_suite):
    run = stock_suite           # test_datapath.py among the others: every case passes or
    run.assert_mptcp_skips_and_the_rest_passes(    # SKIPs naming the transport
        [r for r in run.results if any(d in r.description for d in DATAPATH)])
    described = [r.description for r in run.results]
    for expected in ("discover the subsystem over tcp on every path [tcp-4path-loss0]",
                     "fio randread then randwrite over tcp [tcp-1path-numa-loss0]",
                     "fio randread then randwrite over tcp [tcp-4path-round-robin-loss0]",
                     "an MPTCP stream joins a subflow per path and aggregates them [4path-loss0]"):
        assert f"mptcp_nvme: {expected}" in described
    spread = re.search(r"# READ .* bytes per path: (path1=\d+% .*path4=\d+%)\n"
                       r"ok \d+ - mptcp_nvme: fio randread then randwrite over tcp "
                       r"\[tcp-4path-round-robin", run.stdout)
    assert spread, "no per-path byte diagnostic for tcp 4-path round-robin"
    assert all(not any(left.values()) for left in run.all_leftovers().values()), run.all_leftovers()


def test_script_scenario_prints_the_scripts_ktap(mptcp_nvme):
    run = mptcp_nvme("script", "tcp", "4", "round-robin", "0", "--runtime", str(SCRIPT_RUNTIME))
    assert run.code == ktap.EXIT_PASS, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[:2] == ["TAP version 13", "1..1"]
    assert re.search(r"^# READ: bw=[\d.]+MiB/s WRITE: bw=[\d.]+MiB/s$", run.stdout, re.M)
    assert re.fullmatch(r"ok 1 - mptcp_nvme: nvme over tcp test # time=\d+ms", lines[-2]), lines[-2]
    assert lines[-1] == "# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0"


def test_script_scenario_skips_mptcp_without_the_transport(mptcp_nvme):
    run = mptcp_nvme("script")
    assert run.code == ktap.EXIT_SKIP, run.stdout + run.stderr
    assert run.results[0].directive == "SKIP"
    assert run.results[0].description == "mptcp_nvme: nvme over mptcp test"
