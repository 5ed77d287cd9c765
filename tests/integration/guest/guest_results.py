"""Guest-side cases for tests/integration: one result of each kind, run in the guest."""

import platform
from pathlib import Path

import pytest


def test_reports_guest_kernel():
    """the guest runs the kernel under test"""
    print(f"guest-release={platform.release()}")
    assert Path("/proc/version").read_text().startswith("Linux version")


def test_fails_with_a_message():
    """a failing assertion travels back to the host"""
    assert 1 + 1 == 3, "arithmetic is broken in the guest"


@pytest.mark.requires("tool:no-such-tool", "kconfig:NO_SUCH_OPTION")
def test_skips_with_every_unmet_requirement():
    """requirements are checked"""
