"""The guest side: what runs next to the kernel under test (in the VM, or natively as
root). Nothing here imports mptcp_nvme.host. Selftests import their API from here:

    from mptcp_nvme.guest import DIAG, require
"""

from mptcp_nvme.channel import DIAG, results_dir
from mptcp_nvme.guest.checks.gates import enable_selftest_checks, require

__all__ = ["DIAG", "enable_selftest_checks", "require", "results_dir"]
