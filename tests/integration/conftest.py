"""Fixtures for the VM integration tests: they run the real CLI against the default kernel."""

import json
import subprocess
import sys
import time

import psutil
import pytest

from mptcp_nvme import ktap
from tests import REPO

GUEST_CASES = REPO / "tests/integration/guest"
# CI runs the suite --quick and the script scenario with 3 s fio jobs: the same checks on
# what moved, in less time; the GitHub workflow's shards run it all at full length.
SCRIPT_RUNTIME = 3


class Run:
    def __init__(self, result, results_dir, seconds):
        self.code = result.returncode
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.results_dir = results_dir
        self.seconds = seconds
        self.planned, self.results = ktap.parse(result.stdout)

    def result(self, fragment):
        return next(r for r in self.results if fragment in r.description)

    def leftovers(self, vm="vm-main"):
        return json.loads((self.results_dir / vm / "leftovers.json").read_text())

    def all_leftovers(self):
        """{vm folder: its leftovers} of every VM of the run (-n N: vm-gw0, vm-gw1, ...)."""
        return {folder.parent.name: json.loads(folder.read_text())
                for folder in sorted(self.results_dir.glob("vm-*/leftovers.json"))}

    def assert_mptcp_skips_and_the_rest_passes(self, results=None, skips=None):
        """The default kernel lacks the NVMe mptcp transport: those cases SKIP naming it;
        every other one of ``results`` (default all) passes, but for the SKIPs ``skips``
        ({description fragment: reason}) allows."""
        assert self.code == ktap.EXIT_PASS, self.stdout + self.stderr
        for result in self.results if results is None else results:
            allowed = [reason for part, reason in (skips or {}).items()
                       if part in result.description]
            if allowed:                 # whatever the transport (it may SKIP first)
                assert result.directive == "SKIP" and result.reason in allowed, result
            elif not_link_limited(result):
                continue                # a loaded machine: judge_link_limited's verdict
            elif is_mptcp_case(result):
                assert result.directive == "SKIP", result
                assert "NVMe transport mptcp: nvmet rejects addr_trtype=mptcp" in result.reason
            else:
                assert result.ok and result.directive is None, result


# judge_link_limited()'s SKIP: on a loaded machine the guest, not the links, limited a
# transfer whose shares or aggregate only link-limited traffic must meet
NOT_LINK_LIMITED = "the links did not limit the transfer, the guest did: "


def not_link_limited(result):
    return result.directive == "SKIP" and (result.reason or "").startswith(NOT_LINK_LIMITED)


def is_mptcp_case(result):
    """A case over the NVMe mptcp transport (its description or parameters say so)."""
    return " over mptcp" in result.description or "[mptcp" in result.description


def run_cli(results_dir, command, *args, timeout=1200):
    """``mptcp-nvme COMMAND`` (the real CLI: vng, qemu, rootfs) into ``results_dir``, its
    KTAP parsed."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mptcp_nvme.host.cli", command, "--results-dir", str(results_dir),
         *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    return Run(result, results_dir, time.monotonic() - started)


@pytest.fixture
def mptcp_nvme(tmp_path):
    """Run ``mptcp-nvme COMMAND`` and parse its KTAP (run_cli into a fresh folder)."""
    return lambda command, *args, timeout=1200: run_cli(tmp_path / "results", command, *args,
                                                        timeout=timeout)


# The stock kernel's share of the suite, run once (stock_suite) for the modules that
# check it: test_coverage.py (the feature cases), test_datapath.py, test_tls.py.
STOCK_FILES = ("test_datapath.py", "test_tls.py", "test_auth.py", "test_digest.py",
               "test_queues.py", "test_ana.py", "test_admin.py", "test_families.py",
               "test_mixed_family.py", "test_backing.py", "test_mkfs.py", "test_churn.py",
               "test_iopolicy.py", "test_faults.py", "test_commands.py",
               "test_target_changes.py", "test_bonding.py")
NEWER_IOPOLICIES = ("weighted-lat", "adaptive")     # not in 7.3: SKIP naming them
STOCK_FAULTS = ("link-down", "delete")              # in faults.json's (the faults') order
STOCK_LACKS = "kconfig:NVME_TARGET_DEBUGFS"           # Debian's config: nvme/060's case SKIPs


@pytest.fixture(scope="session")
def stock_suite(tmp_path_factory):
    """One run of STOCK_FILES on the stock kernel over two VMs, --quick (SCRIPT_RUNTIME's
    comment), with --expect-all-features: only the mptcp transport (its cases SKIP naming
    it), the newer iopolicies and nvmet's debugfs may be missing; two of the faults."""
    return run_cli(tmp_path_factory.mktemp("stock-suite") / "results", "run", "-n", "2",
                   "--quick", "--expect-all-features", "--allow-missing", "trtype:mptcp",
                   *(f"--allow-missing=iopolicy:{name}" for name in NEWER_IOPOLICIES),
                   f"--allow-missing={STOCK_LACKS}",
                   *(f"--fault={fault}" for fault in STOCK_FAULTS),
                   *(REPO / "selftests" / name for name in STOCK_FILES), timeout=2400)


def qemu_processes(name_fragment):
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "qemu-system" in cmdline and name_fragment in cmdline:
            found.append(proc)
    return found
