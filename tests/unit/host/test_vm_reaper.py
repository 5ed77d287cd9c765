"""VmReaper (host/vm/pytest_run.py) without a VM: a run's VMs are named after its
controller, and what is left of them when the run ends is stopped; other runs' are not."""

import os
import subprocess
import sys

import psutil

from mptcp_nvme.host.vm import pytest_run
from mptcp_nvme.poll import wait_for


def fake_qemu(name):
    """A process whose command line looks like the VM runner's qemu named ``name``."""
    proc = subprocess.Popen(["qemu-system-x86_64", "-c", "import time; time.sleep(120)",
                             "-name", name, "-m", "2G"], executable=sys.executable)
    wait_for(lambda: name in psutil.Process(proc.pid).cmdline(), f"{name}'s command line")
    return proc


def test_the_reaper_stops_its_runs_vms_and_no_others(monkeypatch):
    monkeypatch.setenv(pytest_run.RUN_ID, "an outer run's")    # restored after the test
    reaper = pytest_run.VmReaper()
    assert os.environ[pytest_run.RUN_ID] == reaper.run == str(os.getpid())
    assert pytest_run.run_id() == reaper.run           # what the workers name VMs with
    ours = [fake_qemu(f"{pytest_run.vm_prefix(reaper.run)}gw{i}") for i in (0, 1)]
    other = fake_qemu(f"{pytest_run.vm_prefix('1')}gw0")
    try:
        assert pytest_run.reap_vms(reaper.run) == 2
        for proc in ours:
            assert proc.wait(timeout=15) is not None
        assert other.poll() is None                     # another run's VM lives on
        assert pytest_run.reap_vms(reaper.run) == 0
    finally:
        for proc in [*ours, other]:
            proc.kill()
            proc.wait()
