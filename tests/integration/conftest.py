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

    def assert_mptcp_skips_and_the_rest_passes(self):
        """The default kernel lacks the NVMe mptcp transport: those cases SKIP naming it."""
        assert self.code == ktap.EXIT_PASS, self.stdout + self.stderr
        for result in self.results:
            if " over mptcp" in result.description:
                assert result.directive == "SKIP", result
                assert "NVMe transport mptcp: nvmet rejects addr_trtype=mptcp" in result.reason
            else:
                assert result.ok and result.directive is None, result


@pytest.fixture
def mptcp_nvme(tmp_path):
    """Run ``mptcp-nvme COMMAND`` (the real CLI: vng, qemu, rootfs) and parse its KTAP."""
    def run(command, *args, timeout=1200):
        results_dir = tmp_path / "results"
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "mptcp_nvme.host.cli", command, "--results-dir", str(results_dir),
             *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO)
        return Run(result, results_dir, time.monotonic() - started)
    return run


def qemu_processes(name_fragment):
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "qemu-system" in cmdline and name_fragment in cmdline:
            found.append(proc)
    return found
