"""Guest-side cases for tests/integration: real kernel crash reports provoked with lkdtm.

Each test writes one crash type into /sys/kernel/debug/provoke-crash/DIRECT (see the
kernel's Documentation/fault-injection/provoke-crashes.rst); the reports name python3 as
their task. WARNING returns. BUG and EXCEPTION oops, and an oops kills the writing
thread only: written from the test's own thread it would leave the guest agent alive
but stuck until --test-timeout, so they are written by a child python3, whose death
the test checks; the kernel log check then fails the test with the crash report. Boot
with --append oops=panic and they panic the guest instead ("Fatal exception"). A
kernel without CONFIG_LKDTM (Debian's) or without debugfs skips.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

DEBUGFS = Path("/sys/kernel/debug")
DIRECT = DEBUGFS / "provoke-crash/DIRECT"
WRITE = "import os, sys; os.write(os.open(sys.argv[1], os.O_WRONLY), sys.argv[2].encode())"


def provoke(crashtype, child=False):
    """Load lkdtm (mounting debugfs when needed) and trigger ``crashtype``; with
    ``child``, from a child python3 and return its exit status (-N: killed by signal N)."""
    if not DIRECT.exists():
        if not os.path.ismount(DEBUGFS):
            subprocess.run(["mount", "-t", "debugfs", "debugfs", str(DEBUGFS)], check=False)
        subprocess.run(["modprobe", "lkdtm"], check=False, capture_output=True)
    if not DIRECT.exists():
        pytest.skip(f"{DIRECT} absent: kernel without CONFIG_LKDTM (or debugfs)")
    if child:
        return subprocess.run([sys.executable, "-c", WRITE, DIRECT, crashtype]).returncode
    fd = os.open(DIRECT, os.O_WRONLY)
    try:
        os.write(fd, crashtype.encode())    # lkdtm acts on this one write(2)
    finally:
        os.close(fd)
    return 0


def test_lkdtm_warning():
    """lkdtm WARNING logs a kernel WARNING and returns"""
    provoke("WARNING")


def test_lkdtm_bug():
    """lkdtm BUG oopses the kernel and kills the writing process"""
    status = provoke("BUG", child=True)
    assert status < 0, f"the writer of BUG exited with {status}, not killed by the oops"


def test_lkdtm_exception():
    """lkdtm EXCEPTION oopses on a NULL pointer write and kills the writing process"""
    status = provoke("EXCEPTION", child=True)
    assert status < 0, f"the writer of EXCEPTION exited with {status}, not killed by the oops"
