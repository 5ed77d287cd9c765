"""Guest-side cases for tests/vm: real kernel crash reports provoked with lkdtm.

Each test writes one crash type into /sys/kernel/debug/provoke-crash/DIRECT (see
Documentation/fault-injection/provoke-crashes.rst) from the test process itself, so the
report names python3 as its task. WARNING returns; BUG and EXCEPTION oops and kill the
writing process, i.e. this test and the guest agent with it: the host reports the guest
dying, with the crash report from the console. A kernel without CONFIG_LKDTM (Debian's)
or without debugfs skips.
"""

import os
import subprocess
from pathlib import Path

import pytest

DEBUGFS = Path("/sys/kernel/debug")
DIRECT = DEBUGFS / "provoke-crash/DIRECT"


def provoke(crashtype):
    """Load lkdtm (mounting debugfs when needed) and trigger ``crashtype``."""
    if not (DEBUGFS / "provoke-crash").is_dir():
        if not os.path.ismount(DEBUGFS):
            subprocess.run(["mount", "-t", "debugfs", "debugfs", str(DEBUGFS)], check=False)
        subprocess.run(["modprobe", "lkdtm"], check=False, capture_output=True)
    if not DIRECT.exists():
        pytest.skip(f"{DIRECT} absent: kernel without CONFIG_LKDTM (or debugfs)")
    fd = os.open(DIRECT, os.O_WRONLY)
    try:
        os.write(fd, crashtype.encode())    # lkdtm acts on this one write(2)
    finally:
        os.close(fd)


def test_lkdtm_warning():
    """lkdtm WARNING logs a kernel WARNING and returns"""
    provoke("WARNING")


def test_lkdtm_bug():
    """lkdtm BUG oopses the kernel and kills the writing test"""
    provoke("BUG")


def test_lkdtm_exception():
    """lkdtm EXCEPTION oopses on a NULL pointer write and kills the writing test"""
    provoke("EXCEPTION")
