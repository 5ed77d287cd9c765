"""Guest-side case for tests/integration: crash the kernel on purpose."""

from pathlib import Path


def test_kernel_panics():
    """sysrq-c crashes the guest kernel"""
    Path("/proc/sys/kernel/sysrq").write_text("1")
    Path("/proc/sysrq-trigger").write_text("c")
