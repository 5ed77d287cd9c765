"""VM integration on the test kernel with the NVMe mptcp transport (the CI stand-in built
by ./ci/mptcp-kernel; ./ci/test builds it and passes its tree in MPTCP_NVME_TEST_KERNEL).

Every selftest passes there with --expect-all-features, except TLS over mptcp, which SKIPs
naming the missing MPTCP kTLS support; the script's mptcp scenario shows, for every NVMe
queue, an MPTCP connection with subflows on all 4 links and no fallback."""

import json
import os
import re
from pathlib import Path

import pytest

from mptcp_nvme import ktap

from .conftest import NEWER_IOPOLICIES, REPO, SCRIPT_RUNTIME, not_link_limited

pytestmark = pytest.mark.vm

KERNEL = os.environ.get("MPTCP_NVME_TEST_KERNEL")
needs_kernel = pytest.mark.skipif(
    not KERNEL, reason="MPTCP_NVME_TEST_KERNEL is not set (./ci/test sets it to the tree "
                       "that ./ci/mptcp-kernel prints)")
TLS_OVER_MPTCP = "TLS over mptcp: nvmet rejects addr_tsas=tls1.3 on a mptcp port (EINVAL)"
BOND_FAULTS_TCP_ONLY = "bond faults: NVMe/TCP on the bond only, not mptcp"


@needs_kernel
def test_every_selftest_passes_on_the_mptcp_kernel(mptcp_nvme):
    """The whole suite over mptcp (its tcp cases run on the stock kernel), faults,
    dm-multipath, auth, digests, queues, ANA and admin included, over two VMs."""
    run = mptcp_nvme("run", "--kernel", KERNEL, "--expect-all-features", "-n", "2", "--quick",
                     "--trtype", "mptcp", "--allow-missing", "tls:mptcp",
                     *(f"--allow-missing=iopolicy:{name}" for name in NEWER_IOPOLICIES),
                     "-k", "not churn", REPO / "selftests", timeout=2400)
    assert run.code == ktap.EXIT_PASS, run.stdout + run.stderr
    mptcp = [r for r in run.results if " over mptcp" in r.description or "[mptcp-" in r.description]
    assert len(mptcp) >= 12, [r.description for r in mptcp]
    for result in run.results:
        if result.directive == "SKIP":      # TLS (no kTLS on MPTCP sockets), newer iopolicies,
            assert (TLS_OVER_MPTCP in result.reason and "MPTCP kTLS" in result.reason   # load,
                    or re.fullmatch(r"missing: iopolicy (weighted-lat|adaptive) not offered "
                                    r"by nvme_core", result.reason)
                    or result.reason.startswith(BOND_FAULTS_TCP_ONLY)     # bond faults
                    or not_link_limited(result)), result
        else:
            assert result.ok and result.directive is None, result
    assert re.search(r"^# kernel .*nvmet trtypes tcp,mptcp;", run.stdout, re.M), run.stdout[:2000]
    faults = (run.results_dir / "faults.md").read_text()
    for fault in ("link-down", "blackhole", "all-but-one-down", "endpoint", "port", "reset",
                  "delete", "keep-alive"):
        assert re.search(rf"^\| {fault} \| mptcp ×\d \| .* \| ok \|$", faults, re.M), faults
    assert len(list(run.results_dir.glob("faults/*-mptcp.png"))) == 8
    for feature in ("auth", "digest", "queue layout", "ANA", "admin commands", "ipv6", "v4map",
                    "backing loop", "backing file", "backing null_blk", "mkfs ext4", "mkfs xfs",
                    "iopolicy queue-depth", "v4map and ipv6 links mixed over mptcp"):
        assert any(feature in r.description and "mptcp" in r.description and r.ok
                   for r in run.results), feature
    assert all(not any(left.values()) for left in run.all_leftovers().values()), run.all_leftovers()
    timed = json.loads((run.results_dir / "results.json").read_text())["tests"]
    connects = [t for t in timed if "selftests/test_datapath.py::test_connect[" in t["nodeid"]]
    assert connects and all(t["fixtures_ms"].get("network") and t["phases_ms"]["setup"]
                            for t in connects), connects


@needs_kernel
def test_churn_over_mptcp_leaks_nothing_under_kmemleak(mptcp_nvme):
    """The churn cases on the test kernel booted with kmemleak=on (built in, off by
    default): back to the baseline, and kmemleak scanned and found nothing."""
    run = mptcp_nvme("run", "--kernel", KERNEL, "--append", "kmemleak=on", "--trtype", "mptcp",
                     "--expect-all-features", "-n", "2", REPO / "selftests/test_churn.py",
                     timeout=1200)
    assert run.code == ktap.EXIT_PASS, run.stdout + run.stderr
    assert len(run.results) == 2 and all(r.ok and r.directive is None for r in run.results)
    assert run.stdout.count("# kmemleak: no leaks after the cycles") == 2, run.stdout
    assert "kmemleak not checked" not in run.stdout, run.stdout


@needs_kernel
def test_expect_all_features_fails_tls_over_mptcp_unless_allowed(mptcp_nvme):
    run = mptcp_nvme("run", "--kernel", KERNEL, "--expect-all-features", "-k",
                     "tls_connect_and_fio and mptcp", REPO / "selftests/test_tls.py")
    assert run.code == ktap.EXIT_FAIL, run.stdout + run.stderr
    [result] = run.results
    assert not result.ok and TLS_OVER_MPTCP in run.stdout, run.stdout


@needs_kernel
def test_script_mptcp_1_spreads_every_queue_over_4_links(mptcp_nvme):
    run = mptcp_nvme("script", "mptcp", "1", "--kernel", KERNEL, "--expect-all-features",
                     "--runtime", str(SCRIPT_RUNTIME))
    assert run.code == ktap.EXIT_PASS, run.stdout + run.stderr
    [queues] = re.findall(r"^# (nvme\d+ -> 10\.1\.1\.1:\d+: .*)$", run.stdout, re.M)
    counts = re.search(r"(\d+)/(\d+) queue sockets, mptcp, subflows per queue ([\d/]+), "
                       r"per link path1=\d+ path2=\d+ path3=\d+ path4=\d+$", queues)
    assert counts and counts[1] == counts[2], queues
    assert re.search(r"^# MPTcpExt host: .*MPJoinSynAckRx=\d+", run.stdout, re.M), run.stdout
    assert "Fallback" not in "".join(re.findall(r"^# MPTcpExt .*$", run.stdout, re.M))
    spread = re.search(r"host->target: path1=(\d+) path2=(\d+) path3=(\d+) path4=(\d+)$",
                       run.stdout, re.M)
    sent = [int(n) for n in spread.groups()]
    assert min(sent) > sum(sent) / 16, f"writes did not spread over the links: {sent}"


@needs_kernel
def test_mptcp_kernel_tree_is_cached_and_named_last(tmp_path):
    """./ci/mptcp-kernel on a warm cache answers at once with the same tree, last line."""
    import subprocess
    import time
    started = time.monotonic()
    done = subprocess.run([str(REPO / "ci/mptcp-kernel")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.splitlines()[-1]) == Path(KERNEL)
    assert time.monotonic() - started < 60, "a warm ./ci/mptcp-kernel rebuilt something"


@needs_kernel
@pytest.mark.parametrize("case, kind, headline, function", [
    ("warning", "warning", r"WARNING: drivers/misc/lkdtm/bugs.c:\d+ at lkdtm_WARNING", "lkdtm_WARNING"),
    ("bug", "bug", r"kernel BUG at drivers/misc/lkdtm/bugs.c:\d+!", "lkdtm_BUG"),
])
def test_lkdtm_crash_is_reported_with_kind_headline_function_fingerprint(mptcp_nvme, case, kind,
                                                                         headline, function):
    """A WARNING and a BUG provoked through lkdtm (the test kernel has CONFIG_LKDTM):
    the failed test's KTAP starts with the kind, the kernel's headline, the function and
    a fingerprint; results.json carries the fingerprint."""
    from .conftest import GUEST_CASES
    run = mptcp_nvme("run", "--kernel", KERNEL, "-k", case, GUEST_CASES / "guest_lkdtm.py",
                     "--test-timeout", "120", timeout=600)
    assert run.code == ktap.EXIT_FAIL, run.stdout + run.stderr
    [result] = run.results
    assert not result.ok
    assert re.search(rf"^# {kind}: {headline}", run.stdout, re.M), run.stdout
    assert re.search(rf"^#   at {function}\b", run.stdout, re.M), run.stdout
    fingerprint = re.search(rf"^#   fingerprint ({kind}:{function}\S*)$", run.stdout, re.M)
    assert fingerprint, run.stdout
    [test] = __import__("json").loads((run.results_dir / "results.json").read_text())["tests"]
    assert any(fingerprint[1] in crash for crash in test["crashes"]), test
    assert run.seconds < 300, f"the {case} took {run.seconds:.0f}s to report"
