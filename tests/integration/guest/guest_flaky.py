"""Guest-side case for tests/integration: fails on its first run, passes on the retry (a fresh VM
that shares the results folder, where the first run leaves a mark)."""

from pathlib import Path

MARK = Path("/mnt/results/guest_flaky.failed-once")


def test_fails_once():
    """fails on the first VM, passes on the next"""
    if not MARK.exists():
        MARK.write_text("failed once\n")
        raise AssertionError("first attempt fails on purpose")
