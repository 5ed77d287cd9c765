"""Guest-side case for tests/integration: a module that imports on the host but not in the guest."""

import os

if os.path.exists("/mnt/src"):
    raise ImportError("this module refuses to be collected in the guest")


def test_never_runs_in_the_guest():
    """collected on the host only"""
